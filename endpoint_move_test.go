package sidecar_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/internal/leaktest"
	"github.com/wgsidecar/sidecar/sidecartest"
)

// TestEndpointMoves follows a peer that moves, on loopback only.
//
// Node a knows peer b by the name peer.test, which first resolves to
// 127.0.0.2, where a UDP relay passes the datagrams on to b (as a front
// address would). Then that address goes dead and the name resolves to
// 127.0.0.3 instead, with a relay on the same port. a's traffic waits; once
// a's handshake with b goes stale (WireGuard starts a new one after 15 s
// without an answer) the watchdog resolves the name again and a reaches b
// at the new address.
//
// Then b is restarted, with the same key, on another UDP port that a was
// never told of: its handshake reaches a, a roams to it, and a's traffic
// reaches b again.
func TestEndpointMoves(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for WireGuard's 15 s handshake timer")
	}
	check := leaktest.Check(t)
	t.Run("nodes", func(t *testing.T) { sidecartest.ForEachDevice(t, endpointMoves) })
	check()
}

func endpointMoves(t *testing.T, own bool) {
	// No endpoint for a in b's file: b only answers where a's packets
	// come from.
	aCfg, bCfg := pairConfigs(t)
	b, err := sidecar.Start(bCfg, sidecar.Options{Logger: testLogger(t), OwnWireGuard: own})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { b.Close() }()
	serveText(t, b, ":80", "b1")

	relay1 := startUDPRelay(t, "127.0.0.2:0", fmt.Sprintf("127.0.0.1:%d", b.ListenPort()))
	port := relay1.port()
	var resolvesTo atomic.Pointer[netip.Addr]
	first := netip.MustParseAddr("127.0.0.2")
	resolvesTo.Store(&first)
	aCfg.Peers[0].Endpoint = fmt.Sprintf("peer.test:%d", port)
	a, err := sidecar.Start(aCfg, sidecar.Options{
		Logger:       testLogger(t),
		OwnWireGuard: own,
		Watchdog:     time.Second,
		LookupEndpoint: func(ctx context.Context, host string) ([]netip.Addr, error) {
			if host != "peer.test" {
				return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
			}
			return []netip.Addr{*resolvesTo.Load()}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if got := fetch(a, "10.99.0.2:80", 10*time.Second); got != "b1" {
		t.Fatalf("through the first address: %q", got)
	}

	// The first address goes dead; the name does not move yet.
	relay1.Close()
	if got := fetch(a, "10.99.0.2:80", time.Second); got != "" {
		t.Fatalf("reached b through a dead address: %q", got)
	}
	// The name moves to 127.0.0.3, where the relay listens on the same port.
	relay2 := startUDPRelay(t, fmt.Sprintf("127.0.0.3:%d", port), fmt.Sprintf("127.0.0.1:%d", b.ListenPort()))
	defer relay2.Close()
	moved := netip.MustParseAddr("127.0.0.3")
	resolvesTo.Store(&moved)
	start := time.Now()
	for fetch(a, "10.99.0.2:80", time.Second) != "b1" {
		if time.Since(start) > 60*time.Second {
			t.Fatal("b not reached at its new address")
		}
	}
	t.Logf("followed the name to its new address in %v", time.Since(start).Round(100*time.Millisecond))
	if st, _ := a.Peers(); len(st) != 1 || st[0].Endpoint != netip.AddrPortFrom(moved, port) {
		t.Errorf("a's view of b: %+v; want endpoint %v", st, netip.AddrPortFrom(moved, port))
	}

	// b restarts on another port and knows where a is.
	oldPort := b.ListenPort()
	b.Close()
	bCfg.Peers[0].Endpoint = fmt.Sprintf("127.0.0.1:%d", a.ListenPort())
	b, err = sidecar.Start(bCfg, sidecar.Options{Logger: testLogger(t), OwnWireGuard: own})
	if err != nil {
		t.Fatal(err)
	}
	if b.ListenPort() == oldPort {
		t.Skip("the OS gave b the same port again")
	}
	serveText(t, b, ":80", "b2")
	start = time.Now()
	for fetch(a, "10.99.0.2:80", time.Second) != "b2" {
		if time.Since(start) > 30*time.Second {
			t.Fatal("b not reached after it restarted on another port")
		}
	}
	t.Logf("reached b on its new port in %v", time.Since(start).Round(100*time.Millisecond))
	if st, _ := a.Peers(); len(st) != 1 || int(st[0].Endpoint.Port()) != b.ListenPort() {
		t.Errorf("a's view of b after it restarted: %+v; want port %d", st, b.ListenPort())
	}
}

// fetch connects through node to addr and returns what the server sends,
// or "" when that fails within d.
func fetch(node *sidecar.Node, addr string, d time.Duration) string {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	c, err := node.DialContext(ctx, "tcp", addr)
	if err != nil {
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(d))
	got, _ := io.ReadAll(c)
	return string(got)
}

// udpRelay passes datagrams between the one client that last sent to its
// listen address and a target, through a socket of its own, as a NAT or a
// load balancer's front address would.
type udpRelay struct {
	pc     net.PacketConn
	up     *net.UDPConn
	closed atomic.Bool
	wg     sync.WaitGroup
}

func startUDPRelay(t *testing.T, listen, target string) *udpRelay {
	t.Helper()
	pc, err := net.ListenPacket("udp", listen)
	if err != nil {
		t.Fatal(err)
	}
	raddr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	up, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		t.Fatal(err)
	}
	r := &udpRelay{pc: pc, up: up}
	var client atomic.Pointer[net.Addr]
	r.wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			client.Store(&from)
			up.Write(buf[:n])
		}
	})
	r.wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			n, err := up.Read(buf)
			if r.closed.Load() {
				return
			}
			if err != nil {
				continue // ICMP unreachable from a target that went away
			}
			if c := client.Load(); c != nil {
				pc.WriteTo(buf[:n], *c)
			}
		}
	})
	t.Cleanup(func() { r.Close() })
	return r
}

func (r *udpRelay) port() uint16 { return uint16(r.pc.LocalAddr().(*net.UDPAddr).Port) }

// Close stops the relay; its address goes dead.
func (r *udpRelay) Close() {
	if r.closed.Swap(true) {
		return
	}
	r.pc.Close()
	r.up.Close()
	r.wg.Wait()
}
