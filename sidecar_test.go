package sidecar_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/internal/leaktest"
	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/sidecartest"
	"github.com/wgsidecar/sidecar/wgconf"
)

func TestHTTPBothDirectionsIPv4AndIPv6(t *testing.T) {
	sidecartest.ForEachDevice(t, func(t *testing.T, own bool) {
		nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{OwnWireGuard: own})
		httpBothWays(t, nodes[0], nodes[1])
	})
}

// httpBothWays serves HTTP on both nodes and has each fetch from the
// other, over IPv4 and IPv6.
func httpBothWays(t *testing.T, a, b *sidecar.Node) {
	t.Helper()
	testnet.ServeHTTP(t, a, "a")
	testnet.ServeHTTP(t, b, "b")
	cases := []struct {
		from *sidecar.Node
		url  string
		want string
	}{
		{a, "http://10.99.0.2/", "b saw 10.99.0.1:"},
		{b, "http://10.99.0.1/", "a saw 10.99.0.2:"},
		{a, "http://[fd00:99::2]/", "b saw [fd00:99::1]:"},
		{b, "http://[fd00:99::1]/", "a saw [fd00:99::2]:"},
	}
	for _, tc := range cases {
		got := testnet.Get(t, tc.from.HTTPClient(), tc.url)
		if !strings.HasPrefix(got, tc.want) {
			t.Errorf("GET %s = %q; want prefix %q", tc.url, got, tc.want)
		}
	}
}

// TestAllowedIPsDecideReach builds a chain 0 - 1 - 2 where 0 and 2 are not
// peers: each reaches exactly the nodes its AllowedIPs name.
func TestAllowedIPsDecideReach(t *testing.T) { sidecartest.ForEachDevice(t, allowedIPsDecideReach) }

