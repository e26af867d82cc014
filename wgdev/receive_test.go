package wgdev

import (
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/internal/leaktest"
	"github.com/wgsidecar/sidecar/wgnoise"
)

// TestDeliveryOrder: a large batch's delivery is handed to the receive
// goroutine's deliverer while the next batch is received, but packets
// still reach the TUN in the order they came, also when a small batch
// (delivered by the receive goroutine itself) follows a large one whose
// slow delivery is still under way.
func TestDeliveryOrder(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	a, b := pair(t, newOurs, newOurs, wgnoise.PresharedKey{})
	exchange(t, a, b, "warm")
	b.tun.slow.Store(int64(30 * time.Millisecond))
	seq := 0
	for range 20 {
		for _, burst := range []int{16, 1} {
			bufs := make([][]byte, burst)
			for i := range bufs {
				payload := binary.BigEndian.AppendUint32(nil, uint32(seq))
				seq++
				pkt := udpPacket(a.addr, b.addr, payload)
				bufs[i] = append(make([]byte, SendOffset, SendOffset+len(pkt)+SendTail), pkt...)
			}
			if err := a.dev.Send(bufs, SendOffset); err != nil {
				t.Fatal(err)
			}
			// Let the burst arrive as a batch of its own before the
			// next: the single packet must wait for the slow write.
			time.Sleep(5 * time.Millisecond)
		}
	}
	for want := range seq {
		pkt := b.recv(t)
		if got := binary.BigEndian.Uint32(pkt[len(pkt)-4:]); got != uint32(want) {
			t.Fatalf("packet %d delivered where %d was due", got, want)
		}
	}
}

// TestReceiveAheadOfDelivery: while the TUN is slow to take large batches,
// the receive goroutine goes on receiving and opening batches, up to
// maxRxStates of them, instead of waiting for each delivery; all reach the
// TUN in order once it takes them. (With double buffering it stopped after
// two: small datagrams then went at the pace of the slower stage.)
func TestReceiveAheadOfDelivery(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	a, b := pair(t, newOurs, newOurs, wgnoise.PresharedKey{})
	exchange(t, a, b, "warm")
	const burst = 16
	seq := 0
	sendBurst := func() {
		bufs := make([][]byte, burst)
		for i := range bufs {
			pkt := udpPacket(a.addr, b.addr, binary.BigEndian.AppendUint32(nil, uint32(seq)))
			seq++
			bufs[i] = append(make([]byte, SendOffset, SendOffset+len(pkt)+SendTail), pkt...)
		}
		if err := a.dev.Send(bufs, SendOffset); err != nil {
			t.Fatal(err)
		}
	}
	rxBytes := func() (n uint64) {
		for _, p := range b.status(t).Peers { // one peer
			n += p.RxBytes
		}
		return n
	}

	// One burst's worth of received bytes, measured with the gate open.
	rx0 := rxBytes()
	sendBurst()
	for range burst {
		b.recv(t)
	}
	perBurst := rxBytes() - rx0
	if perBurst == 0 {
		t.Fatal("a delivered burst did not count")
	}
	first := seq

	gate := make(chan struct{})
	b.tun.gate.Store(&gate)
	release := sync.OnceFunc(func() { close(gate) })
	defer release()
	rx0 = rxBytes()
	for range maxRxStates + 2 {
		sendBurst()
		time.Sleep(5 * time.Millisecond) // a batch of its own
	}
	want := maxRxStates * perBurst
	for deadline := time.Now().Add(10 * time.Second); rxBytes()-rx0 < want; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes received while the first delivery waits, want at least %d (%d batches)", rxBytes()-rx0, want, maxRxStates)
		}
	}
	release()
	for want := first; want < seq; want++ {
		pkt := b.recv(t)
		if got := binary.BigEndian.Uint32(pkt[len(pkt)-4:]); got != uint32(want) {
			t.Fatalf("packet %d delivered where %d was due", got, want)
		}
	}
}
