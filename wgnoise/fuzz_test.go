package wgnoise

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// The fuzz targets below cover every parser of outside input. Their seed
// corpus (valid messages made at start, and mangled ones) runs in every
// go test; each checks that only the one valid message gets through.

// fuzzParties returns two parties with fixed static keys and a fixed
// cookie secret: with the fixed ephemeral keys and nonces below, every
// fuzz worker process makes the same valid messages as the one that
// built the seed corpus.
func fuzzParties(t testing.TB) (a, b *party) {
	t.Helper()
	a = &party{id: NewIdentity(PrivateKey{1, 2, 3})}
	b = &party{id: NewIdentity(PrivateKey{4, 5, 6})}
	for _, p := range []struct{ self, other *party }{{a, b}, {b, a}} {
		hs, err := NewHandshake(p.self.id, p.other.id.Public(), PresharedKey{9})
		if err != nil {
			t.Fatal(err)
		}
		p.self.hs, p.self.cookies, p.self.guard = hs, NewCookies(p.other.id.Public()), NewGuard(p.self.id)
		p.self.guard.secret, p.self.guard.secretAt = [32]byte{5}, testEpoch
	}
	return a, b
}

// fuzzInitiation returns a's initiation to b, made with a fixed
// ephemeral key, with mac1 stamped.
func fuzzInitiation(t testing.TB, a *party) [InitiationSize]byte {
	t.Helper()
	msg, err := a.hs.initiation(PrivateKey{7}, 3, testEpoch)
	if err != nil {
		t.Fatal(err)
	}
	a.cookies.Stamp(msg[:], testEpoch)
	return msg
}

// fuzzResponse has b accept a's initiation and returns b's response, made
// with a fixed ephemeral key.
func fuzzResponse(t testing.TB, a, b *party) [ResponseSize]byte {
	t.Helper()
	init := fuzzInitiation(t, a)
	in, err := ConsumeInitiation(b.id, init[:])
	if err != nil {
		t.Fatal(err)
	}
	if err := b.hs.AcceptInitiation(in, testEpoch); err != nil {
		t.Fatal(err)
	}
	resp, err := b.hs.response(PrivateKey{8}, 4)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// addMangled adds valid and mangled versions of msg to f's corpus.
func addMangled(f *testing.F, msg []byte) {
	f.Add(bytes.Clone(msg))
	f.Add(msg[:len(msg)-1])
	f.Add(append(bytes.Clone(msg), 0))
	for _, off := range []int{0, 4, 8, len(msg) / 2, len(msg) - 17, len(msg) - 1} {
		m := bytes.Clone(msg)
		m[off] ^= 0x80
		f.Add(m)
	}
	f.Add([]byte{})
}

func FuzzMessageType(f *testing.F) {
	for _, n := range []int{0, 3, 4, 31, 32, 63, 64, 92, 148, 1500} {
		for typ := range uint32(6) {
			m := make([]byte, n)
			if n >= 4 {
				binary.LittleEndian.PutUint32(m, typ)
			}
			f.Add(m)
		}
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		typ, ok := MessageType(msg)
		idx := ReceiverIndex(msg)
		if !ok {
			if idx != 0 {
				t.Fatalf("ReceiverIndex %d of a message MessageType refused", idx)
			}
			return
		}
		want := map[uint32]int{TypeInitiation: InitiationSize, TypeResponse: ResponseSize, TypeCookieReply: CookieReplySize}
		if size, fixed := want[typ]; fixed && len(msg) != size || typ == TypeTransport && len(msg) < KeepaliveSize || typ == 0 || typ > 4 {
			t.Fatalf("MessageType accepted type %d of length %d", typ, len(msg))
		}
		switch typ {
		case TypeResponse:
			if idx != binary.LittleEndian.Uint32(msg[8:]) {
				t.Fatal("response's receiver index misread")
			}
		case TypeCookieReply, TypeTransport:
			if idx != binary.LittleEndian.Uint32(msg[4:]) {
				t.Fatal("receiver index misread")
			}
		}
	})
}

func FuzzConsumeInitiation(f *testing.F) {
	a, b := fuzzParties(f)
	valid := fuzzInitiation(f, a)
	if _, err := ConsumeInitiation(b.id, valid[:]); err != nil {
		f.Fatalf("the valid seed: %v", err)
	}
	addMangled(f, valid[:])
	f.Fuzz(func(t *testing.T, msg []byte) {
		in, err := ConsumeInitiation(b.id, msg)
		if err != nil {
			return
		}
		// Everything from the ephemeral key to the timestamp is
		// authenticated: only the valid message gets through.
		if !bytes.Equal(msg[initEphemeral:initMAC1], valid[initEphemeral:initMAC1]) || in.Peer != a.id.Public() {
			t.Fatalf("forged initiation accepted: % x", msg)
		}
	})
}

