package wgnoise

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
)

// src4 is a sender's address bytes as a device passes them: IP then port
// (big endian).
var src4 = []byte{127, 0, 0, 1, 0xca, 0x6c}

// TestCookieRoundTrip: the responder's Guard replies with a cookie, the
// initiator's Cookies takes it and stamps mac2 on its next initiation,
// which the Guard accepts from the same source only, and only while the
// cookie and the secret are younger than 120 s.
func TestCookieRoundTrip(t *testing.T) {
	a, b := newParties(t, PresharedKey{})
	now := testEpoch
	msg, _ := a.hs.CreateInitiation(42, now)
	a.cookies.Stamp(msg[:], now)
	if !bytes.Equal(msg[InitiationSize-16:], make([]byte, 16)) {
		t.Fatal("mac2 written without a cookie")
	}
	if !b.guard.CheckMAC1(msg[:]) || b.guard.CheckMAC2(msg[:], src4, now) {
		t.Fatal("mac1 refused, or mac2 accepted before any cookie")
	}
	reply, err := b.guard.CookieReply(msg[:], src4, now)
	if err != nil {
		t.Fatal(err)
	}
	if typ, ok := MessageType(reply[:]); !ok || typ != TypeCookieReply || ReceiverIndex(reply[:]) != 42 {
		t.Fatalf("cookie reply type %d ok %v receiver %d", typ, ok, ReceiverIndex(reply[:]))
	}
	if err := a.cookies.ConsumeReply(reply[:], now); err != nil {
		t.Fatalf("ConsumeReply: %v", err)
	}
	if err := a.cookies.ConsumeReply(reply[:], now); err == nil {
		t.Error("the same cookie reply consumed twice")
	}

	now = now.Add(time.Second)
	msg, _ = a.hs.CreateInitiation(43, now)
	a.cookies.Stamp(msg[:], now)
	if !b.guard.CheckMAC1(msg[:]) || !b.guard.CheckMAC2(msg[:], src4, now) {
		t.Fatal("mac1 or mac2 refused after the cookie round trip")
	}
	other := []byte{127, 0, 0, 2, 0xca, 0x6c}
	if b.guard.CheckMAC2(msg[:], other, now) {
		t.Error("mac2 accepted from another source address")
	}
	if b.guard.CheckMAC2(msg[:], []byte{127, 0, 0, 1, 0xca, 0x6d}, now) {
		t.Error("mac2 accepted from another source port")
	}
	if b.guard.CheckMAC2(msg[:], src4, testEpoch.Add(CookieLifetime)) {
		t.Error("mac2 accepted with a secret 120 s old")
	}

	late := testEpoch.Add(CookieLifetime)
	msg, _ = a.hs.CreateInitiation(44, late)
	a.cookies.Stamp(msg[:], late)
	if !bytes.Equal(msg[InitiationSize-16:], make([]byte, 16)) {
		t.Error("mac2 written with a cookie 120 s old")
	}
}

// TestCookieReplyRefused checks ConsumeReply refuses a reply to another
// message (its mac1 is the associated data), from another peer, tampered,
// and with no message sent.
func TestCookieReplyRefused(t *testing.T) {
	a, b := newParties(t, PresharedKey{})
	fresh := NewCookies(b.id.Public())
	msg, _ := a.hs.CreateInitiation(1, testEpoch)
	reply, err := b.guard.CookieReply(msg[:], src4, testEpoch)
	if err != nil {
		t.Fatal(err)
	}
	if err := fresh.ConsumeReply(reply[:], testEpoch); err == nil {
		t.Error("cookie reply taken with no message sent")
	}
	a.cookies.Stamp(msg[:], testEpoch) // mac1 differs from the one the reply was made for
	if err := a.cookies.ConsumeReply(reply[:], testEpoch); err == nil {
		t.Error("cookie reply to another mac1 accepted")
	}
	reply, _ = b.guard.CookieReply(msg[:], src4, testEpoch)
	for _, off := range []int{cookieNonce, cookieSealed, CookieReplySize - 1} {
		bad := reply
		bad[off] ^= 1
		if err := a.cookies.ConsumeReply(bad[:], testEpoch); err == nil {
			t.Errorf("cookie reply with byte %d flipped accepted", off)
		}
	}
	c := &party{id: NewIdentity(mustKey(t))}
	cReply, _ := NewGuard(c.id).CookieReply(msg[:], src4, testEpoch)
	if err := a.cookies.ConsumeReply(cReply[:], testEpoch); err == nil {
		t.Error("cookie reply from another peer's key accepted")
	}
	if err := a.cookies.ConsumeReply(reply[:], testEpoch); err != nil {
		t.Errorf("the untampered reply: %v", err)
	}
	if _, err := b.guard.CookieReply(reply[:], src4, testEpoch); err == nil {
		t.Error("CookieReply to a cookie reply")
	}
}

// TestCookieReplyToResponse checks a cookie reply to a response goes to
// the response's sender index and works the same way.
func TestCookieReplyToResponse(t *testing.T) {
	a, b := newParties(t, PresharedKey{})
	msg, _ := a.hs.CreateInitiation(1, testEpoch)
	in, _ := ConsumeInitiation(b.id, msg[:])
	if err := b.hs.AcceptInitiation(in, testEpoch); err != nil {
		t.Fatal(err)
	}
	resp, _ := b.hs.CreateResponse(77)
	b.cookies.Stamp(resp[:], testEpoch)
	reply, err := a.guard.CookieReply(resp[:], src4, testEpoch)
	if err != nil {
		t.Fatal(err)
	}
	if got := ReceiverIndex(reply[:]); got != 77 {
		t.Fatalf("reply to the response goes to %d, want 77", got)
	}
	if err := b.cookies.ConsumeReply(reply[:], testEpoch); err != nil {
		t.Fatal(err)
	}
	b.cookies.Stamp(resp[:], testEpoch)
	if !a.guard.CheckMAC2(resp[:], src4, testEpoch) {
		t.Error("response's mac2 refused")
	}
}

// TestGuardSecretRotates checks the secret is renewed after 120 s: a
// cookie of the old secret no longer makes a valid mac2.
func TestGuardSecretRotates(t *testing.T) {
	a, b := newParties(t, PresharedKey{})
	msg, _ := a.hs.CreateInitiation(1, testEpoch)
	a.cookies.Stamp(msg[:], testEpoch)
	reply, _ := b.guard.CookieReply(msg[:], src4, testEpoch)
	if err := a.cookies.ConsumeReply(reply[:], testEpoch); err != nil {
		t.Fatal(err)
	}
	first := a.cookies.cookie
	later := testEpoch.Add(CookieLifetime + time.Second)
	msg2, _ := a.hs.CreateInitiation(2, later)
	a.cookies.Stamp(msg2[:], later) // the cookie is now too old: no mac2
	next, _ := b.guard.CookieReply(msg2[:], src4, later)
	if err := a.cookies.ConsumeReply(next[:], later); err != nil {
		t.Fatal(err)
	}
	a.cookies.Stamp(msg2[:], later)
	if !b.guard.CheckMAC2(msg2[:], src4, later) {
		t.Fatal("mac2 of the new secret's cookie refused")
	}
	if binary.LittleEndian.Uint32(msg2[:]) != TypeInitiation {
		t.Fatal("Stamp changed the message type")
	}
	if a.cookies.cookie == first || !b.guard.secretAt.Equal(later) {
		t.Error("the secret did not rotate: the same cookie for the same source")
	}
}
