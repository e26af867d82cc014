package wgnoise

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

// TestHandshake runs whole handshakes both ways, with and without a PSK,
// and checks each side's keys open what the other sealed.
func TestHandshake(t *testing.T) {
	for _, withPSK := range []bool{false, true} {
		for _, reverse := range []bool{false, true} {
			t.Run(fmt.Sprintf("psk=%v/reverse=%v", withPSK, reverse), func(t *testing.T) {
				var psk PresharedKey
				if withPSK {
					psk = PresharedKey(mustKey(t))
				}
				a, b := newParties(t, psk)
				init, resp := a, b
				if reverse {
					init, resp = b, a
				}
				ki, kr := handshake(t, init, resp, testEpoch)
				if !ki.Initiator || kr.Initiator {
					t.Errorf("Initiator flags %v/%v, want true/false", ki.Initiator, kr.Initiator)
				}
				if ki.LocalIndex != 11 || ki.RemoteIndex != 22 || kr.LocalIndex != 22 || kr.RemoteIndex != 11 {
					t.Errorf("indices: initiator %d->%d, responder %d->%d", ki.LocalIndex, ki.RemoteIndex, kr.LocalIndex, kr.RemoteIndex)
				}
				if !ki.Created.Equal(testEpoch) {
					t.Errorf("Created %v, want %v", ki.Created, testEpoch)
				}
				roundTrip(t, ki, kr, []byte("from the initiator"))
				roundTrip(t, kr, ki, []byte("from the responder, a little longer"))
				if _, ok := init.hs.PendingIndex(); ok {
					t.Error("initiator still has a pending initiation after BeginSession")
				}
			})
		}
	}
}

