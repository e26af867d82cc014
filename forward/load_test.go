package forward_test

// Load tests and benchmarks of connections through a pair of nodes on
// loopback (#15 items 1 and 3): connection churn through a
// local-to-tunnel forward, and the memory an idle connection relayed by
// the SOCKS5 proxy holds across both nodes.

import (
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/forward"
	"github.com/wgsidecar/sidecar/internal/leaktest"
	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/netstack"
	"github.com/wgsidecar/sidecar/proxy"
	"github.com/wgsidecar/sidecar/sidecartest"
)

// quiet is a logger for load runs: only errors.
func quiet() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// echoPair starts two nodes with an echo server on node 1's port 7.
func echoPair(tb testing.TB) []*sidecar.Node {
	tb.Helper()
	nodes := sidecartest.NewNodes(tb, 2, sidecartest.Options{Logger: quiet()})
	ln, err := nodes[1].Listen("tcp", ":7")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	testnet.Serve(tb, ln, testnet.EchoSmall)
	return nodes
}

// churnPair starts an echoPair and a local-to-tunnel forward on node 0 to
// the echo server ([TCPClientTunnel]'s code), and returns the forward's
// host address.
func churnPair(tb testing.TB, maxConns int) (string, []*sidecar.Node) {
	tb.Helper()
	nodes := echoPair(tb)
	f, err := forward.ListenTCP("127.0.0.1:0", "10.99.0.2:7", nodes[0], maxConns, quiet())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	return f.Addr().String(), nodes
}

// TestForwardChurn makes up to 20,000 sequential connections (at most
// 15 s) through a [TCPClientTunnel] forward: every one must succeed, and
// once they are closed (and TIME_WAIT over) the nodes must hold almost
// nothing per connection made. Connections closed under gVisor's default
// 60 s TIME_WAIT held ~9.5 kB each, and ports ran out after ~49.5k (#15).
func TestForwardChurn(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	addr, _ := churnPair(t, 0)
	if err := testnet.Exchange(addr); err != nil { // handshake, warm-up
		t.Fatal(err)
	}
	_, before := testnet.HeapAndStacks()
	deadline := time.Now().Add(15 * time.Second)
	n := 0
	for ; n < 20000 && time.Now().Before(deadline); n++ {
		if err := testnet.Exchange(addr); err != nil {
			t.Fatalf("connection %d failed: %v", n, err)
		}
	}
	if n < 1000 {
		t.Fatalf("only %d connections in 15 s", n)
	}
	// Let the last connections' TIME_WAIT end.
	time.Sleep(2 * netstack.TCPTimeWait)
	_, after := testnet.HeapAndStacks()
	perConn := float64(after-before) / float64(n)
	t.Logf("%d connections; %.0f B held per connection afterwards", n, perConn)
	if perConn > 1024 {
		t.Errorf("%.0f B held per closed connection; want under 1 KiB", perConn)
	}
}

// BenchmarkForwardChurn makes b.N sequential connections through a
// [TCPClientTunnel] forward (connect, one byte each way, close) and
// reports their rate, the bytes the nodes still hold per connection made
// right after the last one (connections in TIME_WAIT included) and the
// process's peak RSS. `-benchtime 100000x` is the 100,000.
func BenchmarkForwardChurn(b *testing.B) {
	addr, _ := churnPair(b, 0)
	if err := testnet.Exchange(addr); err != nil {
		b.Fatal(err)
	}
	_, before := testnet.HeapAndStacks()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if err := testnet.Exchange(addr); err != nil {
			b.Fatalf("connection %d failed: %v", i, err)
		}
	}
	b.StopTimer()
	_, after := testnet.HeapAndStacks()
	_, peak, _ := testnet.ProcMemory(0)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
	b.ReportMetric(float64(after-before)/float64(b.N), "B-held/conn")
	b.ReportMetric(float64(peak)/(1<<20), "peak-RSS-MB")
}

// idleSOCKS opens n connections through a SOCKS5 proxy on node 0 to the
// echo server on node 1, each having relayed one byte each way, and
// returns them.
func idleSOCKS(tb testing.TB, s *proxy.Server, n int) testnet.IdleConns {
	tb.Helper()
	return testnet.OpenIdleSOCKS5(tb, s.Addr().String(), netip.AddrPortFrom(sidecartest.Addr4(1), 7), n)
}

