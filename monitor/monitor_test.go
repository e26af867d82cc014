package monitor

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/internal/leaktest"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// recv returns the next event, failing t if none arrives in time.
func recv(t *testing.T, l *Listener) Event {
	t.Helper()
	select {
	case ev, ok := <-l.Events():
		if !ok {
			t.Fatal("events channel closed")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("timed out waiting for an event")
	}
	return Event{}
}

// expectNone fails t if an event arrives within a short while.
func expectNone(t *testing.T, l *Listener) {
	t.Helper()
	select {
	case ev := <-l.Events():
		t.Fatalf("unexpected event: %s", FormatLine(ev))
	case <-time.After(50 * time.Millisecond):
	}
}

func TestZeroMonitorInactive(t *testing.T) {
	var m Monitor
	if m.Active() {
		t.Fatal("zero Monitor is active")
	}
	pkt := udpPacket("10.0.0.1", 1, "10.0.0.2", 2, "x")
	m.Trace(FromPeer, pkt)
	m.Drop(FromPeer, Malformed, pkt)
	m.Conn(ConnRecord{Kind: "socks5"})
}

func TestTraceNoListenerDoesNotAllocate(t *testing.T) {
	var m Monitor
	pkt := udpPacket("10.0.0.1", 1, "10.0.0.2", 2, "x")
	allocs := testing.AllocsPerRun(1000, func() {
		m.Trace(FromPeer, pkt)
		m.Drop(ToPeer, NotLocal, pkt)
	})
	if allocs != 0 {
		t.Errorf("Trace+Drop without listeners: %v allocs, want 0", allocs)
	}
	// Also after a listener came and went.
	m.Listen(1, Filter{}).Close()
	allocs = testing.AllocsPerRun(1000, func() { m.Trace(FromPeer, pkt) })
	if allocs != 0 {
		t.Errorf("Trace after Close: %v allocs, want 0", allocs)
	}
}

func TestTraceFilteredOutDoesNotAllocate(t *testing.T) {
	check := leaktest.Check(t)
	defer check()
	var m Monitor
	l := m.Listen(4, Filter{Kinds: []Kind{KindConn}, Addr: netip.MustParsePrefix("192.0.2.0/24")})
	defer l.Close()
	pkt := udpPacket("10.0.0.1", 1, "10.0.0.2", 2, "x")
	if allocs := testing.AllocsPerRun(1000, func() { m.Trace(FromPeer, pkt) }); allocs != 0 {
		t.Errorf("Trace rejected by every filter: %v allocs, want 0", allocs)
	}
	expectNone(t, l)
}

func TestDeliveryCopiesPacket(t *testing.T) {
	check := leaktest.Check(t)
	defer check()
	var m Monitor
	l := m.Listen(8, Filter{})
	defer l.Close()
	if !m.Active() {
		t.Fatal("not active with a listener")
	}
	pkt := tcpPacket("10.0.0.1", 2000, "10.0.0.2", 80, header.TCPFlagSyn, "")
	m.Trace(FromPeer, pkt)
	pkt[0] = 0 // the caller reuses its buffer
	ev := recv(t, l)
	if ev.Kind != KindTrace || ev.Point != FromPeer || ev.Packet[0] != 0x45 || ev.Time.IsZero() {
		t.Fatalf("got %+v", ev)
	}
	m.Drop(ToPeer, NoPeer, pkt)
	if ev := recv(t, l); ev.Kind != KindDrop || ev.Reason != NoPeer || ev.Point != ToPeer {
		t.Fatalf("got %+v", ev)
	}
	rec := ConnRecord{Kind: "tcp-forward", From: "10.0.0.1:5", To: "127.0.0.1:80", Verdict: "ok", BytesIn: 3}
	m.Conn(rec)
	if ev := recv(t, l); ev.Kind != KindConn || *ev.Conn != rec {
		t.Fatalf("got %+v", ev)
	}
}

func TestCloseDeactivates(t *testing.T) {
	check := leaktest.Check(t)
	defer check()
	var m Monitor
	a := m.Listen(4, Filter{})
	b := m.Listen(4, Filter{})
	a.Close()
	if !m.Active() {
		t.Fatal("inactive with one listener left")
	}
	b.Close()
	b.Close() // idempotent
	if m.Active() {
		t.Fatal("active after all listeners closed")
	}
	if _, ok := <-a.Events(); ok {
		t.Fatal("events channel open after Close")
	}
	m.Trace(FromPeer, []byte{0x45}) // no one to deliver to, must not panic
}

func TestFilters(t *testing.T) {
	check := leaktest.Check(t)
	defer check()
	pfx := netip.MustParsePrefix
	fromA := tcpPacket("10.0.0.1", 1000, "10.0.1.1", 80, header.TCPFlagSyn, "")     // A -> B
	fromB := tcpPacket("10.0.1.1", 80, "10.0.0.1", 1000, header.TCPFlagAck, "")     // B -> A
	other := udpPacket("192.0.2.1", 53, "192.0.2.2", 53, "x")                       // unrelated
	v6 := tcpPacket("fd00::1", 1000, "fd00::2", 80, header.TCPFlagSyn, "")          // v6
	conn := ConnRecord{Kind: "socks5", From: "10.0.0.1:999", To: "example.com:443"} // A -> name

	events := []namedSend{
		{"trace A->B", func(m *Monitor) { m.Trace(FromPeer, fromA) }},
		{"trace B->A", func(m *Monitor) { m.Trace(ToPeer, fromB) }},
		{"drop other", func(m *Monitor) { m.Drop(FromPeer, NoListener, other) }},
		{"trace v6", func(m *Monitor) { m.Trace(FromPeer, v6) }},
		{"conn A", func(m *Monitor) { m.Conn(conn) }},
		{"trace garbage", func(m *Monitor) { m.Trace(FromPeer, []byte{1, 2, 3}) }},
	}
	tests := []struct {
		name   string
		filter Filter
		want   []string
	}{
		{"all", Filter{}, []string{"trace A->B", "trace B->A", "drop other", "trace v6", "conn A", "trace garbage"}},
		{"kind drop", Filter{Kinds: []Kind{KindDrop}}, []string{"drop other"}},
		{"kind trace+conn", Filter{Kinds: []Kind{KindTrace, KindConn}}, []string{"trace A->B", "trace B->A", "trace v6", "conn A", "trace garbage"}},
		{"src A", Filter{Src: pfx("10.0.0.1/32")}, []string{"trace A->B", "conn A"}},
		{"dst A", Filter{Dst: pfx("10.0.0.0/24")}, []string{"trace B->A"}},
		{"addr A", Filter{Addr: pfx("10.0.0.1/32")}, []string{"trace A->B", "trace B->A", "conn A"}},
		{"addr v6", Filter{Addr: pfx("fd00::/64")}, []string{"trace v6"}},
		{"src+dst", Filter{Src: pfx("10.0.0.0/16"), Dst: pfx("10.0.1.0/24")}, []string{"trace A->B"}},
		{"kind+addr", Filter{Kinds: []Kind{KindConn}, Addr: pfx("10.0.0.0/8")}, []string{"conn A"}},
		{"none", Filter{Addr: pfx("203.0.113.0/24")}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m Monitor
			l := m.Listen(len(events)+1, tt.filter)
			defer l.Close()
			for _, e := range events {
				e.send(&m)
			}
			var got []string
			for range tt.want {
				got = append(got, describe(recv(t, l)))
			}
			expectNone(t, l)
			var want []string
			for _, w := range tt.want {
				want = append(want, describeWant(t, w, events))
			}
			if len(got) != len(want) {
				t.Fatalf("got %q, want %q", got, want)
			}
			for i := range got {
				if got[i] != want[i] {
					t.Errorf("event %d: got %q, want %q", i, got[i], want[i])
				}
			}
		})
	}
}

