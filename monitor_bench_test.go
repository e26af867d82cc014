package sidecar

import (
	"net/netip"
	"testing"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/wgsidecar/sidecar/monitor"
	"github.com/wgsidecar/sidecar/netstack"
	"github.com/wgsidecar/sidecar/wgconf"
)

// nullTUN is a tunnel device that takes every packet and returns at once,
// so that a benchmark measures only what wraps it.
type nullTUN struct{ tun.Device }

func (nullTUN) Write(bufs [][]byte, offset int) (int, error) { return len(bufs), nil }

// BenchmarkMonitorHook is the cost per packet of the monitor's hook on
// the tunnel device's packet path (traceTUN.Write, a batch of 128 TCP
// segments from a peer): with nobody listening, with one listener that
// takes every packet, and with one whose filter wants only drops.
func BenchmarkMonitorHook(b *testing.B) {
	const batch = 128
	pkt := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize+1000)
	header.IPv4(pkt).Encode(&header.IPv4Fields{
		TotalLength: uint16(len(pkt)), Protocol: uint8(header.TCPProtocolNumber), TTL: 64,
		SrcAddr: tcpip.AddrFrom4([4]byte{10, 99, 0, 1}), DstAddr: tcpip.AddrFrom4([4]byte{10, 99, 0, 2}),
	})
	header.TCP(pkt[header.IPv4MinimumSize:]).Encode(&header.TCPFields{SrcPort: 40000, DstPort: 80, DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagAck})
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = pkt
	}
	st, err := netstack.New(netstack.Options{Addresses: []netip.Addr{netip.MustParseAddr("10.99.0.2")}})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	n := &Node{stack: st}
	n.peers = []wgconf.Peer{{AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.0.1/32")}}}
	t := traceTUN{Device: nullTUN{}, n: n}

	run := func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			t.Write(bufs, 0)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/packet")
	}
	b.Run("listeners=0", run)
	for _, c := range []struct {
		name   string
		filter monitor.Filter
	}{
		{"listeners=1", monitor.Filter{}},
		{"listeners=1-drops-only", monitor.Filter{Kinds: []monitor.Kind{monitor.KindDrop}}},
	} {
		b.Run(c.name, func(b *testing.B) {
			l := n.mon.Listen(1<<16, c.filter)
			done := make(chan struct{})
			go func() {
				defer close(done)
				for range l.Events() {
				}
			}()
			run(b)
			l.Close()
			<-done
		})
	}
}