// socksPair starts an echoPair and a SOCKS5 proxy on node 0.
func socksPair(tb testing.TB, maxConns int) *proxy.Server {
	tb.Helper()
	nodes := echoPair(tb)
	s, err := proxy.ListenSOCKS5(proxy.SOCKS5Config{BindAddress: "127.0.0.1:0", MaxConns: maxConns, Logger: quiet()}, nodes[0])
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// TestSOCKS5ThousandIdleTunnelConns holds 1,000 connections open at once
// through a SOCKS5 proxy and the tunnel, each relaying, lets them idle
// (their relays back to waiting, stacks shrunk by collections), has every
// one relay again, then closes them all; the proxy counts them and gives
// every place back.
func TestSOCKS5ThousandIdleTunnelConns(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	s := socksPair(t, 2000)
	conns := idleSOCKS(t, s, 1000)
	if open, accepted := s.Conns(); open != 1000 || accepted != 1000 {
		t.Errorf("with 1,000 open: open %d, accepted %d", open, accepted)
	}
	time.Sleep(500 * time.Millisecond)
	testnet.HeapAndStacks() // collections: idle stacks shrink
	if err := conns.Echo(); err != nil {
		t.Errorf("after idling: %v", err)
	}
	conns.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		open, _ := s.Conns()
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open 20 s after their clients closed", open)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSOCKS5CloseEndsIdleTunnelConns: closing the proxy ends relays that
// sit idle (past their linger, the tunnel side waiting on the stack's
// notification, the host side on a small goroutine), and leaves no
// goroutine behind; their clients see the connections end.
func TestSOCKS5CloseEndsIdleTunnelConns(t *testing.T) {
	nodes := echoPair(t) // closed after the leak check, by Cleanup order
	t.Cleanup(leaktest.Check(t))
	s, err := proxy.ListenSOCKS5(proxy.SOCKS5Config{BindAddress: "127.0.0.1:0", Logger: quiet()}, nodes[0])
	if err != nil {
		t.Fatal(err)
	}
	conns := idleSOCKS(t, s, 20)
	defer conns.Close()
	time.Sleep(time.Second) // past the relays' linger: idle
	s.Close()
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
			t.Fatalf("connection %d: read %d bytes, %v after the proxy closed", i, n, err)
		}
	}
	if open, _ := s.Conns(); open != 0 {
		t.Errorf("%d connections counted open after Close", open)
	}
}

// BenchmarkSOCKS5IdleTunnelConnMemory reports the memory one idle
// connection relayed by the SOCKS5 proxy through the tunnel holds, in all
// of this process: the proxy's relay (two goroutines, two buffers), the
// dialing node's and the accepting node's TCP endpoints, and the test's
// own ends (the client socket; the server's goroutine, which the
// "goroutines" figure counts as the third). It is the heap and goroutine
// stacks in use with 2,000 such connections open less with 1,000, per
// connection: the first 1,000 bring the nodes' fixed buffers (WireGuard's,
// gVisor's) to their working size, so only what a connection adds counts.
func BenchmarkSOCKS5IdleTunnelConnMemory(b *testing.B) {
	const idle = 1000
	s := socksPair(b, 3*idle)
	idleSOCKS(b, s, 1).Close() // handshake, warm-up
	var total, heap, goroutines float64
	for b.Loop() {
		first := idleSOCKS(b, s, idle)
		time.Sleep(time.Second) // let ACKs settle and relays go back to waiting
		h0, t0 := testnet.HeapAndStacks()
		g0 := runtime.NumGoroutine()
		second := idleSOCKS(b, s, idle)
		time.Sleep(time.Second)
		h1, t1 := testnet.HeapAndStacks()
		total = float64(t1-t0) / idle
		heap = float64(h1-h0) / idle
		goroutines = float64(runtime.NumGoroutine()-g0) / idle
		first.Close()
		second.Close()
		for open, _ := s.Conns(); open > 0; open, _ = s.Conns() {
			time.Sleep(10 * time.Millisecond)
		}
		// The next round starts with the closed connections gone.
		time.Sleep(2 * netstack.TCPTimeWait)
	}
	b.ReportMetric(total, "B/conn")
	b.ReportMetric(heap, "heap-B/conn")
	b.ReportMetric(total-heap, "stack-B/conn")
	b.ReportMetric(goroutines, "goroutines/conn")
}
