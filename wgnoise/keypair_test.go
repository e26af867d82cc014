package wgnoise

import (
	"bytes"
	"encoding/binary"
	"sync"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
)

// sessionPair returns the two keypairs of a fresh handshake.
func sessionPair(t testing.TB) (ki, kr *Keypair) {
	t.Helper()
	a, b := newParties(t, PresharedKey{})
	return handshake(t, a, b, testEpoch)
}

// TestSealOpen checks round trips of several sizes (0 is a keepalive),
// the header written and the padding.
func TestSealOpen(t *testing.T) {
	ki, kr := sessionPair(t)
	for _, n := range []int{0, 1, 15, 16, 17, 100, 1420} {
		payload := bytes.Repeat([]byte{0xab}, n)
		buf := make([]byte, TransportHeaderSize+PaddedLen(n)+TagSize+7)
		for i := range buf {
			buf[i] = 0xee // padding must be written as zeros
		}
		copy(buf[TransportHeaderSize:], payload)
		c, _ := ki.NextCounter()
		m := ki.Seal(buf, n, 0, c)
		if want := TransportHeaderSize + PaddedLen(n) + TagSize; m != want {
			t.Fatalf("n=%d: Seal length %d, want %d", n, m, want)
		}
		msg := buf[:m]
		if typ, ok := MessageType(msg); !ok || typ != TypeTransport {
			t.Fatalf("n=%d: MessageType %d, %v", n, typ, ok)
		}
		if ReceiverIndex(msg) != kr.LocalIndex || binary.LittleEndian.Uint64(msg[8:]) != c {
			t.Fatalf("n=%d: header %x", n, msg[:16])
		}
		plain, counter, err := kr.Open(msg)
		if err != nil {
			t.Fatalf("n=%d: Open: %v", n, err)
		}
		want := append(payload, make([]byte, PaddedLen(n)-n)...)
		if counter != c || !bytes.Equal(plain, want) {
			t.Fatalf("n=%d: opened counter %d %x, want %d %x", n, counter, plain, c, want)
		}
		if &plain[0:1][0] != &msg[TransportHeaderSize] && n > 0 {
			t.Fatalf("n=%d: Open did not decrypt in place", n)
		}
		if ReceiverIndex(msg) != kr.LocalIndex {
			t.Fatalf("n=%d: Open left the header changed: %x", n, msg[:16])
		}
	}
	if n := ki.Seal(make([]byte, KeepaliveSize), 0, 0, 99); n != KeepaliveSize {
		t.Errorf("keepalive length %d, want %d", n, KeepaliveSize)
	}
}

// TestOpenRefusesTampering checks a flipped bit anywhere in a message, a
// wrong receiver, a short message and our own message are refused.
func TestOpenRefusesTampering(t *testing.T) {
	ki, kr := sessionPair(t)
	orig := sealed(t, ki, []byte("hello, tunnel"))
	for i := range orig {
		msg := bytes.Clone(orig)
		msg[i] ^= 0x10
		if _, _, err := kr.Open(msg); err == nil {
			t.Errorf("message with byte %d flipped opened", i)
		}
	}
	if _, _, err := kr.Open(orig[:KeepaliveSize-1]); err == nil {
		t.Error("short message opened")
	}
	if _, _, err := ki.Open(bytes.Clone(orig)); err == nil {
		t.Error("the sender opened its own message")
	}
	if _, _, err := kr.Open(bytes.Clone(orig)); err != nil {
		t.Errorf("the untampered message: %v", err)
	}
}

// TestOpenRejectAfterMessages checks counters at RejectAfterMessages are
// refused by NextCounter, Open and Accept.
func TestOpenRejectAfterMessages(t *testing.T) {
	ki, kr := sessionPair(t)
	ki.send.counter.Store(RejectAfterMessages - 1)
	c, ok := ki.NextCounter()
	if !ok || c != RejectAfterMessages-1 {
		t.Fatalf("NextCounter = %d, %v; want the last usable counter", c, ok)
	}
	if _, ok := ki.NextCounter(); ok {
		t.Fatal("NextCounter went past RejectAfterMessages")
	}
	buf := make([]byte, 64)
	msg := buf[:ki.Seal(buf, 4, 0, RejectAfterMessages)]
	if _, _, err := kr.Open(msg); err == nil {
		t.Error("Open accepted counter RejectAfterMessages")
	}
	if kr.Accept(RejectAfterMessages) || kr.Accept(1<<64-1) {
		t.Error("Accept took a counter at or past RejectAfterMessages")
	}
	msg = buf[:ki.Seal(buf, 4, 0, RejectAfterMessages-1)]
	if _, c, err := kr.Open(msg); err != nil || !kr.Accept(c) {
		t.Errorf("the last usable counter: %v", err)
	}
}

// TestReplayWindow checks the window: in order, reordered within it, too
// old, duplicates.
func TestReplayWindow(t *testing.T) {
	var w replayWindow
	steps := []struct {
		counter uint64
		want    bool
	}{
		{0, true}, {0, false}, {1, true}, {3, true}, {2, true}, {2, false}, {3, false},
		{100, true}, {64, true}, {99, true}, {64, false},
		{9000, true}, {9000 - replayWindowSize + 1, true}, {9000 - replayWindowSize, false},
		{20000, true}, {9000, false}, {19999, true}, {20000 - replayWindowSize + 1, true},
		{20000 - replayWindowSize, false}, {20001, true}, {20001 + 2*replayWindowSize, true},
		{20001 + replayWindowSize, false}, {20001 + replayWindowSize + 1, true}, {20001 + replayWindowSize + 1, false},
		{RejectAfterMessages - 1, true}, {RejectAfterMessages - 1, false}, {RejectAfterMessages, false},
	}
	for i, s := range steps {
		if got := w.accept(s.counter); got != s.want {
			t.Fatalf("step %d: accept(%d) = %v, want %v", i, s.counter, got, s.want)
		}
	}
	if replayWindowSize < 2048 {
		t.Errorf("window %d, the contract asks at least 2048", replayWindowSize)
	}
}