// roundTrip seals payload with from and checks to opens it.
func roundTrip(t *testing.T, from, to *Keypair, payload []byte) {
	t.Helper()
	msg := sealed(t, from, payload)
	plain, counter, err := to.Open(msg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if !bytes.Equal(plain[:len(payload)], payload) || len(plain) != PaddedLen(len(payload)) {
		t.Fatalf("opened %q, want %q padded to %d", plain, payload, PaddedLen(len(payload)))
	}
	if !to.Accept(counter) {
		t.Fatalf("counter %d refused", counter)
	}
}

// TestHandshakePSKMismatch checks a response made with another PSK does
// not authenticate, and that the initiation stays pending for a good one.
func TestHandshakePSKMismatch(t *testing.T) {
	a, b := newParties(t, PresharedKey{1})
	b.hs.SetPresharedKey(PresharedKey{2})
	msg, err := a.hs.CreateInitiation(5, testEpoch)
	if err != nil {
		t.Fatal(err)
	}
	in, err := ConsumeInitiation(b.id, msg[:])
	if err != nil {
		t.Fatal(err)
	}
	if err := b.hs.AcceptInitiation(in, testEpoch); err != nil {
		t.Fatal(err)
	}
	resp, err := b.hs.CreateResponse(6)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.hs.ConsumeResponse(resp[:]); err == nil {
		t.Fatal("response under another PSK accepted")
	}
	if idx, ok := a.hs.PendingIndex(); !ok || idx != 5 {
		t.Fatalf("PendingIndex = %d, %v after a bad response; want 5, true", idx, ok)
	}
	if _, err := a.hs.BeginSession(testEpoch); err == nil {
		t.Fatal("BeginSession succeeded without a consumed response")
	}
}

// TestInitiationRefused checks ConsumeInitiation against tampering, the
// wrong identity, and AcceptInitiation against another peer's initiation.
func TestInitiationRefused(t *testing.T) {
	a, b := newParties(t, PresharedKey{})
	msg, err := a.hs.CreateInitiation(1, testEpoch)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int{initSender + 0, initEphemeral + 3, initStatic + 7, initTimestamp + 20, initTimestamp + 2} {
		bad := msg
		bad[off] ^= 0x40
		if in, err := ConsumeInitiation(b.id, bad[:]); err == nil && off != initSender {
			t.Errorf("initiation with byte %d flipped accepted", off)
		} else if off == initSender && (err != nil || in.Sender == 1) {
			t.Errorf("sender index is not authenticated data, want it read as sent: %v", err)
		}
	}
	if _, err := ConsumeInitiation(a.id, msg[:]); err == nil {
		t.Error("initiation decrypted by the wrong identity")
	}
	if _, err := ConsumeInitiation(b.id, msg[:InitiationSize-1]); err == nil {
		t.Error("short initiation accepted")
	}
	c := &party{id: NewIdentity(mustKey(t))}
	hs, err := NewHandshake(b.id, c.id.Public(), PresharedKey{})
	if err != nil {
		t.Fatal(err)
	}
	in, err := ConsumeInitiation(b.id, msg[:])
	if err != nil {
		t.Fatal(err)
	}
	if err := hs.AcceptInitiation(in, testEpoch); err == nil {
		t.Error("initiation from a accepted by the handshake with c")
	}
}

// TestResponseRefused checks ConsumeResponse against a wrong receiver,
// tampering and a response without a pending initiation.
func TestResponseRefused(t *testing.T) {
	a, b := newParties(t, PresharedKey{})
	if err := a.hs.ConsumeResponse(make([]byte, ResponseSize)); err == nil {
		t.Fatal("response accepted with nothing pending")
	}
	msg, _ := a.hs.CreateInitiation(7, testEpoch)
	in, err := ConsumeInitiation(b.id, msg[:])
	if err != nil {
		t.Fatal(err)
	}
	if err := b.hs.AcceptInitiation(in, testEpoch); err != nil {
		t.Fatal(err)
	}
	resp, err := b.hs.CreateResponse(8)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int{respReceiver, respEphemeral + 1, respEmpty + 4} {
		bad := resp
		bad[off] ^= 1
		if err := a.hs.ConsumeResponse(bad[:]); err == nil {
			t.Errorf("response with byte %d flipped accepted", off)
		}
	}
	if err := a.hs.ConsumeResponse(resp[:]); err != nil {
		t.Fatalf("the untampered response after bad ones: %v", err)
	}
}

// TestInitiationReplayAndFlood checks the responder refuses an initiation
// replayed, one with an older timestamp, and one within 20 ms of the last
// accepted, and accepts a newer one after that.
func TestInitiationReplayAndFlood(t *testing.T) {
	a, b := newParties(t, PresharedKey{})
	consume := func(msg [InitiationSize]byte) *Initiation {
		t.Helper()
		in, err := ConsumeInitiation(b.id, msg[:])
		if err != nil {
			t.Fatal(err)
		}
		return in
	}
	first, _ := a.hs.CreateInitiation(1, testEpoch)
	if err := b.hs.AcceptInitiation(consume(first), testEpoch); err != nil {
		t.Fatal(err)
	}
	later := testEpoch.Add(time.Second)
	if err := b.hs.AcceptInitiation(consume(first), later); err != errReplay {
		t.Errorf("replayed initiation: err %v, want %v", err, errReplay)
	}
	older, _ := a.hs.CreateInitiation(2, testEpoch.Add(-time.Second))
	if err := b.hs.AcceptInitiation(consume(older), later); err != errReplay {
		t.Errorf("older timestamp: err %v, want %v", err, errReplay)
	}
	soon := testEpoch.Add(10 * time.Millisecond)
	flood, _ := a.hs.CreateInitiation(3, soon)
	if err := b.hs.AcceptInitiation(consume(flood), soon); err != errFlood {
		t.Errorf("initiation 10 ms after the last: err %v, want %v", err, errFlood)
	}
	ok, _ := a.hs.CreateInitiation(4, testEpoch.Add(30*time.Millisecond))
	if err := b.hs.AcceptInitiation(consume(ok), testEpoch.Add(30*time.Millisecond)); err != nil {
		t.Errorf("initiation 30 ms after the last: %v", err)
	}
	b.hs.Clear()
	if err := b.hs.AcceptInitiation(consume(ok), later); err != errReplay {
		t.Errorf("replay after Clear: err %v, want %v (the last timestamp must survive)", err, errReplay)
	}
}

// TestNewHandshakeZeroDH checks a low-order peer key is refused.
func TestNewHandshakeZeroDH(t *testing.T) {
	id := NewIdentity(mustKey(t))
	if _, err := NewHandshake(id, PublicKey{}, PresharedKey{}); err == nil {
		t.Fatal("NewHandshake with the all-zero public key succeeded")
	}
}

// TestHandshakeWrongOrder checks steps out of order fail.
func TestHandshakeWrongOrder(t *testing.T) {
	a, _ := newParties(t, PresharedKey{})
	if _, err := a.hs.CreateResponse(1); err == nil {
		t.Error("CreateResponse without an accepted initiation succeeded")
	}
	if _, err := a.hs.BeginSession(testEpoch); err == nil {
		t.Error("BeginSession in the zero state succeeded")
	}
	if _, err := a.hs.CreateInitiation(9, testEpoch); err != nil {
		t.Fatal(err)
	}
	if idx, ok := a.hs.PendingIndex(); !ok || idx != 9 {
		t.Errorf("PendingIndex = %d, %v; want 9, true", idx, ok)
	}
	if _, err := a.hs.BeginSession(testEpoch); err == nil {
		t.Error("BeginSession with only an initiation sent succeeded")
	}
	a.hs.Clear()
	if _, ok := a.hs.PendingIndex(); ok {
		t.Error("PendingIndex after Clear")
	}
}

// TestPublicKey checks key agreement through PublicKey: DH both ways
// gives one secret.
func TestPublicKey(t *testing.T) {
	a, b := mustKey(t), mustKey(t)
	pa, pb := a.PublicKey(), b.PublicKey()
	s1, err1 := dh(&a, &pb)
	s2, err2 := dh(&b, &pa)
	if err1 != nil || err2 != nil || s1 != s2 {
		t.Fatalf("DH mismatch: %v %v", err1, err2)
	}
	unclamped := a
	unclamped[0] |= 7
	if unclamped.PublicKey() != pa {
		t.Error("PublicKey does not clamp")
	}
}
