package wgnoise

import (
	"testing"
	"time"
)

// testEpoch is the clock the tests pass in.
var testEpoch = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// mustKey returns a fresh private key or fails t.
func mustKey(t testing.TB) PrivateKey {
	t.Helper()
	k, err := newPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// party is one side of a test handshake: its identity, its handshake with
// the other side, its MAC state towards it and its guard.
type party struct {
	id      *Identity
	hs      *Handshake
	cookies *Cookies
	guard   *Guard
}

// newParties returns two parties that know each other, sharing psk.
func newParties(t testing.TB, psk PresharedKey) (a, b *party) {
	t.Helper()
	a = &party{id: NewIdentity(mustKey(t))}
	b = &party{id: NewIdentity(mustKey(t))}
	for _, p := range []struct{ self, other *party }{{a, b}, {b, a}} {
		hs, err := NewHandshake(p.self.id, p.other.id.Public(), psk)
		if err != nil {
			t.Fatal(err)
		}
		p.self.hs = hs
		p.self.cookies = NewCookies(p.other.id.Public())
		p.self.guard = NewGuard(p.self.id)
	}
	return a, b
}

// handshake runs a whole handshake from init (initiator) to resp at now
// and returns both keypairs.
func handshake(t testing.TB, init, resp *party, now time.Time) (ki, kr *Keypair) {
	t.Helper()
	msg, err := init.hs.CreateInitiation(11, now)
	if err != nil {
		t.Fatal(err)
	}
	init.cookies.Stamp(msg[:], now)
	if !resp.guard.CheckMAC1(msg[:]) {
		t.Fatal("initiation's mac1 refused")
	}
	in, err := ConsumeInitiation(resp.id, msg[:])
	if err != nil {
		t.Fatalf("ConsumeInitiation: %v", err)
	}
	if in.Peer != init.id.Public() || in.Sender != 11 {
		t.Fatalf("initiation from %x index %d, want %x index 11", in.Peer, in.Sender, init.id.Public())
	}
	if err := resp.hs.AcceptInitiation(in, now); err != nil {
		t.Fatalf("AcceptInitiation: %v", err)
	}
	rmsg, err := resp.hs.CreateResponse(22)
	if err != nil {
		t.Fatal(err)
	}
	resp.cookies.Stamp(rmsg[:], now)
	if !init.guard.CheckMAC1(rmsg[:]) {
		t.Fatal("response's mac1 refused")
	}
	if got := ReceiverIndex(rmsg[:]); got != 11 {
		t.Fatalf("response's receiver index %d, want 11", got)
	}
	if err := init.hs.ConsumeResponse(rmsg[:]); err != nil {
		t.Fatalf("ConsumeResponse: %v", err)
	}
	if ki, err = init.hs.BeginSession(now); err != nil {
		t.Fatal(err)
	}
	if kr, err = resp.hs.BeginSession(now); err != nil {
		t.Fatal(err)
	}
	return ki, kr
}

// sealed returns payload sealed by kp with the next counter, in a buffer
// with room for padding and tag.
func sealed(t testing.TB, kp *Keypair, payload []byte) []byte {
	t.Helper()
	c, ok := kp.NextCounter()
	if !ok {
		t.Fatal("NextCounter refused")
	}
	buf := make([]byte, TransportHeaderSize+PaddedLen(len(payload))+TagSize)
	copy(buf[TransportHeaderSize:], payload)
	n := kp.Seal(buf, len(payload), 0, c)
	if n != len(buf) {
		t.Fatalf("Seal returned %d, want %d", n, len(buf))
	}
	return buf[:n]
}
