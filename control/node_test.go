// Tests of the control socket of a running node: status, flows, the
// socket's life (created, in use, stale, removed) and no goroutine left.

package control_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
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

// controlNodes starts n peered nodes, each with a control socket in a
// temporary directory, plus whatever configure adds.
func controlNodes(t *testing.T, n int, configure func(i int, cfg *wgconf.Config)) ([]*sidecar.Node, []string) {
	t.Helper()
	dir := t.TempDir()
	socks := make([]string, n)
	nodes := sidecartest.NewNodes(t, n, sidecartest.Options{Configure: func(i int, cfg *wgconf.Config) {
		socks[i] = filepath.Join(dir, fmt.Sprintf("n%d.sock", i))
		cfg.Control = &wgconf.Control{Socket: socks[i]}
		if configure != nil {
			configure(i, cfg)
		}
	}})
	return nodes, socks
}

func status(t *testing.T, sock string) *control.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := control.NewClient(sock).Status(ctx)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return st
}

func TestControlStatus(t *testing.T) {
	nodes, socks := controlNodes(t, 2, nil)
	a, b := nodes[0], nodes[1]
	if a.ControlSocket() != socks[0] {
		t.Errorf("ControlSocket() = %q, want %q", a.ControlSocket(), socks[0])
	}
	fi, err := os.Lstat(socks[0])
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket mode %v; want a socket with 0600", fi.Mode())
	}

	testnet.ServeHTTP(t, b, "b")
	testnet.Get(t, a.HTTPClient(), "http://10.99.0.2/")

	st := status(t, socks[0])
	if st.PublicKey != a.PublicKey().String() || st.NodeID != sidecar.NodeID(a.PublicKey()) {
		t.Errorf("status names %s / %s; want %s / %s", st.PublicKey, st.NodeID, a.PublicKey(), sidecar.NodeID(a.PublicKey()))
	}
	if st.ListenPort != a.ListenPort() || strings.Join(st.Addresses, ",") != "10.99.0.1/32,fd00:99::1/128" {
		t.Errorf("status: port %d, addresses %v", st.ListenPort, st.Addresses)
	}
	if st.UptimeSeconds <= 0 || st.UptimeSeconds > 600 || st.Time.Before(st.Started) {
		t.Errorf("status: started %v, time %v, uptime %v s", st.Started, st.Time, st.UptimeSeconds)
	}
	if len(st.Peers) != 1 {
		t.Fatalf("status has %d peers; want 1", len(st.Peers))
	}
	p := st.Peers[0]
	wantEndpoint := fmt.Sprintf("127.0.0.1:%d", b.ListenPort())
	if p.PublicKey != b.PublicKey().String() || p.Endpoint != wantEndpoint || strings.Join(p.AllowedIPs, ",") != "10.99.0.2/32,fd00:99::2/128" {
		t.Errorf("peer %+v; want key %s, endpoint %s", p, b.PublicKey(), wantEndpoint)
	}
	if p.RxBytes == 0 || p.TxBytes == 0 || p.LatestHandshake.IsZero() || st.Time.Sub(p.LatestHandshake) > time.Minute {
		t.Errorf("after traffic, peer has rx %d, tx %d, handshake %v (now %v)", p.RxBytes, p.TxBytes, p.LatestHandshake, st.Time)
	}
	if st.FlowLog.Enabled {
		t.Errorf("flow log reported on for a node without one: %+v", st.FlowLog)
	}
}

