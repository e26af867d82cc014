package ipfix

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/internal/leaktest"
)

// testRecords makes n records of window w, IPv4 and IPv6 alternating in
// runs, both directions.
func testRecords(n int, w time.Time) []Record {
	recs := make([]Record, n)
	for i := range recs {
		src := netip.AddrFrom4([4]byte{10, 99, byte(i >> 8), byte(i)})
		dst := netip.MustParseAddr("10.99.255.1")
		if i/7%2 == 1 {
			src = netip.AddrFrom16([16]byte{0xfd, 15: byte(i)})
			dst = netip.MustParseAddr("fd00::1")
		}
		recs[i] = Record{
			Start: w, End: w.Add(5*time.Second - time.Nanosecond),
			Src: netip.AddrPortFrom(src, uint16(1024+i)), Dst: netip.AddrPortFrom(dst, 443),
			Proto: 6, Octets: uint64(1000 * (i + 1)), Packets: uint64(i + 1),
			Direction: uint8(i % 2), ObservationPoint: uint32(1 + i%4),
		}
	}
	return recs
}

func wireRecords(recs []Record) []Record {
	out := make([]Record, len(recs))
	for i, r := range recs {
		out[i] = onWire(r)
	}
	return out
}

// udpCollector receives datagrams on a loopback socket and decodes them.
type udpCollector struct {
	pc  net.PacketConn
	dec *decoder
}

func listenUDP(t *testing.T, addr string) *udpCollector {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return &udpCollector{pc: pc, dec: newDecoder()}
}

// read reads n messages.
func (c *udpCollector) read(t *testing.T, n int) []decoded {
	t.Helper()
	var out []decoded
	buf := make([]byte, 65536)
	for range n {
		c.pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		k, _, err := c.pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", len(out), n, err)
		}
		m, err := c.dec.decode(buf[:k])
		if err != nil {
			t.Fatalf("message %d: %v", len(out), err)
		}
		out = append(out, m)
	}
	return out
}

// checkNoMore checks that nothing else arrives within a short while.
func (c *udpCollector) checkNoMore(t *testing.T) {
	t.Helper()
	c.pc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, _, err := c.pc.ReadFrom(make([]byte, 65536)); err == nil {
		t.Fatalf("an unexpected message of %d bytes", n)
	}
}

// split sorts messages into the template count and data records, checking
// that sequence numbers run from seq on without a gap.
func split(t *testing.T, msgs []decoded, seq uint32) (templates int, recs []Record, next uint32) {
	t.Helper()
	for i, m := range msgs {
		if m.seq != seq {
			t.Fatalf("message %d: sequence number %d, want %d", i, m.seq, seq)
		}
		if m.domain != 99 {
			t.Fatalf("message %d: observation domain %d", i, m.domain)
		}
		templates += m.templates
		recs = append(recs, m.records...)
		seq += uint32(len(m.records))
	}
	return templates, recs, seq
}

