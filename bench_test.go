package sidecar_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/forward"
	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/netlog"
	"github.com/wgsidecar/sidecar/relay"
	"github.com/wgsidecar/sidecar/sidecartest"
	"github.com/wgsidecar/sidecar/wgconf"
)

// The comparative benchmarks below run every case on three implementations
// in the same run, as sub-benchmarks named impl=sidecar (a pair of our
// nodes), impl=stock (the same pair built on wireguard-go's tun/netstack)
// and impl=kernel (the host's TCP and UDP on loopback, no tunnel: the
// ceiling).
// Piped through ./internal/benchratio they print a table of medians and the
// ratio of ours to stock:
//
//	go test -run '^$' -bench . -benchtime 3s -count 5 . | go run ./internal/benchratio
//
// .ci/run runs them with the default -benchtime (about a second per case,
// a few seconds with set-up): the figures are printed, nothing is asserted
// about them.

// BenchmarkBulkTCP moves a single TCP stream between two nodes over
// WireGuard on loopback, in each direction: dir=send writes from the
// dialing node, dir=recv from the accepting one. The figure to read is MB/s
// (bytes of TCP payload delivered); cpu-s/GB and minflt/GB are the process's
// CPU time (user+sys, both nodes) and minor page faults per GB moved.
//
//	go test -run '^$' -bench BulkTCP -benchtime 4s .
func BenchmarkBulkTCP(b *testing.B) {
	for _, dir := range []string{"send", "recv"} {
		b.Run("dir="+dir, func(b *testing.B) {
			kinds := benchKinds(b)
			if dir == "send" {
				// "sidecar-flowlog" has flow statistics on at both
				// layers of both nodes. It runs first, in the cold
				// process (heap and page tables still growing), so
				// that its cost is overstated rather than hidden and
				// the ours/stock pair both run warm.
				kinds = append([]string{"sidecar-flowlog"}, kinds...)
			}
			for _, kind := range kinds {
				b.Run("impl="+kind, func(b *testing.B) {
					bn := newBenchNet(b, kind)
					benchBulk(b, bn.serve(b), bn.dial, 1, dir == "recv")
				})
			}
		})
	}
}

// BenchmarkBulkTCP4 moves four TCP streams at once from one node to the
// other; MB/s is their sum.
//
//	go test -run '^$' -bench BulkTCP4 -benchtime 4s .
func BenchmarkBulkTCP4(b *testing.B) {
	for _, kind := range benchKinds(b) {
		b.Run("impl="+kind, func(b *testing.B) {
			bn := newBenchNet(b, kind)
			benchBulk(b, bn.serve(b), bn.dial, 4, false)
		})
	}
}

// bulkChunk is the unit of the bulk benchmarks: one op moves 1 MiB.
const bulkChunk = 1 << 20