func FuzzConsumeResponse(f *testing.F) {
	a, b := fuzzParties(f)
	valid := fuzzResponse(f, a, b)
	addMangled(f, valid[:])
	pending := *a.hs
	if hs := pending; hs.ConsumeResponse(valid[:]) != nil {
		f.Fatal("the valid seed refused")
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		hs := pending
		if err := hs.ConsumeResponse(msg); err != nil {
			if _, ok := hs.PendingIndex(); !ok {
				t.Fatal("a refused response dropped the pending initiation")
			}
			return
		}
		if !bytes.Equal(msg[respReceiver:respMAC1], valid[respReceiver:respMAC1]) {
			t.Fatalf("forged response accepted: % x", msg)
		}
	})
}

func FuzzCookiesConsumeReply(f *testing.F) {
	a, b := fuzzParties(f)
	msg := fuzzInitiation(f, a)
	valid := b.guard.sealReply(msg[:], &[macSize]byte{6}, &[24]byte{7})
	addMangled(f, valid[:])
	sent := *a.cookies
	if c := sent; c.ConsumeReply(valid[:], testEpoch) != nil {
		f.Fatal("the valid seed refused")
	}
	f.Fuzz(func(t *testing.T, reply []byte) {
		c := sent
		if err := c.ConsumeReply(reply, testEpoch); err != nil {
			return
		}
		if !bytes.Equal(reply[cookieNonce:], valid[cookieNonce:]) {
			t.Fatalf("forged cookie reply accepted: % x", reply)
		}
	})
}

func FuzzKeypairOpen(f *testing.F) {
	a, b := fuzzParties(f)
	resp := fuzzResponse(f, a, b)
	if err := a.hs.ConsumeResponse(resp[:]); err != nil {
		f.Fatal(err)
	}
	ki, _ := a.hs.BeginSession(testEpoch)
	kr, _ := b.hs.BeginSession(testEpoch)
	valid := [][]byte{sealed(f, ki, []byte("a transport message to fuzz")), sealed(f, ki, nil)}
	for _, v := range valid {
		if _, _, err := kr.Open(bytes.Clone(v)); err != nil {
			f.Fatalf("the valid seed: %v", err)
		}
		addMangled(f, v)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		m := bytes.Clone(msg)
		plain, _, err := kr.Open(m)
		if err != nil {
			return
		}
		if len(plain) != len(msg)-KeepaliveSize || ReceiverIndex(m) != kr.LocalIndex {
			t.Fatalf("Open returned %d bytes of a %d-byte message", len(plain), len(msg))
		}
		if !bytes.Equal(msg, valid[0]) && !bytes.Equal(msg, valid[1]) {
			t.Fatalf("forged transport message opened: % x", msg)
		}
	})
}

func FuzzGuardCheckMACs(f *testing.F) {
	a, b := fuzzParties(f)
	msg := fuzzInitiation(f, a)
	reply, _ := b.guard.CookieReply(msg[:], src4, testEpoch)
	if err := a.cookies.ConsumeReply(reply[:], testEpoch); err != nil {
		f.Fatal(err)
	}
	a.cookies.Stamp(msg[:], testEpoch)
	valid := msg
	if !b.guard.CheckMAC1(valid[:]) || !b.guard.CheckMAC2(valid[:], src4, testEpoch) {
		f.Fatal("the valid seed refused")
	}
	for _, m := range [][]byte{valid[:], valid[:40], make([]byte, 32), valid[1:]} {
		f.Add(bytes.Clone(m), bytes.Clone(src4))
		f.Add(bytes.Clone(m), []byte{127, 0, 0, 1})
	}
	f.Fuzz(func(t *testing.T, msg, src []byte) {
		if b.guard.CheckMAC1(msg) && (len(msg) != InitiationSize || !bytes.Equal(msg[:InitiationSize-16], valid[:InitiationSize-16])) {
			t.Fatalf("forged mac1 accepted: % x", msg)
		}
		if b.guard.CheckMAC2(msg, src, testEpoch) && (!bytes.Equal(msg, valid[:]) || !bytes.Equal(src, src4)) {
			t.Fatalf("forged mac2 accepted: % x from % x", msg, src)
		}
	})
}