// testClock is a settable clock.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestExportUDP(t *testing.T) {
	defer leaktest.Check(t)()
	col := listenUDP(t, "127.0.0.1:0")
	clock := &testClock{now: time.Unix(1_800_000_000, 0)}
	e, err := New(Config{Collector: col.pc.LocalAddr().String(), ObservationDomain: 99, TemplateRefresh: time.Minute, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()

	// 100 records of 50 or 74 bytes: the templates' message and four or
	// five data messages of at most 1,400 bytes.
	recs := testRecords(100, clock.Now())
	if err := e.Export(ctx, recs); err != nil {
		t.Fatal(err)
	}
	st := e.Stats()
	msgs := col.read(t, int(st.Messages))
	col.checkNoMore(t)
	if msgs[0].templates != 2 || len(msgs[0].records) != 0 {
		t.Fatalf("first message: %d templates, %d records; want the templates alone", msgs[0].templates, len(msgs[0].records))
	}
	tmpl, got, seq := split(t, msgs, 0)
	if tmpl != 2 || st.Records != 100 || st.Errors != 0 {
		t.Fatalf("%d templates sent, stats %+v", tmpl, st)
	}
	checkRecords(t, got, wireRecords(recs))

	// Within TemplateRefresh: data only, the sequence numbers going on.
	clock.Add(59 * time.Second)
	recs = testRecords(3, clock.Now())
	if err := e.Export(ctx, recs); err != nil {
		t.Fatal(err)
	}
	tmpl, got, seq = split(t, col.read(t, 1), seq)
	if tmpl != 0 {
		t.Fatalf("templates sent again before TemplateRefresh")
	}
	checkRecords(t, got, wireRecords(recs))

	// After it: templates again, first.
	clock.Add(time.Second)
	if err := e.Export(ctx, recs); err != nil {
		t.Fatal(err)
	}
	msgs = col.read(t, 2)
	if msgs[0].templates != 2 || len(msgs[0].records) != 0 {
		t.Fatalf("after TemplateRefresh: first message has %d templates, %d records", msgs[0].templates, len(msgs[0].records))
	}
	if _, got, _ = split(t, msgs, seq); len(got) != 3 {
		t.Fatalf("%d records", len(got))
	}
	// Nothing to send sends nothing.
	if err := e.Export(ctx, nil); err != nil {
		t.Fatal(err)
	}
	col.checkNoMore(t)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Export(ctx, recs); !errors.Is(err, ErrClosed) {
		t.Fatalf("Export after Close: %v", err)
	}
}

// TestExportUDPCollectorRestart stops the collector, exports while it is
// down, and starts it again on the same port: the next export arrives
// whole, after the templates, and its sequence number shows what was lost.
func TestExportUDPCollectorRestart(t *testing.T) {
	defer leaktest.Check(t)()
	col := listenUDP(t, "127.0.0.1:0")
	addr := col.pc.LocalAddr().String()
	e, err := New(Config{Collector: addr, ObservationDomain: 99})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	w := time.Unix(1_800_000_000, 0)

	if err := e.Export(ctx, testRecords(10, w)); err != nil {
		t.Fatal(err)
	}
	_, _, seq := split(t, col.read(t, int(e.Stats().Messages)), 0)
	col.pc.Close()

	// Down: the datagram goes nowhere, and the kernel hears of it (ICMP
	// port unreachable on loopback).
	lost := testRecords(20, w.Add(5*time.Second))
	e.Export(ctx, lost)
	time.Sleep(50 * time.Millisecond)

	col = listenUDP(t, addr)
	recs := testRecords(30, w.Add(10*time.Second))
	before := e.Stats().Messages
	if err := e.Export(ctx, recs); err != nil {
		t.Fatalf("export after the collector came back: %v", err)
	}
	msgs := col.read(t, int(e.Stats().Messages-before))
	if msgs[0].templates != 2 {
		t.Fatalf("the collector that came back got no templates first")
	}
	_, got, _ := split(t, msgs, seq+20)
	checkRecords(t, got, wireRecords(recs))
	col.checkNoMore(t)
	// The lost datagram left before the kernel knew: no error; the
	// retry sent what followed.
	if st := e.Stats(); st.Errors != 0 || st.Records != 10+20+30 {
		t.Errorf("stats %+v", st)
	}
}

// tcpCollector accepts connections and decodes each one's messages.
type tcpCollector struct {
	ln      net.Listener
	conns   chan []decoded // each connection's messages, when it ends
	wg      sync.WaitGroup
	mu      sync.Mutex
	open    []net.Conn
	records atomic.Int64 // data records read so far
}

func listenTCP(t *testing.T) *tcpCollector {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &tcpCollector{ln: ln, conns: make(chan []decoded, 10)}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.mu.Lock()
			c.open = append(c.open, conn)
			c.mu.Unlock()
			c.wg.Add(1)
			go c.serve(t, conn)
		}
	}()
	return c
}

// closeConns ends the open connections.
func (c *tcpCollector) closeConns() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.open {
		conn.Close()
	}
	c.open = nil
}

// stop closes the listener and waits for the connections to end.
func (c *tcpCollector) stop() {
	c.ln.Close()
	c.wg.Wait()
}

// waitRecords waits until n data records have been read in all.
func (c *tcpCollector) waitRecords(t *testing.T, n int64) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); c.records.Load() < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the collector read %d records, want %d", c.records.Load(), n)
		}
	}
}

// serve reads messages until the peer closes or an end is asked.
func (c *tcpCollector) serve(t *testing.T, conn net.Conn) {
	defer c.wg.Done()
	defer conn.Close()
	dec := newDecoder()
	var msgs []decoded
	defer func() { c.conns <- msgs }()
	for {
		var h [4]byte
		if _, err := io.ReadFull(conn, h[:]); err != nil {
			return
		}
		b := make([]byte, binary.BigEndian.Uint16(h[2:]))
		copy(b, h[:])
		if _, err := io.ReadFull(conn, b[4:]); err != nil {
			t.Errorf("a message cut short: %v", err)
			return
		}
		m, err := dec.decode(b)
		if err != nil {
			t.Errorf("message %d: %v", len(msgs), err)
			return
		}
		msgs = append(msgs, m)
		c.records.Add(int64(len(m.records)))
	}
}

