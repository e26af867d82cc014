// Package wrap owns the counting wrappers around the two edges of a
// WireGuard node: the tun.Device (the virtual layer: each IP packet of a
// batch, keyed by its 5-tuple with this node's side as the source) and the
// conn.Bind (the physical layer: each WireGuard datagram, keyed by the
// remote UDP endpoint with protocol 0; the source, the peer behind the
// endpoint, is left for the flow logger to fill in). The bind also counts
// handshake and keepalive messages by kind, and notes for each endpoint
// when a handshake initiation was last sent and a send last failed, for a
// watchdog.
//
// Counting goes into a *stats.Stats set with SetStatistics; with none set,
// the TUN wrapper costs one atomic load per batch and the bind wrapper a
// comparison per datagram more. wrap knows nothing of classification or
// logging, and nothing of gVisor: it reads the few IP header fields it
// needs itself.
package wrap

import (
	"sync/atomic"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/wgsidecar/sidecar/stats"
)

// TUN counts the IP packets that cross a tun.Device. Read returns packets
// this node sends into the tunnel (tx); Write takes packets it received
// from the tunnel (rx). It is safe for concurrent use as the device is.
type TUN struct {
	tun.Device
	stats atomic.Pointer[stats.Stats]
}

// NewTUN wraps dev.
func NewTUN(dev tun.Device) *TUN { return &TUN{Device: dev} }

// SetStatistics starts counting into s, or stops counting when s is nil.
func (t *TUN) SetStatistics(s *stats.Stats) { t.stats.Store(s) }

// Read reads a batch from the device and counts each packet as sent.
func (t *TUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := t.Device.Read(bufs, sizes, offset)
	if s := t.stats.Load(); s != nil && n > 0 {
		var k stats.Key
		b := s.Begin()
		for i := range n {
			t.countSent(&b, &k, bufs[i][offset:offset+sizes[i]])
		}
		b.End()
	}
	return n, err
}

// Outbound is Read's counting for a device the stack pushes packets to
// (netstack.Stack.SetSender): the returned function counts each packet,
// bufs[i][offset:], as sent, then passes the batch to send.
func (t *TUN) Outbound(send func(bufs [][]byte, offset int) error) func(bufs [][]byte, offset int) error {
	return func(bufs [][]byte, offset int) error {
		if s := t.stats.Load(); s != nil {
			var k stats.Key
			b := s.Begin()
			for _, buf := range bufs {
				t.countSent(&b, &k, buf[offset:])
			}
			b.End()
		}
		return send(bufs, offset)
	}
}

func (t *TUN) countSent(b *stats.Batch, k *stats.Key, pkt []byte) {
	if flowKey(pkt, false, k) {
		b.Count(stats.Virtual, k, len(pkt), stats.Tx)
	}
}

// Write counts each packet as received, then writes the batch to the
// device.
func (t *TUN) Write(bufs [][]byte, offset int) (int, error) {
	if s := t.stats.Load(); s != nil {
		var k stats.Key
		b := s.Begin()
		for _, buf := range bufs {
			pkt := buf[offset:]
			if flowKey(pkt, true, &k) {
				b.Count(stats.Virtual, &k, len(pkt), stats.Rx)
			}
		}
		b.End()
	}
	return t.Device.Write(bufs, offset)
}