// TestReplayWindowEveryBit accepts a shuffled block of counters once each
// across several ring turns and refuses every second try.
func TestReplayWindowEveryBit(t *testing.T) {
	var w replayWindow
	const block = 512
	for base := uint64(0); base < 8*replayWindowSize; base += block {
		for i := uint64(0); i < block; i++ {
			c := base + (i*211)%block // a permutation of the block
			if !w.accept(c) {
				t.Fatalf("fresh counter %d refused", c)
			}
			if w.accept(c) {
				t.Fatalf("counter %d accepted twice", c)
			}
		}
	}
}

// TestKeypairConcurrent seals and opens from several goroutines at once
// (run under -race) and checks every counter is accepted exactly once.
func TestKeypairConcurrent(t *testing.T) {
	ki, kr := sessionPair(t)
	const workers, each = 4, 200
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[uint64]bool{}
	for range workers {
		wg.Go(func() {
			for range each {
				msg := sealed(t, ki, []byte("concurrent payload"))
				_, c, err := kr.Open(msg)
				if err != nil {
					t.Error(err)
					return
				}
				if !kr.Accept(c) {
					t.Errorf("counter %d refused", c)
				}
				mu.Lock()
				seen[c] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != workers*each {
		t.Errorf("%d distinct counters, want %d", len(seen), workers*each)
	}
}

// TestWipe checks a wiped keypair neither seals nor opens nor hands out
// counters, and that concurrent Seal calls and Wipe do not race.
func TestWipe(t *testing.T) {
	ki, kr := sessionPair(t)
	msg := sealed(t, ki, []byte("before the wipe"))
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 64)
		for range 100 {
			ki.Seal(buf, 10, 0, 1)
		}
	})
	ki.Wipe()
	wg.Wait()
	kr.Wipe()
	if _, ok := ki.NextCounter(); ok {
		t.Error("NextCounter after Wipe")
	}
	if n := ki.Seal(make([]byte, 64), 0, 10, 5); n != 0 {
		t.Errorf("Seal after Wipe returned %d, want 0", n)
	}
	if _, _, err := kr.Open(msg); err == nil {
		t.Error("Open after Wipe succeeded")
	}
}

// TestZeroAEAD checks zeroAEAD really overwrites the key inside x/crypto's
// AEAD: afterwards it seals as one made with the all-zero key. A change of
// x/crypto's layout makes zeroAEAD a no-op and this test fail.
func TestZeroAEAD(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	a, _ := chacha20poly1305.New(key)
	zeroAEAD(a)
	z, _ := chacha20poly1305.New(make([]byte, 32))
	nonce := make([]byte, 12)
	if got, want := a.Seal(nil, nonce, []byte("x"), nil), z.Seal(nil, nonce, []byte("x"), nil); !bytes.Equal(got, want) {
		t.Fatal("the AEAD's key survived zeroAEAD")
	}
}

// TestMessageType checks the size rule of each type.
func TestMessageType(t *testing.T) {
	msg := func(typ uint32, n int) []byte {
		b := make([]byte, n)
		if n >= 4 {
			binary.LittleEndian.PutUint32(b, typ)
		}
		return b
	}
	cases := []struct {
		msg []byte
		ok  bool
	}{
		{msg(TypeInitiation, InitiationSize), true}, {msg(TypeInitiation, InitiationSize+1), false},
		{msg(TypeResponse, ResponseSize), true}, {msg(TypeResponse, ResponseSize-1), false},
		{msg(TypeCookieReply, CookieReplySize), true}, {msg(TypeCookieReply, 63), false},
		{msg(TypeTransport, KeepaliveSize), true}, {msg(TypeTransport, 1500), true}, {msg(TypeTransport, 31), false},
		{msg(5, 148), false}, {msg(TypeInitiation|1<<8, InitiationSize), false}, {msg(0, 3), false}, {nil, false},
	}
	for i, c := range cases {
		if _, ok := MessageType(c.msg); ok != c.ok {
			t.Errorf("case %d (% x... len %d): ok %v, want %v", i, c.msg[:min(4, len(c.msg))], len(c.msg), ok, c.ok)
		}
	}
	if PaddedLen(0) != 0 || PaddedLen(1) != 16 || PaddedLen(16) != 16 || PaddedLen(1420) != 1424 {
		t.Error("PaddedLen")
	}
}

// TestSealPaddingStopsAtMTU: padding rounds up to 16 bytes but not beyond
// the MTU, unless the packet is larger than the MTU already.
func TestSealPaddingStopsAtMTU(t *testing.T) {
	ki, kr := sessionPair(t)
	for _, tc := range []struct{ n, mtu, padded int }{
		{1420, 1420, 1420}, {1419, 1420, 1420}, {1405, 1420, 1408}, {1420, 0, 1424}, {1500, 1420, 1504},
	} {
		buf := make([]byte, TransportHeaderSize+PaddedLen(tc.n)+TagSize)
		c, _ := ki.NextCounter()
		m := ki.Seal(buf, tc.n, tc.mtu, c)
		if want := TransportHeaderSize + tc.padded + TagSize; m != want {
			t.Errorf("n=%d mtu=%d: message %d bytes, want %d", tc.n, tc.mtu, m, want)
			continue
		}
		plain, _, err := kr.Open(buf[:m])
		if err != nil || len(plain) != tc.padded {
			t.Errorf("n=%d mtu=%d: opened %d bytes, %v", tc.n, tc.mtu, len(plain), err)
		}
	}
}