func TestExportTCP(t *testing.T) {
	defer leaktest.Check(t)()
	col := listenTCP(t)
	defer col.stop()
	clock := &testClock{now: time.Unix(1_800_000_000, 0)}
	e, err := New(Config{Collector: col.ln.Addr().String(), Transport: "tcp", ObservationDomain: 99, TemplateRefresh: time.Second, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var want []Record
	for i := range 3 {
		recs := testRecords(2000, clock.Now())
		want = append(want, wireRecords(recs)...)
		if err := e.Export(ctx, recs); err != nil {
			t.Fatalf("export %d: %v", i, err)
		}
		clock.Add(time.Minute) // TemplateRefresh is for UDP only
	}

	// The collector ends the connection: the exporter finds out at a
	// write (the first may still succeed) and connects again.
	col.waitRecords(t, 6000)
	col.closeConns()
	first := <-col.conns
	tmpl, got, _ := split(t, first, 0)
	if tmpl != 2 || first[0].templates != 2 {
		t.Fatalf("first connection: %d templates, %d in its first message; want 2, once, first", tmpl, first[0].templates)
	}
	checkRecords(t, got, want)

	recs := testRecords(5, clock.Now())
	for i := 0; e.Stats().Errors == 0 && i < 100; i++ {
		e.Export(ctx, recs)
		time.Sleep(10 * time.Millisecond)
	}
	if e.Stats().Errors == 0 {
		t.Fatal("writes to the closed connection never failed")
	}
	if err := e.Export(ctx, recs); err != nil {
		t.Fatalf("export on a new connection: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	second := <-col.conns
	tmpl, got, _ = split(t, second, 0) // a new session counts from 0
	if tmpl != 2 || second[0].templates != 2 {
		t.Fatalf("second connection: %d templates; want 2, first", tmpl)
	}
	checkRecords(t, got, wireRecords(recs))
}

func TestExportTCPCollectorDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	e, err := New(Config{Collector: addr, Transport: "tcp"})
	if err != nil {
		t.Fatalf("New with the collector down: %v (it connects at the first export)", err)
	}
	defer e.Close()
	if err := e.Export(context.Background(), testRecords(1, time.Now())); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("Export to a closed port: %v", err)
	}
	if st := e.Stats(); st.Errors != 1 || st.Messages != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		// A name the resolver refuses without asking a DNS server (a label
		// may not end in '-'), so that the test sends nothing off the
		// machine.
		{Config{Collector: "no-such-collector-:4739"}, "no-such-collector-"},
		{Config{Collector: "127.0.0.1:0"}, "bad port"},
		{Config{Collector: "127.0.0.1"}, "missing port"},
		{Config{Collector: "127.0.0.1:4739", Transport: "sctp"}, "transport"},
		{Config{Collector: "127.0.0.1:4739", MaxMessageSize: 100}, "message size"},
	} {
		e, err := New(tc.cfg)
		if err == nil {
			e.Close()
			t.Errorf("New(%+v) succeeded", tc.cfg)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v): %v, want it to mention %q", tc.cfg, err, tc.want)
		}
	}
	a, err := Resolve(context.Background(), "localhost:4739")
	if err != nil || !a.Addr().IsLoopback() || a.Port() != 4739 {
		t.Errorf("Resolve(localhost:4739) = %v, %v", a, err)
	}
}

// BenchmarkExport sends one window of 2,000 records (1,000 flows, both
// directions) to a collector socket on loopback.
func BenchmarkExport(b *testing.B) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	uc := pc.(*net.UDPConn)
	uc.SetReadBuffer(8 << 20)
	go func() {
		buf := make([]byte, 65536)
		for {
			// Read, not ReadFrom: it allocates no address per datagram,
			// so that allocs/op are the exporter's.
			if _, err := uc.Read(buf); err != nil {
				return
			}
		}
	}()
	e, err := New(Config{Collector: pc.LocalAddr().String()})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	recs := testRecords(2000, time.Now())
	ctx := context.Background()
	e.Export(ctx, recs) // the buffers grow once
	b.ReportAllocs()
	for b.Loop() {
		if err := e.Export(ctx, recs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncode is BenchmarkExport without the sockets.
func BenchmarkEncode(b *testing.B) {
	recs := testRecords(2000, time.Now())
	e := encoder{max: DefaultUDPMessageSize}
	b.ReportAllocs()
	for b.Loop() {
		e.reset(time.Now())
		for i := range recs {
			e.add(&recs[i])
		}
		e.finish()
	}
}
