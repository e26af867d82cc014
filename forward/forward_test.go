package forward_test

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/forward"
	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/sidecartest"
	"github.com/wgsidecar/sidecar/wgconf"
)

// TestForwardsBothWays: a local-to-tunnel TCP forward on node a reaches a
// tunnel-to-local forward on node b, which reaches a host app: the data and
// the half-close cross both, with equal checksums.
func TestForwardsBothWays(t *testing.T) {
	app := testnet.HostServer(t, testnet.SumReply)
	refusedTarget := testnet.ClosedAddr(t, "tcp")
	nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{
		Configure: func(i int, cfg *wgconf.Config) {
			if i == 1 {
				cfg.TCPServerTunnels = []wgconf.TCPServerTunnel{
					{ListenPort: 8080, Target: app},
					{ListenPort: 8081, Target: refusedTarget},
				}
			}
		},
	})
	a := nodes[0]

	// Straight to the tunnel-to-local forward, over IPv4 and IPv6.
	for _, addr := range []string{"10.99.0.2:8080", "[fd00:99::2]:8080"} {
		c, err := a.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		testnet.SendAndSum(t, c, 8<<20)
	}

	// Through a local-to-tunnel forward on a as well.
	fwd, err := forward.ListenTCP("127.0.0.1:0", "10.99.0.2:8080", a, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fwd.Close()
	c, err := net.Dial("tcp", fwd.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	testnet.SendAndSum(t, c, 8<<20)

	// A refused host target: the peer gets "connection refused" at once.
	start := time.Now()
	_, err = a.Dial("tcp", "10.99.0.2:8081")
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("dial a forward whose target refuses: %v; want connection refused", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("refusal took %v; want under a second", d)
	}
	// A port with no forward is refused too.
	if _, err := a.Dial("tcp", "10.99.0.2:8082"); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("dial a port without forward: %v; want connection refused", err)
	}
}

func TestUDPForwardsBothWays(t *testing.T) {
	echo := testnet.HostPacketServer(t, testnet.UpperDatagram)
	refusedTarget := testnet.ClosedAddr(t, "udp")
	nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{
		Configure: func(i int, cfg *wgconf.Config) {
			if i == 1 {
				cfg.UDPServerTunnels = []wgconf.UDPServerTunnel{
					{ListenPort: 5300, Target: echo},
					{ListenPort: 5301, Target: refusedTarget},
				}
			}
		},
	})
	a := nodes[0]
	exchange := func(c net.Conn, msg string) (string, error) {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte(msg)); err != nil {
			return "", err
		}
		buf := make([]byte, 2000)
		n, err := c.Read(buf)
		return string(buf[:n]), err
	}
	for _, addr := range []string{"10.99.0.2:5300", "[fd00:99::2]:5300"} {
		c, err := a.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			msg := fmt.Sprintf("hello %d via %s", i, addr)
			if got, err := exchange(c, msg); err != nil || got != strings.ToUpper(msg) {
				t.Errorf("udp %s: %q, %v", addr, got, err)
			}
		}
		c.Close()
	}

	// Local-to-tunnel UDP on a, to the same forward on b.
	fwd, err := forward.ListenUDP("127.0.0.1:0", "10.99.0.2:5300", a, time.Minute, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fwd.Close()
	c, err := net.Dial("udp", fwd.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := exchange(c, "through two forwards"); err != nil || got != "THROUGH TWO FORWARDS" {
		t.Errorf("local-to-tunnel udp: %q, %v", got, err)
	}
	c.Close()

	// A refused target: the peer gets ICMP port unreachable, which its
	// connected socket reports as connection refused.
	c, err = a.Dial("udp", "10.99.0.2:5301")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, err = exchange(c, "anyone?")
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("udp to a refused target: %v; want connection refused", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("refusal took %v", d)
	}
}

// TestServerConnectionLimit: with MaxConns relays open, the next
// connection to a tunnel-to-local forward is refused; when one ends, a
// new one is taken again.
func TestServerConnectionLimit(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	testnet.Serve(t, ln, testnet.Discard) // a host app that holds connections open
	a, b := sidecartest.NewPair(t)
	srv := &forward.Server{TCP: map[uint16]string{8090: ln.Addr().String()}, MaxConns: 2,
		IsLocal: func(ip netip.Addr) bool { return ip == sidecartest.Addr4(1) }}
	if err := srv.Attach(b.Stack()); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	var open []net.Conn
	for range 2 {
		c, err := a.Dial("tcp", "10.99.0.2:8090")
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
	}
	if c, err := a.Dial("tcp", "10.99.0.2:8090"); err == nil {
		c.Close()
		t.Fatal("a third connection was taken with MaxConns 2")
	}
	open[0].Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := a.Dial("tcp", "10.99.0.2:8090")
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection taken after one ended: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	open[1].Close()
}
