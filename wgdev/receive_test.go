package wgdev

import (
	"encoding/binary"
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