// TestControlStatusListeners checks that forwards show in the status with
// their addresses.
func TestControlStatusListeners(t *testing.T) {
	nodes, socks := controlNodes(t, 2, func(i int, cfg *wgconf.Config) {
		if i == 0 {
			cfg.TCPClientTunnels = []wgconf.TCPClientTunnel{{BindAddress: "127.0.0.1:0", Target: "10.99.0.2:80"}}
			cfg.Metrics = &wgconf.Metrics{BindAddress: "127.0.0.1:0"}
		}
	})
	testnet.ServeHTTP(t, nodes[1], "b")
	st := status(t, socks[0])
	if len(st.Listeners) != 1 {
		t.Fatalf("listeners %+v; want the one forward", st.Listeners)
	}
	l := st.Listeners[0]
	if !strings.Contains(l.Kind, "tcp") || !strings.HasPrefix(l.Listen, "127.0.0.1:") || l.Listen == "127.0.0.1:0" || l.Target != "10.99.0.2:80" {
		t.Errorf("listener %+v", l)
	}
	if l.Conns != nil {
		// Counted: one connection through the forward shows.
		if got := testnet.Get(t, http.DefaultClient, "http://"+l.Listen+"/"); !strings.HasPrefix(got, "b saw") {
			t.Fatalf("through the forward: %q", got)
		}
		http.DefaultClient.CloseIdleConnections()
		if c := status(t, socks[0]).Listeners[0].Conns; c.Accepted != 1 {
			t.Errorf("after one connection: %+v", c)
		}
		_, text := testnet.GetStatus(t, "http://"+nodes[0].MetricsAddr().String()+"/metrics")
		want := fmt.Sprintf("wgsidecar_forward_connections_total{kind=%q,listen=%q} 1\n", l.Kind, l.Listen)
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, text)
		}
	}
}

// TestControlFlows: a [FlowLog] section turns the flow log on, with an
// Output or without one (#15): the control socket serves the latest window
// either way.
func TestControlFlows(t *testing.T) {
	for _, output := range []string{"file", "none"} {
		t.Run(output, func(t *testing.T) { testControlFlows(t, output) })
	}
}

func testControlFlows(t *testing.T, output string) {
	nodes, socks := controlNodes(t, 2, func(i int, cfg *wgconf.Config) {
		// A window that never ends by itself: the test cuts it.
		cfg.FlowLog = &wgconf.FlowLog{Window: time.Hour}
		if output == "file" {
			cfg.FlowLog.Output = filepath.Join(t.TempDir(), "flows.ndjson")
		}
	})
	a, b := nodes[0], nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := control.NewClient(socks[0])

	fl, err := c.Flows(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !fl.FlowLog.Enabled || fl.FlowLog.Window != "1h0m0s" || len(fl.Messages) != 0 {
		t.Errorf("before any window: %+v", fl)
	}
	testnet.ServeHTTP(t, b, "b")
	testnet.Get(t, a.HTTPClient(), "http://10.99.0.2/")
	if err := a.CutFlows(ctx); err != nil {
		t.Fatal(err)
	}
	fl, err = c.Flows(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(fl.Messages) != 1 || fl.FlowLog.Windows != 1 || fl.FlowLog.Messages != 1 {
		t.Fatalf("after one window: %+v", fl)
	}
	m := fl.Messages[0]
	if m.NodeID != sidecar.NodeID(a.PublicKey()) || len(m.PhysicalTraffic) == 0 {
		t.Errorf("message %+v", m)
	}
	found := false
	for _, e := range m.VirtualTraffic {
		if e.Proto == 6 && e.Dst == "10.99.0.2:80" && e.TxBytes > 0 && e.RxBytes > 0 {
			found = true
		}
	}
	if !found {
		t.Errorf("no TCP flow to 10.99.0.2:80 in %+v", m.VirtualTraffic)
	}
	// Reading does not cut: the window stays until the flow log cuts it.
	again, err := c.Flows(ctx)
	if err != nil || len(again.Messages) != 1 || !again.Messages[0].Start.Equal(m.Start) {
		t.Errorf("second read: %+v, %v", again, err)
	}
	if st := status(t, socks[0]); !st.FlowLog.Enabled || st.FlowLog.Windows != 1 {
		t.Errorf("status flow log: %+v", st.FlowLog)
	}
}

// startNode starts one unpeered node from cfg with a generated key.
func startNode(t *testing.T, configure func(cfg *wgconf.Config)) (*sidecar.Node, error) {
	t.Helper()
	k, err := wgconf.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	cfg := &wgconf.Config{Interface: wgconf.Interface{
		PrivateKey: k,
		MTU:        1420,
		Addresses:  []netip.Prefix{netip.MustParsePrefix("10.98.0.1/32")},
	}}
	configure(cfg)
	n, err := sidecar.Start(cfg, sidecar.Options{})
	if err == nil {
		t.Cleanup(func() { n.Close() })
	}
	return n, err
}

func TestControlSocketRemovedAfterClose(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "c.sock")
	n, err := startNode(t, func(cfg *wgconf.Config) { cfg.Control = &wgconf.Control{Socket: sock} })
	if err != nil {
		t.Fatal(err)
	}
	status(t, sock)
	n.Close()
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket after Close: %v; want it removed", err)
	}
	_, err = control.NewClient(sock).Status(context.Background())
	if !errors.Is(err, control.ErrNotRunning) {
		t.Errorf("status after Close: %v; want ErrNotRunning", err)
	}
}