// describe reduces an event to its kind and summary for comparison.
func describe(ev Event) string {
	ev.Time = time.Time{}
	return FormatLine(ev)
}

type namedSend struct {
	name string
	send func(m *Monitor)
}

// describeWant renders the event named w as a catch-all listener would
// receive it.
func describeWant(t *testing.T, w string, events []namedSend) string {
	t.Helper()
	var m Monitor
	l := m.Listen(1, Filter{})
	defer l.Close()
	for _, e := range events {
		if e.name == w {
			e.send(&m)
			return describe(recv(t, l))
		}
	}
	t.Fatalf("no event named %q", w)
	return ""
}

func TestSlowListenerCountsLost(t *testing.T) {
	check := leaktest.Check(t)
	defer check()
	var m Monitor
	const queue, sent = 4, 1000
	l := m.Listen(queue, Filter{})
	defer l.Close()
	pkt := udpPacket("10.0.0.1", 1, "10.0.0.2", 2, "x")
	// Let the delivery goroutine take the first event in hand, so the
	// counts below are exact: queue events wait, plus the one in hand.
	m.Trace(FromPeer, pkt)
	waitQueued(t, l, 0)
	for range sent - 1 {
		m.Trace(FromPeer, pkt)
	}
	var delivered, lost uint64
	var lostEvents int
	for delivered+lost < sent {
		ev := recv(t, l)
		switch ev.Kind {
		case KindTrace:
			if lostEvents > 0 {
				t.Fatal("trace after the lost report")
			}
			delivered++
		case KindLost:
			lostEvents++
			lost += ev.Lost
		}
	}
	if delivered != queue+1 || lostEvents != 1 || lost != sent-queue-1 {
		t.Errorf("delivered %d, %d lost reports totalling %d; want %d delivered, 1 report of %d",
			delivered, lostEvents, lost, queue+1, sent-queue-1)
	}
	if c := m.Counts(); c.Lost != lost || c.Listeners != 1 {
		t.Errorf("Counts() = %+v; want Lost %d with 1 listener", c, lost)
	}
	expectNone(t, l)

	// With room again, events flow and nothing more is reported lost.
	m.Trace(FromPeer, pkt)
	if ev := recv(t, l); ev.Kind != KindTrace {
		t.Fatalf("got %s, want a trace", FormatLine(ev))
	}
}