// benchBulk opens streams connections and moves b.N chunks of 1 MiB over
// them in all (split evenly), from the dialer to the acceptor or, with
// reverse, from the acceptor to the dialer. The clock stops when the
// readers have read everything.
func benchBulk(b *testing.B, ln net.Listener, dial func() (net.Conn, error), streams int, reverse bool) {
	const warmup = 8 // chunks per stream: handshake and window growth
	var conns []net.Conn
	accepted := make(chan net.Conn, streams)
	go func() {
		for range streams {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	for range streams {
		c, err := dial()
		if err != nil {
			b.Fatal(err)
		}
		a, ok := <-accepted
		if !ok {
			b.Fatal("accept failed")
		}
		if reverse {
			c, a = a, c
		}
		conns = append(conns, c, a) // writer, reader
	}
	// Each reader reports how many bytes it read until EOF; each writer
	// waits for its turn on start after the warm-up.
	got := make(chan int64, streams)
	var warm sync.WaitGroup
	start := make(chan struct{})
	share := func(i int) int { return b.N/streams + btoi(i < b.N%streams) }
	for i := range streams {
		w, r := conns[2*i], conns[2*i+1]
		go func() {
			n, _ := io.CopyBuffer(io.Discard, r, make([]byte, 256<<10))
			r.Close()
			got <- n
		}()
		warm.Add(1)
		go func() {
			defer w.Close()
			buf := make([]byte, bulkChunk)
			for range warmup {
				if _, err := w.Write(buf); err != nil {
					warm.Done()
					return
				}
			}
			warm.Done()
			<-start
			for range share(i) {
				if _, err := w.Write(buf); err != nil {
					return
				}
			}
		}()
	}
	warm.Wait()
	b.SetBytes(bulkChunk)
	b.ReportAllocs()
	b.ResetTimer()
	u0 := readUsage()
	close(start)
	var n int64
	for range streams {
		n += <-got
	}
	b.StopTimer()
	reportPerGB(b, u0, int64(b.N)*bulkChunk)
	if want := int64(b.N+warmup*streams) * bulkChunk; n != want {
		b.Fatalf("receivers got %d bytes; want %d", n, want)
	}
}

func btoi(v bool) int {
	if v {
		return 1
	}
	return 0
}

// usage is what getrusage says the whole process has used so far.
type usage struct {
	cpu    time.Duration // user + system
	minflt int64         // minor page faults
}

func readUsage() usage {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return usage{}
	}
	return usage{
		cpu:    time.Duration(ru.Utime.Nano()+ru.Stime.Nano()) + childCPU(),
		minflt: int64(ru.Minflt),
	}
}

// reportPerGB reports the CPU seconds and minor page faults the process
// spent since u0, per GB (10^9 bytes) of the given payload.
func reportPerGB(b *testing.B, u0 usage, bytes int64) {
	if bytes <= 0 {
		return
	}
	u := readUsage()
	gb := float64(bytes) / 1e9
	b.ReportMetric((u.cpu-u0.cpu).Seconds()/gb, "cpu-s/GB")
	b.ReportMetric(float64(u.minflt-u0.minflt)/gb, "minflt/GB")
}

// stockPair builds two nodes from wireguard-go's tun/netstack package, the
// baseline the benchmarks compare against, peered over loopback.
func stockPair(b *testing.B) (*netstack.Net, *netstack.Net) {
	var nets [2]*netstack.Net
	var devs [2]*device.Device
	var keys [2]wgconf.PrivateKey
	for i := range 2 {
		k, err := wgconf.GeneratePrivateKey()
		if err != nil {
			b.Fatal(err)
		}
		keys[i] = k
		addr := netip.AddrFrom4([4]byte{10, 98, 0, byte(i + 1)})
		tunDev, tnet, err := netstack.CreateNetTUN([]netip.Addr{addr}, nil, 1420)
		if err != nil {
			b.Fatal(err)
		}
		dev := device.NewDevice(tunDev, conn.NewDefaultBind(), device.NewLogger(device.LogLevelError, ""))
		if err := dev.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=0\n", k.Hex())); err != nil {
			b.Fatal(err)
		}
		if err := dev.Up(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(dev.Close)
		nets[i], devs[i] = tnet, dev
	}
	for i := range 2 {
		j := 1 - i
		port := listenPort(b, devs[j])
		err := devs[i].IpcSet(fmt.Sprintf("public_key=%s\nallowed_ip=10.98.0.%d/32\nendpoint=127.0.0.1:%d\n",
			keys[j].Public().Hex(), j+1, port))
		if err != nil {
			b.Fatal(err)
		}
	}
	return nets[0], nets[1]
}

func listenPort(b *testing.B, dev *device.Device) int {
	text, err := dev.IpcGet()
	if err != nil {
		b.Fatal(err)
	}
	var port int
	for _, line := range strings.Split(text, "\n") {
		if _, err := fmt.Sscanf(line, "listen_port=%d", &port); err == nil {
			return port
		}
	}
	b.Fatal("no listen_port")
	return 0
}

// BenchmarkForward measures a local-to-tunnel TCP forward on node a to a
// listener on node b: "bulk" moves one stream (MB/s), "connect" opens a
// connection, exchanges 64 bytes each way and closes it (ns per
// connection).
//
//	go test -run '^$' -bench Forward -benchtime 3s .
func BenchmarkForward(b *testing.B) {
	a, z := sidecartest.NewPair(b)
	ln, err := z.Listen("tcp", ":5202")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	fwd, err := forward.ListenTCP("127.0.0.1:0", "10.99.0.2:5202", a, 0, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer fwd.Close()
	dial := func() (net.Conn, error) { return net.Dial("tcp", fwd.Addr().String()) }
	b.Run("bulk", func(b *testing.B) { benchBulk(b, ln, dial, 1, false) })
	// Served once the bulk case, which accepts on ln itself, is done; for
	// the whole of connect, whose function runs again for each b.N.
	testnet.Serve(b, ln, echo64)
	b.Run("connect", func(b *testing.B) { benchConnect(b, dial) })
}

// BenchmarkForwardBothEnds moves one TCP stream the way a user's two
// apps talk through two sidecars: host TCP into a local-to-tunnel forward
// ([TCPClientTunnel]) on one node, through the tunnel, out of a
// tunnel-to-local forward ([TCPServerTunnel]) on the other, to a host TCP
// server. impl=stock relays the same way over wireguard-go's tun/netstack
// pair (our forward on its dialer, an accept-and-relay loop on its
// listener); impl=kernel is the host client talking to the host server
// directly, the ceiling; impl=wggo-kernel (root only) the two apps in
// namespaces over wireguard-go interfaces, which needs no forwards.
//
//	go test -run '^$' -bench ForwardBothEnds -benchtime 3s .
func BenchmarkForwardBothEnds(b *testing.B) {
	for _, kind := range benchKinds(b) {
		b.Run("impl="+kind, func(b *testing.B) {
			if kind == wggoKind {
				// Root runs no forwards: the apps talk over the
				// wireguard-go interfaces directly.
				bn := newBenchNet(b, kind)
				benchBulk(b, bn.serve(b), bn.dial, 1, false)
				return
			}
			server, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer server.Close()
			entry := forwardPath(b, kind, server.Addr().String())
			dial := func() (net.Conn, error) { return net.Dial("tcp", entry) }
			benchBulk(b, server, dial, 1, false)
		})
	}
}

// forwardPath sets up kind's path to the host server at target and returns
// the host address a client connects to.
func forwardPath(b *testing.B, kind, target string) string {
	switch kind {
	case "sidecar", ownKind:
		entry := fmt.Sprintf("127.0.0.1:%d", testnet.FreePort(b, "tcp"))
		opts := benchNodeOptions(kind)
		opts.Configure = func(i int, cfg *wgconf.Config) {
			if i == 0 {
				cfg.TCPClientTunnels = []wgconf.TCPClientTunnel{{BindAddress: entry, Target: "10.99.0.2:5400"}}
			} else {
				cfg.TCPServerTunnels = []wgconf.TCPServerTunnel{{ListenPort: 5400, Target: target}}
			}
		}
		sidecartest.NewNodes(b, 2, opts)
		return entry
	case "stock":
		a, z := stockPair(b)
		ln, err := z.ListenTCPAddrPort(netip.MustParseAddrPort("10.98.0.2:5400"))
		if err != nil {
			b.Fatal(err)
		}
		lim := relay.NewLimiter(relay.DefaultMaxConns)
		b.Cleanup(lim.Close)
		b.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				up, err := net.Dial("tcp", target)
				if err != nil {
					c.Close()
					continue
				}
				relay.Go(lim, c, up, nil, func(int64, int64) {})
			}
		}()
		fwd, err := forward.ListenTCP("127.0.0.1:0", "10.98.0.2:5400", stockDialer{a}, 0, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { fwd.Close() })
		return fwd.Addr().String()
	case "kernel":
		return target
	}
	b.Fatalf("unknown implementation %q", kind)
	return ""
}

