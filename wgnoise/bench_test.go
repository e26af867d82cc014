package wgnoise

import (
	"testing"
	"time"
)

// packetSize is the payload of the Seal and Open benchmarks: a full
// packet at the tunnel's default MTU.
const packetSize = 1420

// BenchmarkSeal seals 1420-byte packets in place.
func BenchmarkSeal(b *testing.B) {
	ki, _ := sessionPair(b)
	buf := make([]byte, TransportHeaderSize+PaddedLen(packetSize)+TagSize)
	b.SetBytes(packetSize)
	b.ReportAllocs()
	for b.Loop() {
		c, _ := ki.NextCounter()
		ki.Seal(buf, packetSize, 0, c)
	}
}

// BenchmarkSealParallel seals from every P at once on one keypair, as
// many senders to one peer do (the counter and read lock are shared).
func BenchmarkSealParallel(b *testing.B) {
	ki, _ := sessionPair(b)
	b.SetBytes(packetSize)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, TransportHeaderSize+PaddedLen(packetSize)+TagSize)
		for pb.Next() {
			c, _ := ki.NextCounter()
			ki.Seal(buf, packetSize, 0, c)
		}
	})
}

// BenchmarkOpen opens 1420-byte packets in place and accepts their
// counters; each iteration first copies the sealed message back into
// the buffer (Open overwrites it), which is counted too.
func BenchmarkOpen(b *testing.B) {
	ki, kr := sessionPair(b)
	msg := sealed(b, ki, make([]byte, packetSize))
	buf := make([]byte, len(msg))
	b.SetBytes(packetSize)
	b.ReportAllocs()
	for b.Loop() {
		copy(buf, msg)
		if _, c, err := kr.Open(buf); err != nil {
			b.Fatal(err)
		} else {
			kr.Accept(c)
		}
	}
}

// BenchmarkHandshake runs a whole handshake: initiation, its MAC check
// and consumption, the response, its consumption, and both sessions.
func BenchmarkHandshake(b *testing.B) {
	a, r := newParties(b, PresharedKey{1})
	now := testEpoch
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Second) // newer timestamp, no flood
		ki, kr := handshake(b, a, r, now)
		ki.Wipe()
		kr.Wipe()
	}
}

// TestSealOpenNoAlloc checks the packet path allocates nothing.
func TestSealOpenNoAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's instrumentation allocates; run without -race")
	}
	ki, kr := sessionPair(t)
	buf := make([]byte, TransportHeaderSize+PaddedLen(packetSize)+TagSize)
	allocs := testing.AllocsPerRun(100, func() {
		c, _ := ki.NextCounter()
		n := ki.Seal(buf, packetSize, 0, c)
		if _, c, err := kr.Open(buf[:n]); err != nil || !kr.Accept(c) {
			t.Fatal("round trip failed")
		}
	})
	if allocs != 0 {
		t.Errorf("Seal+Open+Accept: %v allocations per packet, want 0", allocs)
	}
}
