package monitor

import (
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// nullTUN is a tunnel device that takes every packet and returns at once,
// so that a benchmark measures only what wraps it.
type nullTUN struct{ tun.Device }

func (nullTUN) Write(bufs [][]byte, offset int) (int, error) { return len(bufs), nil }

// BenchmarkMonitorHook is the cost per packet of the monitor's tap on
// the tunnel device's packet path (TapTUN's Write, a batch of 128 TCP
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
	var m Monitor
	t := TapTUN(nullTUN{}, &m, func([]byte) bool { return true })
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
		filter Filter
	}{
		{"listeners=1", Filter{}},
		{"listeners=1-drops-only", Filter{Kinds: []Kind{KindDrop}}},
	} {
		b.Run(c.name, func(b *testing.B) {
			l := m.Listen(1<<16, c.filter)
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

func TestParseFilter(t *testing.T) {
	f, err := ParseFilter(map[string][]string{"kind": {"drop,conn"}, "src": {"10.0.0.1"}, "addr": {"fd00::/64"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Kinds) != 2 || f.Kinds[0] != KindDrop || f.Kinds[1] != KindConn {
		t.Errorf("kinds %v", f.Kinds)
	}
	if f.Src != netip.MustParsePrefix("10.0.0.1/32") || f.Addr != netip.MustParsePrefix("fd00::/64") || f.Dst.IsValid() {
		t.Errorf("prefixes src %v dst %v addr %v", f.Src, f.Dst, f.Addr)
	}
	for _, bad := range []map[string][]string{{"kind": {"trace,bogus"}}, {"dst": {"10.0.0.300"}}} {
		if _, err := ParseFilter(bad); err == nil {
			t.Errorf("ParseFilter(%v) accepted it", bad)
		}
	}
}

// TestTapTUNNoPeer: a packet read from the stack for an address no peer
// takes is traced and reported dropped (no-peer); one for a routed address
// only traced. The same holds for packets the stack pushes (TapSend).
func TestTapTUNNoPeer(t *testing.T) {
	pkt := make([]byte, header.IPv4MinimumSize+header.UDPMinimumSize)
	enc := func(dst [4]byte) []byte {
		p := append([]byte(nil), pkt...)
		header.IPv4(p).Encode(&header.IPv4Fields{TotalLength: uint16(len(p)), Protocol: uint8(header.UDPProtocolNumber), TTL: 64,
			SrcAddr: tcpip.AddrFrom4([4]byte{10, 0, 0, 1}), DstAddr: tcpip.AddrFrom4(dst)})
		return p
	}
	routed := netip.MustParseAddr("10.0.0.2")
	isRouted := func(dst []byte) bool { a, _ := netip.AddrFromSlice(dst); return a == routed }
	pkts := [][]byte{enc([4]byte{10, 0, 0, 2}), enc([4]byte{10, 0, 0, 9})}
	t.Run("read", func(t *testing.T) {
		var m Monitor
		l := m.Listen(16, Filter{})
		defer l.Close()
		tap := TapTUN(&queueTUN{pkts: pkts}, &m, isRouted)
		bufs := [][]byte{make([]byte, 100), make([]byte, 100)}
		sizes := make([]int, 2)
		if n, err := tap.Read(bufs, sizes, 0); n != 2 || err != nil {
			t.Fatalf("Read = %d, %v", n, err)
		}
		checkNoPeerEvents(t, l)
	})
	t.Run("send", func(t *testing.T) {
		var m Monitor
		l := m.Listen(16, Filter{})
		defer l.Close()
		sent := 0
		send := TapSend(func(bufs [][]byte, _ int) error { sent += len(bufs); return nil }, &m, isRouted)
		if err := send(pkts, 0); err != nil || sent != 2 {
			t.Fatalf("send = %v, %d packets passed on", err, sent)
		}
		checkNoPeerEvents(t, l)
	})
}

// checkNoPeerEvents reads TestTapTUNNoPeer's three events from l.
func checkNoPeerEvents(t *testing.T, l *Listener) {
	t.Helper()
	var kinds []string
	for range 3 {
		ev := <-l.Events()
		_, dst, _, err := Inspect(ev.Packet)
		if err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, ev.Kind.String()+" "+dst.String())
		if ev.Kind == KindDrop && ev.Reason != NoPeer {
			t.Errorf("drop reason %v, want no-peer", ev.Reason)
		}
	}
	want := []string{"trace 10.0.0.2", "trace 10.0.0.9", "drop 10.0.0.9"}
	for i := range want {
		if kinds[i] != want[i] {
			t.Fatalf("events %v, want %v", kinds, want)
		}
	}
}

// queueTUN reads out a fixed list of packets.
type queueTUN struct {
	tun.Device
	pkts [][]byte
}

func (q *queueTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n := 0
	for ; n < len(q.pkts) && n < len(bufs); n++ {
		sizes[n] = copy(bufs[n][offset:], q.pkts[n])
	}
	q.pkts = q.pkts[n:]
	return n, nil
}

// TestQueueDropLogger: each call logs the drops since the last one, and
// nothing when there were none.
func TestQueueDropLogger(t *testing.T) {
	var buf strings.Builder
	var drops uint64
	tick := QueueDropLogger(func() uint64 { return drops }, slog.New(slog.NewTextHandler(&buf, nil)))
	tick()
	drops = 7
	tick()
	tick()
	drops = 10
	tick()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "dropped=7") || !strings.Contains(lines[1], "dropped=3") {
		t.Errorf("logged:\n%s\nwant two lines, dropped=7 then dropped=3", buf.String())
	}
}