// stockDialer is the relay.Dialer face of a stock tun/netstack node, for
// our forward in the stock row; it dials addresses only.
type stockDialer struct{ *netstack.Net }

func (d stockDialer) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	a, err := netip.ParseAddr(host)
	return []netip.Addr{a}, err
}

func (d stockDialer) ListenPacket(string, string) (net.PacketConn, error) {
	return nil, errors.New("stock node: no UDP in this benchmark")
}

// pairKinds names the implementations every comparative benchmark runs:
// ours, a pair built on wireguard-go's stock tun/netstack, and the host
// kernel's own TCP and UDP over loopback with no tunnel at all, the ceiling
// any user-space tunnel is measured against (newBenchNet also knows
// "sidecar-flowlog": ours with flow statistics on). As root, benchKinds adds
// wggo-kernel (bench_wggo_test.go).
var pairKinds = []string{"sidecar", ownKind, "stock", "kernel"}

// ownKind is a pair of our nodes on our own WireGuard implementation
// (Options.OwnWireGuard).
const ownKind = "sidecar-wgdev"

// benchNodeOptions are the node options of one of our kinds.
func benchNodeOptions(kind string) sidecartest.Options {
	switch kind {
	case "sidecar-flowlog":
		return sidecartest.Options{NodeOptions: func(i int, o *sidecar.Options) { o.FlowSink = &netlog.MemorySink{} }}
	case ownKind:
		return sidecartest.Options{OwnWireGuard: true}
	}
	return sidecartest.Options{}
}

// benchNet is one side's socket API in a comparative benchmark, and the
// address of the other side's server.
type benchNet struct {
	listen    func() (net.Listener, error)   // TCP on the server node, port 5300
	dial      func() (net.Conn, error)       // from the client node to it
	listenUDP func() (net.PacketConn, error) // UDP on the server node, port 5301
	dialUDP   func() (net.Conn, error)       // from the client node to it
}