func TestControlSocketInUse(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "c.sock")
	first, err := startNode(t, func(cfg *wgconf.Config) { cfg.Control = &wgconf.Control{Socket: sock} })
	if err != nil {
		t.Fatal(err)
	}
	_, err = startNode(t, func(cfg *wgconf.Config) { cfg.Control = &wgconf.Control{Socket: sock} })
	if err == nil || !errors.Is(err, control.ErrInUse) || !strings.Contains(err.Error(), sock) || !strings.Contains(err.Error(), "[Control]") {
		t.Fatalf("second node on the same socket: %v; want an error naming [Control], the path and that it is in use", err)
	}
	if st := status(t, sock); st.PublicKey != first.PublicKey().String() {
		t.Errorf("the socket now answers for %s; want the first node %s", st.PublicKey, first.PublicKey())
	}
}

func TestControlStaleSocketReplaced(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "c.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false) // as a process that died leaves it
	ln.Close()
	n, err := startNode(t, func(cfg *wgconf.Config) { cfg.Control = &wgconf.Control{Socket: sock} })
	if err != nil {
		t.Fatalf("start over a stale socket: %v", err)
	}
	if st := status(t, sock); st.PublicKey != n.PublicKey().String() {
		t.Errorf("status answered for %s", st.PublicKey)
	}
}

func TestControlDefaultSocket(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	n, err := startNode(t, func(cfg *wgconf.Config) { cfg.Control = &wgconf.Control{} })
	if err != nil {
		t.Fatal(err)
	}
	want := control.DefaultSocket(sidecar.NodeID(n.PublicKey()))
	if n.ControlSocket() != want {
		t.Errorf("ControlSocket() = %q; want the default %q", n.ControlSocket(), want)
	}
	status(t, want)
}

// TestMetricsAddressInUse: a node whose [Metrics] address is taken does not
// start, says why, and leaves no control socket behind. (With the control
// socket's other start-and-stop tests, as its setup and its last check are
// theirs.)
func TestMetricsAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sock := filepath.Join(t.TempDir(), "c.sock")
	_, err = startNode(t, func(cfg *wgconf.Config) {
		cfg.Control = &wgconf.Control{Socket: sock}
		cfg.Metrics = &wgconf.Metrics{BindAddress: ln.Addr().String()}
	})
	if err == nil || !strings.Contains(err.Error(), "[Metrics]") {
		t.Fatalf("metrics on a taken port: %v; want an error naming [Metrics]", err)
	}
	// The failed start cleaned up after itself: the control socket is gone.
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("control socket left by a failed start: %v", err)
	}
}

func TestControlAndMetricsCloseLeavesNoGoroutine(t *testing.T) {
	check := leaktest.Check(t)
	t.Run("nodes", func(t *testing.T) {
		nodes, socks := controlNodes(t, 2, func(i int, cfg *wgconf.Config) {
			cfg.Metrics = &wgconf.Metrics{BindAddress: "127.0.0.1:0"}
			cfg.FlowLog = &wgconf.FlowLog{Window: time.Hour, Output: filepath.Join(t.TempDir(), "flows.ndjson")}
		})
		testnet.ServeHTTP(t, nodes[1], "b")
		testnet.Get(t, nodes[0].HTTPClient(), "http://10.99.0.2/")
		status(t, socks[0])
		if _, err := control.NewClient(socks[0]).Flows(context.Background()); err != nil {
			t.Fatal(err)
		}
		testnet.GetStatus(t, "http://"+nodes[0].MetricsAddr().String()+"/metrics")
		http.DefaultClient.CloseIdleConnections()
	})
	check()
}