// waitQueued waits until n events wait in l's queue.
func waitQueued(t *testing.T, l *Listener, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		l.mu.Lock()
		c := l.count
		l.mu.Unlock()
		if c == n {
			return
		}
	}
	t.Fatalf("queue never reached %d events", n)
}

func TestLostReportedBeforeNextEvent(t *testing.T) {
	check := leaktest.Check(t)
	defer check()
	var m Monitor
	l := m.Listen(1, Filter{})
	defer l.Close()
	l.mu.Lock() // pretend 5 events were lost while the queue was full
	l.lost = 5
	l.mu.Unlock()
	m.Trace(FromPeer, []byte{0x45})
	if ev := recv(t, l); ev.Kind != KindLost || ev.Lost != 5 {
		t.Fatalf("first event %s, want lost 5", FormatLine(ev))
	}
	if ev := recv(t, l); ev.Kind != KindTrace {
		t.Fatalf("second event %s, want the trace", FormatLine(ev))
	}
}

func TestConcurrentTraceWhileListenersChange(t *testing.T) {
	check := leaktest.Check(t)
	defer check()
	var m Monitor
	pkt := tcpPacket("10.0.0.1", 2000, "10.0.0.2", 80, header.TCPFlagSyn, "")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sent atomic.Uint64
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				m.Trace(FromPeer, pkt)
				m.Drop(FromNetwork, QueueFull, pkt)
				m.Conn(ConnRecord{Kind: "udp-forward", From: "10.0.0.1:1"})
				sent.Add(3)
			}
		})
	}
	// A steady listener that reads everything and checks accounting.
	steady := m.Listen(16, Filter{})
	var got atomic.Uint64
	var readers sync.WaitGroup
	readers.Go(func() {
		for ev := range steady.Events() {
			if ev.Kind == KindLost {
				got.Add(ev.Lost)
			} else {
				got.Add(1)
			}
		}
	})
	for i := range 200 {
		l := m.Listen(1+i%8, Filter{Kinds: []Kind{KindTrace}})
		if i%2 == 0 {
			readers.Go(func() {
				for range l.Events() {
				}
			})
		}
		time.Sleep(100 * time.Microsecond)
		l.Close()
	}
	close(stop)
	wg.Wait()
	steady.Close()
	readers.Wait()
	if m.Active() {
		t.Error("active after all listeners closed")
	}
	if got.Load() == 0 {
		t.Error("steady listener saw nothing")
	}
}

func TestCountsWithoutListeners(t *testing.T) {
	var m Monitor
	m.DropConn(FromApp, ConnLimit, ConnRecord{Kind: "socks5"})
	m.DropConn(FromApp, ConnLimit, ConnRecord{Kind: "socks5"})
	m.DropConn(FromApp, PolicyRefused, ConnRecord{Kind: "http"})
	m.Conn(ConnRecord{Kind: "tcp-forward", Verdict: "error: connection refused"})
	m.Conn(ConnRecord{Kind: "tcp-forward", Verdict: "ok"})
	c := m.Counts()
	if c.Refused[ConnLimit] != 2 || c.Refused[PolicyRefused] != 1 || c.Refused[NoPeer] != 0 || c.ConnErrors != 1 || c.Listeners != 0 {
		t.Errorf("Counts() = %+v", c)
	}
	var nilMon *Monitor
	nilMon.DropConn(FromApp, ConnLimit, ConnRecord{}) // no panic
	nilMon.Conn(ConnRecord{Verdict: "error"})
}

func BenchmarkTraceNoListener(b *testing.B) {
	var m Monitor
	pkt := tcpPacket("10.0.0.1", 2000, "10.0.0.2", 80, header.TCPFlagSyn, "")
	b.ReportAllocs()
	for b.Loop() {
		m.Trace(FromPeer, pkt)
	}
}

func BenchmarkTraceOneListener(b *testing.B) {
	var m Monitor
	l := m.Listen(1024, Filter{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range l.Events() {
		}
	}()
	pkt := tcpPacket("10.0.0.1", 2000, "10.0.0.2", 80, header.TCPFlagSyn, "")
	b.ReportAllocs()
	for b.Loop() {
		m.Trace(FromPeer, pkt)
	}
	b.StopTimer()
	l.Close()
	<-done
}