func newBenchNet(b *testing.B, kind string) benchNet {
	switch kind {
	case "sidecar", "sidecar-flowlog", ownKind:
		nodes := sidecartest.NewNodes(b, 2, benchNodeOptions(kind))
		a, z := nodes[0], nodes[1]
		return benchNet{
			listen:    func() (net.Listener, error) { return z.Listen("tcp", ":5300") },
			dial:      func() (net.Conn, error) { return a.Dial("tcp", "10.99.0.2:5300") },
			listenUDP: func() (net.PacketConn, error) { return z.ListenPacket("udp", ":5301") },
			dialUDP:   func() (net.Conn, error) { return a.Dial("udp", "10.99.0.2:5301") },
		}
	case "kernel":
		var tcpAddr, udpAddr string // set by listen and listenUDP
		return benchNet{
			listen: func() (net.Listener, error) {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err == nil {
					tcpAddr = ln.Addr().String()
				}
				return ln, err
			},
			dial: func() (net.Conn, error) { return net.Dial("tcp", tcpAddr) },
			listenUDP: func() (net.PacketConn, error) {
				pc, err := net.ListenPacket("udp", "127.0.0.1:0")
				if err == nil {
					udpAddr = pc.LocalAddr().String()
				}
				return pc, err
			},
			dialUDP: func() (net.Conn, error) { return net.Dial("udp", udpAddr) },
		}
	case wggoKind:
		return wggoNet(b)
	case "stock":
		a, z := stockPair(b)
		to := netip.MustParseAddrPort("10.98.0.2:5300")
		toUDP := netip.MustParseAddrPort("10.98.0.2:5301")
		return benchNet{
			listen:    func() (net.Listener, error) { return z.ListenTCPAddrPort(to) },
			dial:      func() (net.Conn, error) { return a.DialTCPAddrPort(to) },
			listenUDP: func() (net.PacketConn, error) { return z.ListenUDPAddrPort(toUDP) },
			dialUDP:   func() (net.Conn, error) { return a.DialUDPAddrPort(netip.AddrPort{}, toUDP) },
		}
	}
	b.Fatalf("unknown implementation %q", kind)
	return benchNet{}
}

// serve opens the server node's TCP listener, closed when the benchmark
// ends.
func (bn benchNet) serve(b *testing.B) net.Listener {
	ln, err := bn.listen()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	return ln
}

// newEchoNet is newBenchNet with echo64 on the server node's TCP
// port.
func newEchoNet(b *testing.B, kind string) benchNet {
	bn := newBenchNet(b, kind)
	testnet.Serve(b, bn.serve(b), echo64)
	return bn
}

// echo64 answers every 64-byte message on a connection.
var echo64 = testnet.EchoMessages(64)

// BenchmarkRequestResponse: 64-byte request, 64-byte response, one at a
// time on one TCP connection; ns/op is the round trip, and p50/p99 are
// reported in µs.
//
//	go test -run '^$' -bench RequestResponse -benchtime 3s .
func BenchmarkRequestResponse(b *testing.B) {
	for _, kind := range benchKinds(b) {
		b.Run("impl="+kind, func(b *testing.B) {
			bn := newEchoNet(b, kind)
			c, err := bn.dial()
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			msg := make([]byte, 64)
			benchRoundTrips(b, func() error {
				if _, err := c.Write(msg); err != nil {
					return err
				}
				_, err := io.ReadFull(c, msg)
				return err
			})
		})
	}
}

// benchRoundTrips calls trip (one round trip) b.N times, timing each, and
// reports the p50 and p99 in µs beside ns/op.
func benchRoundTrips(b *testing.B, trip func() error) {
	rtts := make([]time.Duration, 0, min(b.N, 1<<20))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if err := trip(); err != nil {
			b.Fatal(err)
		}
		if len(rtts) < cap(rtts) {
			rtts = append(rtts, time.Since(t0))
		}
	}
	b.StopTimer()
	slices.Sort(rtts)
	b.ReportMetric(float64(rtts[len(rtts)/2])/1e3, "p50-µs")
	b.ReportMetric(float64(rtts[len(rtts)*99/100])/1e3, "p99-µs")
}

// BenchmarkConnectRate: connect, one 64-byte exchange, close; ns/op per
// connection, and conn/s.
//
//	go test -run '^$' -bench ConnectRate -benchtime 3s .
func BenchmarkConnectRate(b *testing.B) {
	for _, kind := range benchKinds(b) {
		b.Run("impl="+kind, func(b *testing.B) {
			benchConnect(b, newEchoNet(b, kind).dial)
		})
	}
}