func allowedIPsDecideReach(t *testing.T, own bool) {
	nodes := sidecartest.NewNodes(t, 3, sidecartest.Options{
		Peered:       func(i, j int) bool { return i == 1 || j == 1 },
		OwnWireGuard: own,
	})
	for i, n := range nodes {
		ln, err := n.Listen("tcp", ":7")
		if err != nil {
			t.Fatal(err)
		}
		testnet.Serve(t, ln, testnet.Reply(fmt.Sprintf("node %d\n", i)))
	}
	reach := func(from, to int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := nodes[from].DialContext(ctx, "tcp", netip.AddrPortFrom(sidecartest.Addr4(to), 7).String())
		if err != nil {
			return err
		}
		defer c.Close()
		b, err := io.ReadAll(c)
		if err != nil {
			return err
		}
		if want := fmt.Sprintf("node %d\n", to); string(b) != want {
			return fmt.Errorf("got %q, want %q", b, want)
		}
		return nil
	}
	for from := range 3 {
		for to := range 3 {
			if from == to {
				continue
			}
			err := reach(from, to)
			allowed := from == 1 || to == 1
			switch {
			case allowed && err != nil:
				t.Errorf("%d -> %d: %v; want reachable", from, to, err)
			case !allowed && err == nil:
				t.Errorf("%d -> %d reachable; want no route", from, to)
			case !allowed && !strings.Contains(err.Error(), "no route"):
				t.Errorf("%d -> %d: %v; want a no-route error", from, to, err)
			}
		}
	}

	// Narrow node 0's view of node 1 to its IPv4 address: IPv6 is gone.
	n1 := nodes[1]
	err := nodes[0].SetPeers([]wgconf.Peer{{
		PublicKey:  n1.PublicKey(),
		AllowedIPs: []netip.Prefix{netip.PrefixFrom(sidecartest.Addr4(1), 32)},
		Endpoint:   fmt.Sprintf("127.0.0.1:%d", n1.ListenPort()),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nodes[0].Dial("tcp", "[fd00:99::2]:7"); err == nil || !strings.Contains(err.Error(), "no route") {
		t.Errorf("dial IPv6 outside AllowedIPs: %v; want no route", err)
	}
	if err := reach(0, 1); err != nil {
		t.Errorf("0 -> 1 over IPv4 after narrowing: %v", err)
	}
}

// TestBulkTransferChecksum sends 256 MiB over wireguard-go (32 MiB with
// -short) and 32 MiB over wgdev: the checksums match.
func TestBulkTransferChecksum(t *testing.T) {
	sidecartest.ForEachDevice(t, func(t *testing.T, own bool) {
		size := int64(256 << 20)
		if testing.Short() || own {
			size = 32 << 20
		}
		nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{OwnWireGuard: own})
		bulkChecksum(t, nodes[0], nodes[1], sidecartest.Addr4(1), size)
	})
}

// bulkChecksum sends size bytes from a to b's address to over TCP and
// checks that b received them with the sender's checksum.
func bulkChecksum(t *testing.T, a, b *sidecar.Node, to netip.Addr, size int64) {
	t.Helper()
	ln, err := b.Listen("tcp", ":9000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := testnet.SumOne(t, ln)
	c, err := a.Dial("tcp", netip.AddrPortFrom(to, 9000).String())
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	src := io.TeeReader(io.LimitReader(testnet.Pattern(), size), h)
	if _, err := io.CopyBuffer(c, src, make([]byte, 256<<10)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	r := <-done
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	var want [32]byte
	copy(want[:], h.Sum(nil))
	if r.N != size || r.SHA256 != want {
		t.Fatalf("received %d bytes sha256 %x; sent %d bytes sha256 %x", r.N, r.SHA256, size, want)
	}
}

func TestPresharedKeys(t *testing.T) { sidecartest.ForEachDevice(t, presharedKeys) }

func presharedKeys(t *testing.T, own bool) {
	nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{PresharedKeys: true, OwnWireGuard: own})
	testnet.ServeHTTP(t, nodes[1], "b")
	if got := testnet.Get(t, nodes[0].HTTPClient(), "http://10.99.0.2/"); !strings.HasPrefix(got, "b saw") {
		t.Fatalf("with matching pre-shared keys: %q", got)
	}

	// A pre-shared key on one side only: no handshake completes, nothing
	// gets through.
	m := sidecartest.NewNodes(t, 2, sidecartest.Options{OwnWireGuard: own})
	psk, _ := wgconf.GeneratePrivateKey()
	err := m[0].SetPeers([]wgconf.Peer{{
		PublicKey:    m[1].PublicKey(),
		PresharedKey: wgconf.PresharedKey(psk),
		AllowedIPs:   []netip.Prefix{netip.MustParsePrefix("10.99.0.2/32")},
		Endpoint:     fmt.Sprintf("127.0.0.1:%d", m[1].ListenPort()),
	}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := m[1].Listen("tcp", ":81")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if c, err := m[0].DialContext(ctx, "tcp", "10.99.0.2:81"); err == nil {
		c.Close()
		t.Fatal("dial succeeded with mismatched pre-shared keys")
	}
}

func TestPing(t *testing.T) { sidecartest.ForEachDevice(t, ping) }

func ping(t *testing.T, own bool) {
	nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{OwnWireGuard: own})
	a, b := nodes[0], nodes[1]
	for _, dst := range []string{"10.99.0.2", "fd00:99::2"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		rtt, err := a.Ping(ctx, dst)
		cancel()
		if err != nil || rtt <= 0 {
			t.Errorf("ping %s: rtt %v, err %v", dst, rtt, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := b.Ping(ctx, "10.99.0.1"); err != nil {
		t.Errorf("ping back: %v", err)
	}
}

// TestRestartedNodeIsReachedAgain closes a node and starts it again with
// the same key, on the same port and then on another port that its peer was
// never told of: the peer reaches it again each time (the second time by
// roaming to the endpoint the restarted node's handshake came from).
func TestRestartedNodeIsReachedAgain(t *testing.T) {
	sidecartest.ForEachDevice(t, restartedNodeIsReachedAgain)
}

func restartedNodeIsReachedAgain(t *testing.T, own bool) {
	nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{OwnWireGuard: own})
	a, b := nodes[0], nodes[1]
	testnet.ServeHTTP(t, b, "b1")
	if got := testnet.Get(t, a.HTTPClient(), "http://10.99.0.2/"); !strings.HasPrefix(got, "b1 saw") {
		t.Fatalf("before restart: %q", got)
	}
	cfg := *b.Config()
	firstPort := b.ListenPort()
	cfg.Interface.ListenPort = firstPort
	cfg.Peers = []wgconf.Peer{{
		PublicKey:  a.PublicKey(),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.0.1/32"), netip.MustParsePrefix("fd00:99::1/128")},
		Endpoint:   fmt.Sprintf("127.0.0.1:%d", a.ListenPort()),
	}}
	b.Close()

	b2, err := sidecar.Start(&cfg, sidecar.Options{OwnWireGuard: own})
	if err != nil {
		t.Fatal(err)
	}
	testnet.ServeHTTP(t, b2, "b2")
	if got := testnet.Get(t, a.HTTPClient(), "http://10.99.0.2/"); !strings.HasPrefix(got, "b2 saw") {
		t.Fatalf("after restart: %q", got)
	}
	b2.Close()

	cfg.Interface.ListenPort = 0 // a new port
	b3, err := sidecar.Start(&cfg, sidecar.Options{OwnWireGuard: own})
	if err != nil {
		t.Fatal(err)
	}
	defer b3.Close()
	if b3.ListenPort() == firstPort {
		t.Skip("the OS gave the same port again")
	}
	testnet.ServeHTTP(t, b3, "b3")
	if got := testnet.Get(t, a.HTTPClient(), "http://10.99.0.2/"); !strings.HasPrefix(got, "b3 saw") {
		t.Fatalf("after restart on a new port: %q", got)
	}
	peers, err := a.Peers()
	if err != nil || len(peers) != 1 || int(peers[0].Endpoint.Port()) != b3.ListenPort() {
		t.Errorf("a's view of b after it roamed: %+v, %v; want port %d", peers, err, b3.ListenPort())
	}
}

// TestDNSThroughTunnel serves DNS on node 1's tunnel address; node 0 uses
// it (with a search domain) and never the host's resolver.
func TestDNSThroughTunnel(t *testing.T) { sidecartest.ForEachDevice(t, dnsThroughTunnel) }

func dnsThroughTunnel(t *testing.T, own bool) {
	nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{
		OwnWireGuard: own,
		Configure: func(i int, cfg *wgconf.Config) {
			if i == 0 {
				cfg.Interface.DNS = []netip.Addr{sidecartest.Addr4(1)}
				cfg.Interface.DNSSearch = []string{"corp.internal"}
			}
		},
	})
	var queries atomic.Int32
	pc, err := nodes[1].ListenPacket("udp", ":53")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go serveDNS(pc, &queries, map[string][]netip.Addr{
		"svc.corp.internal.": {sidecartest.Addr4(1), sidecartest.Addr6(1)},
	})
	testnet.ServeHTTP(t, nodes[1], "svc")

	got, err := nodes[0].LookupNetIP(context.Background(), "ip", "svc")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{sidecartest.Addr4(1), sidecartest.Addr6(1)}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("LookupNetIP(svc) = %v; want %v", got, want)
	}
	if body := testnet.Get(t, nodes[0].HTTPClient(), "http://svc.corp.internal/"); !strings.HasPrefix(body, "svc saw 10.99.0.1:") {
		t.Errorf("HTTP by name: %q", body)
	}
	_, err = nodes[0].LookupNetIP(context.Background(), "ip", "localhost")
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
		t.Errorf("localhost resolved through the tunnel: err %v; want not found (the host's /etc/hosts must not be used)", err)
	}
	if queries.Load() == 0 {
		t.Error("the tunnel's DNS server saw no query")
	}
}

// serveDNS answers A and AAAA queries from records until pc is closed.
func serveDNS(pc net.PacketConn, queries *atomic.Int32, records map[string][]netip.Addr) {
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		queries.Add(1)
		var req dnsmessage.Message
		if req.Unpack(buf[:n]) != nil || len(req.Questions) != 1 {
			continue
		}
		q := req.Questions[0]
		resp := dnsmessage.Message{
			Header:    dnsmessage.Header{ID: req.ID, Response: true, RecursionAvailable: true},
			Questions: req.Questions,
		}
		addrs, ok := records[strings.ToLower(q.Name.String())]
		if !ok {
			resp.RCode = dnsmessage.RCodeNameError
		}
		for _, a := range addrs {
			h := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}
			switch {
			case a.Is4() && q.Type == dnsmessage.TypeA:
				h.Type = dnsmessage.TypeA
				resp.Answers = append(resp.Answers, dnsmessage.Resource{Header: h, Body: &dnsmessage.AResource{A: a.As4()}})
			case a.Is6() && q.Type == dnsmessage.TypeAAAA:
				h.Type = dnsmessage.TypeAAAA
				resp.Answers = append(resp.Answers, dnsmessage.Resource{Header: h, Body: &dnsmessage.AAAAResource{AAAA: a.As16()}})
			}
		}
		out, err := resp.Pack()
		if err == nil {
			pc.WriteTo(out, from)
		}
	}
}

// TestEndpointNameReresolved starts node 0 with a peer whose endpoint name
// does not resolve yet (a container whose peer is not up). While the peer
// has no handshake the name is looked up again; once it resolves, traffic
// flows.
func TestEndpointNameReresolved(t *testing.T) { sidecartest.ForEachDevice(t, endpointNameReresolved) }

func endpointNameReresolved(t *testing.T, own bool) {
	aCfg, bCfg := pairConfigs(t)
	b, err := sidecar.Start(bCfg, sidecar.Options{OwnWireGuard: own})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ln, err := b.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	testnet.Serve(t, ln, testnet.Reply("hello"))

	var resolvable atomic.Bool
	var lookups atomic.Int32
	aCfg.Peers[0].Endpoint = fmt.Sprintf("peer.test:%d", b.ListenPort())
	a, err := sidecar.Start(aCfg, sidecar.Options{
		OwnWireGuard:   own,
		StaleHandshake: 400 * time.Millisecond,
		LookupEndpoint: func(ctx context.Context, host string) ([]netip.Addr, error) {
			lookups.Add(1)
			if host != "peer.test" || !resolvable.Load() {
				return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
			}
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	if c, err := a.DialContext(ctx, "tcp", "10.99.0.2:80"); err == nil {
		c.Close()
		t.Fatal("reached the peer before its name resolved")
	}
	cancel()
	resolvable.Store(true)

	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := a.DialContext(ctx, "tcp", "10.99.0.2:80")
		cancel()
		if err == nil {
			got, _ := io.ReadAll(c)
			c.Close()
			if string(got) != "hello" {
				t.Fatalf("got %q", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("peer not reached after its name resolved: %v (lookups: %d)", err, lookups.Load())
		}
	}
	if lookups.Load() < 2 {
		t.Errorf("endpoint name looked up %d times; want a re-resolution", lookups.Load())
	}
	peers, err := a.Peers()
	if err != nil || len(peers) != 1 || peers[0].Endpoint != netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(b.ListenPort())) || peers[0].LastHandshake.IsZero() {
		t.Errorf("peer status after re-resolution: %+v, %v", peers, err)
	}
}

func TestCloseLeavesNoGoroutine(t *testing.T) {
	check := leaktest.Check(t)
	// A nested test owns the nodes, so that its cleanup closes them
	// before the check runs.
	t.Run("nodes", func(t *testing.T) {
		sidecartest.ForEachDevice(t, func(t *testing.T, own bool) {
			nodes := sidecartest.NewNodes(t, 3, sidecartest.Options{PresharedKeys: true, OwnWireGuard: own})
			testnet.ServeHTTP(t, nodes[2], "c")
			for _, n := range nodes[:2] {
				if got := testnet.Get(t, n.HTTPClient(), "http://10.99.0.3/"); !strings.HasPrefix(got, "c saw") {
					t.Fatalf("got %q", got)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := nodes[0].Ping(ctx, "fd00:99::2"); err != nil {
				t.Fatal(err)
			}
		})
	})
	check()
}

// TestSetPeersKeepsSessions changes node a's peer list (one peer removed,
// one added) while a transfer to an untouched peer runs: the transfer
// completes intact without a new handshake, and the changes are in effect.
func TestSetPeersKeepsSessions(t *testing.T) { sidecartest.ForEachDevice(t, setPeersKeepsSessions) }

func setPeersKeepsSessions(t *testing.T, own bool) {
	nodes := sidecartest.NewNodes(t, 3, sidecartest.Options{OwnWireGuard: own})
	a, b := nodes[0], nodes[1]
	ln, err := b.Listen("tcp", ":9100")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sum := testnet.SumOne(t, ln)
	c, err := a.Dial("tcp", "10.99.0.2:9100")
	if err != nil {
		t.Fatal(err)
	}
	peersBefore, _ := a.Peers()
	h := sha256.New()
	src := io.TeeReader(io.LimitReader(testnet.Pattern(), 64<<20), h)
	var sent int64
	buf := make([]byte, 256<<10)
	changed := false
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, err := c.Write(buf[:n]); err != nil {
				t.Fatal(err)
			}
			sent += int64(n)
		}
		if !changed && sent > 16<<20 {
			// Mid-transfer: drop node 2, add a new peer, keep node 1.
			changed = true
			k, _ := wgconf.GeneratePrivateKey()
			var keep wgconf.Peer
			for _, p := range a.PeerConfig() {
				if p.PublicKey == b.PublicKey() {
					keep = p
				}
			}
			err := a.SetPeers([]wgconf.Peer{keep, {PublicKey: k.Public(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.0.9/32")}}})
			if err != nil {
				t.Fatal(err)
			}
		}
		if err == io.EOF {
			break
		}
	}
	c.Close()
	if got := <-sum; got.SHA256 != [32]byte(h.Sum(nil)) {
		t.Fatal("transfer corrupted across the peer change")
	}
	after, err := a.Peers()
	if err != nil || len(after) != 2 {
		t.Fatalf("peers after the change: %+v, %v", after, err)
	}
	for _, p := range peersBefore {
		if p.PublicKey == b.PublicKey() && !after[0].LastHandshake.Equal(p.LastHandshake) {
			t.Errorf("the untouched peer handshook again: %v -> %v", p.LastHandshake, after[0].LastHandshake)
		}
	}
	if _, err := a.Dial("tcp", "10.99.0.3:80"); err == nil || !strings.Contains(err.Error(), "no route") {
		t.Errorf("removed peer still reachable: %v", err)
	}
}
