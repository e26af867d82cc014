package sidecar_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/monitor"
	"github.com/wgsidecar/sidecar/netlog"
	"github.com/wgsidecar/sidecar/sidecartest"
)

// traceRecord keeps the sizes of the packets a node's monitor traced at
// its four packet observation points: IP packets at the tunnel device
// (to-peer, from-peer) and WireGuard messages at the UDP socket
// (to-network, from-network; the UDP payload, without the headers the
// monitor wraps them in).
type traceRecord struct {
	l    *monitor.Listener
	done chan struct{}

	mu    sync.Mutex
	sizes map[monitor.Point][]int
	data  map[monitor.Point][]int // at the socket: the sizes of the data messages (transport, not keepalive)
	lost  uint64
}

func recordTraces(n *sidecar.Node) *traceRecord {
	r := &traceRecord{
		l:     n.Monitor().Listen(1<<16, monitor.Filter{Kinds: []monitor.Kind{monitor.KindTrace}}),
		done:  make(chan struct{}),
		sizes: map[monitor.Point][]int{},
		data:  map[monitor.Point][]int{},
	}
	go func() {
		defer close(r.done)
		for ev := range r.l.Events() {
			r.mu.Lock()
			switch {
			case ev.Kind == monitor.KindLost:
				r.lost += ev.Lost
			case ev.Point == monitor.ToPeer || ev.Point == monitor.FromPeer:
				r.sizes[ev.Point] = append(r.sizes[ev.Point], len(ev.Packet))
			case ev.Point == monitor.ToNetwork || ev.Point == monitor.FromNetwork:
				ipLen := 20
				if ev.Packet[0]>>4 == 6 {
					ipLen = 40
				}
				msg := ev.Packet[ipLen+8:]
				r.sizes[ev.Point] = append(r.sizes[ev.Point], len(msg))
				if msg[0] == 4 && len(msg) > 32 {
					r.data[ev.Point] = append(r.data[ev.Point], len(msg))
				}
			}
			r.mu.Unlock()
		}
	}()
	return r
}

// stop waits until no event has come for 200 ms, ends the listener and
// returns what it recorded: the sizes of all packets and of the data
// messages.
func (r *traceRecord) stop(t *testing.T) (sizes, data map[monitor.Point][]int) {
	t.Helper()
	count := func() (n int) {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, s := range r.sizes {
			n += len(s)
		}
		return n
	}
	for last := -1; last != count(); {
		last = count()
		time.Sleep(200 * time.Millisecond)
	}
	r.l.Close()
	<-r.done
	if r.lost > 0 {
		t.Fatalf("the trace listener lost %d events; the record is incomplete", r.lost)
	}
	return r.sizes, r.data
}

// TestFlowLogReconcilesTraces checks the flow log of a node in the
// configuration it runs in by default, without WrapTUN, which puts wgdev
// in push mode (the stack hands its packets to the device's Send), against
// an independent per-packet record: the monitor's traces, taken at the
// tunnel device and the socket by code apart from the flow log's counting.
// Over one quiescent window of real traffic, the virtual layer's packets
// and bytes equal the traced tunnel packets, the physical layer's equal the
// traced datagrams, and each data message is its packet's WireGuard
// framing (padded to 16 bytes, not past the MTU), exactly, both ways.
func TestFlowLogReconcilesTraces(t *testing.T) { sidecartest.ForEachDevice(t, flowLogReconcilesTraces) }

func flowLogReconcilesTraces(t *testing.T, own bool) {
	var sinks [2]netlog.MemorySink
	nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{
		OwnWireGuard: own,
		FlowSinks:    []netlog.Sink{&sinks[0], &sinks[1]},
	})
	a, b := nodes[0], nodes[1]
	testnet.ServeHTTP(t, b, "b")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	warmAndCut(ctx, t, a, a) // then the record starts with the window
	rec := recordTraces(a)
	before := len(sinks[0].Messages())

	windowTraffic(ctx, t, a, b)
	quiesce()
	if err := a.CutFlows(ctx); err != nil {
		t.Fatal(err)
	}
	traced, data := rec.stop(t)

	var virtual, physical []netlog.ConnectionCounts
	for _, m := range sinks[0].Messages()[before:] {
		virtual = append(virtual, m.VirtualTraffic...)
		physical = append(physical, m.PhysicalTraffic...)
	}
	total := func(sizes []int) (n uint64) {
		for _, s := range sizes {
			n += uint64(s)
		}
		return n
	}
	check := func(layer, dir string, pkts, bytes uint64, sizes []int) {
		t.Helper()
		if pkts != uint64(len(sizes)) || bytes != total(sizes) {
			t.Errorf("%s %s: the flow log counts %d packets, %d bytes; the monitor traced %d packets, %d bytes",
				layer, dir, pkts, bytes, len(sizes), total(sizes))
		}
	}
	v, p := testnet.SumCounts(virtual), testnet.SumCounts(physical)
	check("virtual", "tx", v.TxPackets, v.TxBytes, traced[monitor.ToPeer])
	check("virtual", "rx", v.RxPackets, v.RxBytes, traced[monitor.FromPeer])
	check("physical", "tx", p.TxPackets, p.TxBytes, traced[monitor.ToNetwork])
	check("physical", "rx", p.RxPackets, p.RxBytes, traced[monitor.FromNetwork])
	if total(traced[monitor.ToPeer]) < 3<<20 {
		t.Errorf("only %d bytes traced to the peer; the bulk transfer is missing", total(traced[monitor.ToPeer]))
	}

	// Each packet through the tunnel is one data message of its framed
	// size; the rest of the datagrams are handshake messages and
	// keepalives.
	framed := func(sizes []int) (f []int) {
		for _, s := range sizes {
			f = append(f, framing(s, 1420))
		}
		return f
	}
	for _, dir := range []struct{ virtual, physical monitor.Point }{{monitor.ToPeer, monitor.ToNetwork}, {monitor.FromPeer, monitor.FromNetwork}} {
		want, got := framed(traced[dir.virtual]), slices.Clone(data[dir.physical])
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s: %d data messages (%s); %d %s packets framed (%s)", dir.physical, len(got), summary(got), len(want), dir.virtual, summary(want))
		}
	}
	t.Logf("window: virtual tx %d pkts %d B, rx %d pkts %d B; physical tx %d pkts %d B, rx %d pkts %d B",
		v.TxPackets, v.TxBytes, v.RxPackets, v.RxBytes, p.TxPackets, p.TxBytes, p.RxPackets, p.RxBytes)
}

// summary describes sorted sizes briefly: the smallest, the largest, the sum.
func summary(sizes []int) string {
	if len(sizes) == 0 {
		return "none"
	}
	var sum int
	for _, s := range sizes {
		sum += s
	}
	return fmt.Sprintf("%d..%d, %d B", sizes[0], sizes[len(sizes)-1], sum)
}
