package sidecar_test

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/forward"
	"github.com/wgsidecar/sidecar/netlog"
	"github.com/wgsidecar/sidecar/sidecartest"
	"github.com/wgsidecar/sidecar/wgconf"
)

// BenchmarkBulkTCP moves a single TCP stream from one node to another over
// WireGuard on loopback. "sidecar" is a pair of our nodes; "stock" is the
// same pair built on wireguard-go's tun/netstack package, in the same run.
// The figure to read is MB/s (bytes of TCP payload delivered).
//
//	go test -run '^$' -bench BulkTCP -benchtime 4s .
func BenchmarkBulkTCP(b *testing.B) {
	// "sidecar-flowlog" has flow statistics on at both layers of both nodes.
	for _, kind := range []string{"sidecar", "sidecar-flowlog", "stock"} {
		b.Run(kind, func(b *testing.B) {
			bn := newBenchNet(b, kind)
			ln, err := bn.listen()
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			benchBulk(b, ln, bn.dial)
		})
	}
}

// benchBulk sends b.N chunks of 1 MiB over one connection and stops the
// clock when the receiver has read them all.
func benchBulk(b *testing.B, ln net.Listener, dial func() (net.Conn, error)) {
	const chunk = 1 << 20
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		n, _ := io.CopyBuffer(io.Discard, c, make([]byte, 256<<10))
		c.Close()
		got <- n
	}()
	c, err := dial()
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, chunk)
	// Warm up: handshake and window growth.
	for range 8 {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(chunk)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.Close()
	n := <-got
	b.StopTimer()
	if want := int64(b.N+8) * chunk; n != want {
		b.Fatalf("receiver got %d bytes; want %d", n, want)
	}
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
	b.Run("bulk", func(b *testing.B) { benchBulk(b, ln, dial) })
	b.Run("connect", func(b *testing.B) {
		go echoServer(ln)
		benchConnect(b, dial)
	})
}

// pairKinds names the two implementations every comparative benchmark
// runs: ours, and a pair built on wireguard-go's stock tun/netstack
// (newBenchNet also knows "sidecar-flowlog": ours with flow statistics on).
var pairKinds = []string{"sidecar", "stock"}

// benchNet is one side's socket API in a comparative benchmark, and the
// address of the other side's server.
type benchNet struct {
	listen func() (net.Listener, error) // on the server node, port 5300
	dial   func() (net.Conn, error)     // from the client node to it
}

func newBenchNet(b *testing.B, kind string) benchNet {
	switch kind {
	case "sidecar", "sidecar-flowlog":
		var opts sidecartest.Options
		if kind == "sidecar-flowlog" {
			opts.NodeOptions = func(i int, o *sidecar.Options) { o.FlowSink = &netlog.MemorySink{} }
		}
		nodes := sidecartest.NewNodes(b, 2, opts)
		a, z := nodes[0], nodes[1]
		return benchNet{
			listen: func() (net.Listener, error) { return z.Listen("tcp", ":5300") },
			dial:   func() (net.Conn, error) { return a.Dial("tcp", "10.99.0.2:5300") },
		}
	default:
		a, z := stockPair(b)
		to := netip.MustParseAddrPort("10.98.0.2:5300")
		return benchNet{
			listen: func() (net.Listener, error) { return z.ListenTCPAddrPort(to) },
			dial:   func() (net.Conn, error) { return a.DialTCPAddrPort(to) },
		}
	}
}

// echoServer answers every 64-byte message on every connection.
func echoServer(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 64)
			for {
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}()
	}
}

// BenchmarkRequestResponse: 64-byte request, 64-byte response, one at a
// time on one TCP connection; ns/op is the round trip, and p50/p99 are
// reported.
//
//	go test -run '^$' -bench RequestResponse -benchtime 3s .
func BenchmarkRequestResponse(b *testing.B) {
	for _, kind := range pairKinds {
		b.Run(kind, func(b *testing.B) {
			bn := newBenchNet(b, kind)
			ln, err := bn.listen()
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go echoServer(ln)
			c, err := bn.dial()
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			msg := make([]byte, 64)
			rtts := make([]time.Duration, 0, 1<<16)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, msg); err != nil {
					b.Fatal(err)
				}
				if len(rtts) < cap(rtts) {
					rtts = append(rtts, time.Since(t0))
				}
			}
			b.StopTimer()
			slices.Sort(rtts)
			b.ReportMetric(float64(rtts[len(rtts)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(rtts[len(rtts)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// BenchmarkConnectRate: connect, one 64-byte exchange, close; ns/op per
// connection.
//
//	go test -run '^$' -bench ConnectRate -benchtime 3s .
func BenchmarkConnectRate(b *testing.B) {
	for _, kind := range pairKinds {
		b.Run(kind, func(b *testing.B) {
			bn := newBenchNet(b, kind)
			ln, err := bn.listen()
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go echoServer(ln)
			benchConnect(b, bn.dial)
		})
	}
}

// benchConnect opens a connection, exchanges 64 bytes each way with an
// echoServer and closes it, b.N times.
func benchConnect(b *testing.B, dial func() (net.Conn, error)) {
	msg := make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
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
}
