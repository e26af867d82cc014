package sidecar_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/control"
	"github.com/wgsidecar/sidecar/internal/leaktest"
	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/sidecartest"
	"github.com/wgsidecar/sidecar/wgconf"
)

// TestReloadDuringTransfer runs a 64 MiB transfer through a forward of
// node a to peer b while a's file gains a peer (e), loses one (c), changes
// one (d gains its IPv6 address), gains a forward and loses a proxy; the
// reload goes through the control socket's POST /v1/reload. The transfer
// completes with the sender's checksum and without a new handshake with b;
// afterwards e is reached through the new forward, d over IPv6, c not at
// all, the proxy's port is closed, and the control socket lists the new
// forwards. Nothing leaks after Close.
func TestReloadDuringTransfer(t *testing.T) {
	check := leaktest.Check(t)
	t.Run("nodes", func(t *testing.T) { sidecartest.ForEachDevice(t, reloadDuringTransfer) })
	check()
}

func reloadDuringTransfer(t *testing.T, own bool) {
	peers := sidecartest.NewNodes(t, 4, sidecartest.Options{OwnWireGuard: own}) // b, c, d, e: 10.99.0.1-4
	b, c, d, e := peers[0], peers[1], peers[2], peers[3]
	aKey, _ := wgconf.GeneratePrivateKey()
	aAddrs := []netip.Prefix{netip.MustParsePrefix("10.99.0.10/32"), netip.MustParsePrefix("fd00:99::a/128")}
	peerOf := func(n *sidecar.Node, i int, v6 bool) wgconf.Peer {
		p := wgconf.Peer{
			PublicKey:  n.PublicKey(),
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(sidecartest.Addr4(i), 32)},
			Endpoint:   fmt.Sprintf("127.0.0.1:%d", n.ListenPort()),
		}
		if v6 {
			p.AllowedIPs = append(p.AllowedIPs, netip.PrefixFrom(sidecartest.Addr6(i), 128))
		}
		return p
	}
	dir := t.TempDir()
	cfg := &wgconf.Config{
		Interface: wgconf.Interface{PrivateKey: aKey, MTU: 1420, Addresses: aAddrs},
		Peers:     []wgconf.Peer{peerOf(b, 0, true), peerOf(c, 1, true), peerOf(d, 2, false)},
		TCPClientTunnels: []wgconf.TCPClientTunnel{
			{BindAddress: "127.0.0.1:0", Target: "10.99.0.1:9000"},
		},
		Socks5:  []wgconf.Socks5{{BindAddress: "127.0.0.1:0"}},
		Control: &wgconf.Control{Socket: filepath.Join(dir, "a.sock")},
	}
	file := filepath.Join(dir, "a.conf")
	writeConfig(t, file, cfg)
	parsed, err := wgconf.ParseFile(file)
	if err != nil {
		t.Fatal(err)
	}
	a, err := sidecar.Start(parsed, sidecar.Options{Logger: testLogger(t), OwnWireGuard: own})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	aPeer := wgconf.Peer{PublicKey: a.PublicKey(), AllowedIPs: aAddrs, Endpoint: fmt.Sprintf("127.0.0.1:%d", a.ListenPort())}
	for _, n := range peers {
		if err := n.SetPeers(append(n.PeerConfig(), aPeer)); err != nil {
			t.Fatal(err)
		}
	}
	ctl := control.NewClient(a.ControlSocket())
	listenerTo := func(target string) string {
		t.Helper()
		st, err := ctl.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range st.Listeners {
			if l.Target == target || (target == "" && l.Kind == "socks5") {
				return l.Listen
			}
		}
		return ""
	}
	fwd, socks := listenerTo("10.99.0.1:9000"), listenerTo("")
	if fwd == "" || socks == "" {
		t.Fatalf("forward %q, proxy %q: want both listening", fwd, socks)
	}
	serveText(t, e, ":80", "e")
	serveText(t, d, ":81", "d")
	if _, err := a.Dial("tcp", "[fd00:99::3]:81"); err == nil {
		t.Fatal("d reached over IPv6 before its AllowedIPs had it")
	}

	ln, err := b.Listen("tcp", ":9000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sum := testnet.SumOne(t, ln)
	conn, err := net.Dial("tcp", fwd)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	h := sha256.New()
	src := io.TeeReader(io.LimitReader(testnet.Pattern(), 64<<20), h)
	buf := make([]byte, 256<<10)
	var sent int64
	var before []sidecar.PeerStatus
	var reloaded *control.Reload
	for {
		k, rerr := src.Read(buf)
		if k > 0 {
			if _, err := conn.Write(buf[:k]); err != nil {
				t.Fatalf("write after %d bytes: %v", sent, err)
			}
			sent += int64(k)
		}
		if reloaded == nil && sent > 16<<20 {
			before, _ = a.Peers()
			next := *cfg
			next.Peers = []wgconf.Peer{peerOf(b, 0, true), peerOf(d, 2, true), peerOf(e, 3, true)}
			next.TCPClientTunnels = append(slices.Clone(cfg.TCPClientTunnels), wgconf.TCPClientTunnel{BindAddress: "127.0.0.1:0", Target: "10.99.0.4:80"})
			next.Socks5 = nil
			writeConfig(t, file, &next)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			reloaded, err = ctl.Reload(ctx)
			cancel()
			if err != nil {
				t.Fatalf("reload: %v", err)
			}
		}
		if rerr == io.EOF {
			break
		}
	}
	conn.(*net.TCPConn).CloseWrite()
	select {
	case got := <-sum:
		if got.SHA256 != [32]byte(h.Sum(nil)) {
			t.Fatal("transfer through the forward corrupted across the reload")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("transfer did not complete")
	}

	want := control.Reload{PeersAdded: 1, PeersRemoved: 1, PeersChanged: 1,
		Started: []string{"[TCPClientTunnel] 127.0.0.1:0"}, Stopped: []string{"[Socks5] 127.0.0.1:0"}, NeedRestart: []string{}}
	if fmt.Sprint(*reloaded) != fmt.Sprint(want) {
		t.Errorf("reload answered %+v; want %+v", *reloaded, want)
	}
	after, _ := a.Peers()
	if len(before) == 0 || len(after) != 3 || after[0].PublicKey != b.PublicKey() || !after[0].LastHandshake.Equal(before[0].LastHandshake) {
		t.Errorf("b's session across the reload: before %+v, after %+v; want the same handshake", before, after)
	}
	// The changes are in effect.
	toE := listenerTo("10.99.0.4:80")
	if toE == "" {
		t.Fatal("the added forward is not listed")
	}
	if got := readAll(t, "tcp", toE, nil); got != "e" {
		t.Errorf("through the added forward to the added peer: %q", got)
	}
	if got := readAll(t, "tcp", "[fd00:99::3]:81", a); got != "d" {
		t.Errorf("to the changed peer over IPv6: %q", got)
	}
	if _, err := a.Dial("tcp", "10.99.0.2:80"); err == nil || !strings.Contains(err.Error(), "no route") {
		t.Errorf("removed peer c still reachable: %v", err)
	}
	if c, err := net.DialTimeout("tcp", socks, time.Second); err == nil {
		c.Close()
		t.Errorf("removed proxy still accepts on %s", socks)
	}
	if listenerTo("") != "" {
		t.Error("removed proxy still listed")
	}
}

// testLogger logs to the test's output: warnings and errors, or the level
// WGSIDECAR_TEST_LOG names.
// pairConfigs returns the configurations of two nodes that are each
// other's peer, a (10.99.0.1) and b (10.99.0.2), with no endpoint for
// either: callers give a (or b) the other's address.
func pairConfigs(t *testing.T) (a, b *wgconf.Config) {
	var keys [2]wgconf.PrivateKey
	for i := range keys {
		k, err := wgconf.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k
	}
	addrs := [2]netip.Prefix{netip.MustParsePrefix("10.99.0.1/32"), netip.MustParsePrefix("10.99.0.2/32")}
	config := func(i int) *wgconf.Config {
		return &wgconf.Config{
			Interface: wgconf.Interface{PrivateKey: keys[i], MTU: 1420, Addresses: []netip.Prefix{addrs[i]}},
			Peers:     []wgconf.Peer{{PublicKey: keys[1-i].Public(), AllowedIPs: []netip.Prefix{addrs[1-i]}}},
		}
	}
	return config(0), config(1)
}

func testLogger(t *testing.T) *slog.Logger {
	level := slog.LevelWarn
	if v := os.Getenv("WGSIDECAR_TEST_LOG"); v != "" {
		level.UnmarshalText([]byte(v))
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: level}))
}

// writeConfig writes cfg as a file, replacing it atomically as an editor
// or a configuration tool would.
func writeConfig(t *testing.T, path string, cfg *wgconf.Config) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, cfg.Marshal(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// serveText answers every TCP connection to node's tunnel port with text.
func serveText(t *testing.T, node *sidecar.Node, addr, text string) {
	t.Helper()
	ln, err := node.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	testnet.Serve(t, ln, testnet.Reply(text))
}

// readAll connects to addr (through node's tunnel, or on the host when
// node is nil) and returns what the server sends before closing.
func readAll(t *testing.T, network, addr string, node *sidecar.Node) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var c net.Conn
	var err error
	if node != nil {
		c, err = node.DialContext(ctx, network, addr)
	} else {
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	if err != nil {
		t.Fatalf("connect %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read from %s: %v", addr, err)
	}
	return string(b)
}