// benchConnect opens a connection, exchanges 64 bytes each way with an
// echoServer and closes it, b.N times.
func benchConnect(b *testing.B, dial func() (net.Conn, error)) {
	msg := make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
	t0 := time.Now()
	for range b.N {
		c, err := dial()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, msg); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
	b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "conn/s")
}

// BenchmarkUDP sends b.N datagrams of size bytes one way and counts what
// arrives: pkts/s is the delivered rate (from the first send to the last
// arrival), loss-% what never arrived. The sender keeps at most udpWindow
// datagrams unaccounted for, as a flow-controlled sender would: unpaced, the
// faster sender loses more, because on two cores it takes the CPU the
// receiving socket's reader needs (our pair delivered 11k of 250k datagrams
// a second that way, stock 18k of 80k). A window that sees no arrival for
// udpStall counts its datagrams as lost and moves on.
//
//	go test -run '^$' -bench UDP -benchtime 3s .
func BenchmarkUDP(b *testing.B) {
	for _, size := range []int{64, 1200} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			for _, kind := range benchKinds(b) {
				b.Run("impl="+kind, func(b *testing.B) {
					bn := newBenchNet(b, kind)
					benchUDP(b, bn, size)
				})
			}
		})
	}
}

// udpWindow and udpStall pace BenchmarkUDP's sender.
const (
	udpWindow = 256
	udpStall  = 50 * time.Millisecond
)

func benchUDP(b *testing.B, bn benchNet, size int) {
	pc, err := bn.listenUDP()
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	c, err := bn.dialUDP()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()

	var received, last atomic.Int64 // datagrams; arrival of the last one (UnixNano)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			received.Add(1)
			last.Store(time.Now().UnixNano())
		}
	}()
	msg := make([]byte, size)
	// Warm up until one datagram has arrived (the handshake is done).
	for deadline := time.Now().Add(10 * time.Second); received.Load() == 0; {
		if time.Now().After(deadline) {
			b.Fatal("no datagram arrived")
		}
		c.Write(msg)
		time.Sleep(5 * time.Millisecond)
	}
	// Drain the warm-up before counting.
	time.Sleep(20 * time.Millisecond)
	received.Store(0)

	b.ReportAllocs()
	b.ResetTimer()
	t0 := time.Now()
	var written int64 // datagrams the sender counts as gone or arrived
	for i := range int64(b.N) {
		for i-written-received.Load() >= udpWindow {
			seen, since := received.Load(), time.Now()
			for received.Load() == seen && time.Since(since) < udpStall {
				runtime.Gosched()
			}
			if received.Load() == seen {
				written += i - written - seen // lost
			}
		}
		if _, err := c.Write(msg); err != nil {
			written++ // refused: lost
		}
	}
	// Wait until nothing more arrives for 20 ms.
	for n := int64(-1); received.Load() != n && received.Load() < int64(b.N); {
		n = received.Load()
		time.Sleep(20 * time.Millisecond)
	}
	b.StopTimer()
	got := received.Load()
	elapsed := time.Duration(last.Load() - t0.UnixNano())
	if got > 0 && elapsed > 0 {
		b.ReportMetric(float64(got)/elapsed.Seconds(), "pkts/s")
	}
	b.ReportMetric(100*float64(int64(b.N)-got)/float64(b.N), "loss-%")
	pc.Close()
	<-done
}

// BenchmarkUDPRoundTrip is the floor under any tunnel's round trip on this
// machine: two Go UDP sockets on loopback ping-pong a 96-byte datagram
// (a 64-byte payload's size once WireGuard has wrapped it), one at a time.
// A WireGuard round trip contains one of these.
//
//	go test -run '^$' -bench UDPRoundTrip .
func BenchmarkUDPRoundTrip(b *testing.B) {
	b.Run("impl=kernel", func(b *testing.B) {
		a, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		defer a.Close()
		z, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		defer z.Close()
		go func() {
			buf := make([]byte, 2048)
			for {
				n, from, err := z.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				z.WriteToUDPAddrPort(buf[:n], from)
			}
		}()
		to := z.LocalAddr().(*net.UDPAddr).AddrPort()
		msg := make([]byte, 96)
		buf := make([]byte, 2048)
		benchRoundTrips(b, func() error {
			if _, err := a.WriteToUDPAddrPort(msg, to); err != nil {
				return err
			}
			_, _, err := a.ReadFromUDPAddrPort(buf)
			return err
		})
	})
}
