package netlog

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/classify"
	"github.com/wgsidecar/sidecar/stats"
)

// fakeDevice is a counting wrapper stand-in: it holds the statistics the
// logger gives it and counts packets into them on demand.
type fakeDevice struct{ s *stats.Stats }

func (d *fakeDevice) SetStatistics(s *stats.Stats) { d.s = s }

func (d *fakeDevice) send(l stats.Layer, proto uint8, src, dst string, size int) {
	k := stats.MakeKey(proto, netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst))
	b := d.s.Begin()
	b.Count(l, &k, size, stats.Tx)
	b.End()
}

func TestLoggerLifecycle(t *testing.T) {
	var sink MemorySink
	var tun, sock fakeDevice
	var l Logger
	if l.Running() {
		t.Fatal("zero Logger running")
	}
	routes := classify.Routes{
		Local: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")},
		Peers: [][]netip.Prefix{{netip.MustParsePrefix("10.0.0.2/32")}},
	}
	err := l.Startup(Config{
		NodeID: "node1", Window: time.Hour, Sink: &sink, Routes: routes,
		PeerOf: func(ap netip.AddrPort) netip.Addr { return netip.MustParseAddr("10.0.0.2") },
	}, &tun, &sock)
	if err != nil || !l.Running() || tun.s == nil || sock.s != tun.s {
		t.Fatalf("Startup: %v, running %v, devices %p %p", err, l.Running(), tun.s, sock.s)
	}
	if err := l.Startup(Config{Sink: &sink}, nil, nil); err == nil {
		t.Error("second Startup succeeded")
	}
	ctx := context.Background()

	// An empty window writes nothing.
	if err := l.Cut(ctx); err != nil || len(sink.Messages()) != 0 {
		t.Fatalf("empty window: %v, %d messages", err, len(sink.Messages()))
	}

	// A flow first seen while 10.0.0.9 is outside every route is exit; the
	// routes then change to make it a peer: within the window it stays
	// exit, in the next window it is virtual.
	tun.send(stats.Virtual, 6, "10.0.0.1:1000", "10.0.0.9:80", 100)
	l.ReconfigRoutes(classify.Routes{
		Local: routes.Local,
		Peers: [][]netip.Prefix{{netip.MustParsePrefix("10.0.0.2/32")}, {netip.MustParsePrefix("10.0.0.9/32")}},
	})
	tun.send(stats.Virtual, 6, "10.0.0.1:1000", "10.0.0.9:80", 100)
	sock.send(stats.Physical, 0, "0.0.0.0:0", "192.0.2.1:51820", 180)
	if err := l.Cut(ctx); err != nil {
		t.Fatal(err)
	}
	msgs := sink.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages; want 1", len(msgs))
	}
	m := msgs[0]
	// Anonymised with the routes of the cut: 10.0.0.9 is a tunnel node
	// address by then, so it stays (without its port and protocol).
	if m.NodeID != "node1" || len(m.VirtualTraffic) != 0 || len(m.ExitTraffic) != 1 || m.ExitTraffic[0].TxBytes != 200 ||
		m.ExitTraffic[0].Src != "10.0.0.1:0" || m.ExitTraffic[0].Dst != "10.0.0.9:0" || m.ExitTraffic[0].Proto != 0 {
		t.Errorf("window with a route change: %+v", m)
	}
	if len(m.PhysicalTraffic) != 1 || m.PhysicalTraffic[0].Src != "10.0.0.2:0" || m.PhysicalTraffic[0].Dst != "192.0.2.1:51820" {
		t.Errorf("physical: %+v", m.PhysicalTraffic)
	}

	tun.send(stats.Virtual, 6, "10.0.0.1:1000", "10.0.0.9:80", 100)
	// Shutdown writes the last window and closes the sink.
	if err := l.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	msgs = sink.Messages()
	if len(msgs) != 2 || len(msgs[1].VirtualTraffic) != 1 || msgs[1].VirtualTraffic[0].Dst != "10.0.0.9:80" {
		t.Fatalf("after Shutdown: %+v", msgs)
	}
	if !msgs[1].Start.Equal(msgs[0].End.Add(time.Nanosecond)) {
		t.Errorf("windows not contiguous: %v then %v", msgs[0].End, msgs[1].Start)
	}
	if l.Running() || tun.s != nil || sock.s != nil {
		t.Error("still running or counting after Shutdown")
	}
	if err := sink.Write(ctx, &msgs[0]); err != ErrClosed {
		t.Errorf("sink not closed: %v", err)
	}
	if err := l.Cut(ctx); err == nil {
		t.Error("Cut after Shutdown succeeded")
	}
}

// TestLoggerWindowTicks: windows end on their own at the configured length.
func TestLoggerWindowTicks(t *testing.T) {
	var sink MemorySink
	var tun fakeDevice
	var l Logger
	if err := l.Startup(Config{NodeID: "n", Window: 20 * time.Millisecond, Sink: &sink}, &tun, nil); err != nil {
		t.Fatal(err)
	}
	defer l.Shutdown(context.Background())
	deadline := time.Now().Add(10 * time.Second)
	for len(sink.Messages()) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d messages after 10 s of 20 ms windows", len(sink.Messages()))
		}
		tun.send(stats.Virtual, 17, "10.0.0.1:1", "10.0.0.2:2", 10)
		time.Sleep(5 * time.Millisecond)
	}
	for _, m := range sink.Messages() {
		if d := m.End.Sub(m.Start); d > 2*time.Second {
			t.Errorf("a 20 ms window lasted %v", d)
		}
	}
}
