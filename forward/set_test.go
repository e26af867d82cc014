package forward

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/internal/leaktest"
	"github.com/wgsidecar/sidecar/metrics"
	"github.com/wgsidecar/sidecar/wgconf"
)

// hostDialer stands in for a node: it dials on the host network.
type hostDialer struct{ net.Dialer }

func (d *hostDialer) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, network, host)
}

func (d *hostDialer) ListenPacket(network, address string) (net.PacketConn, error) {
	return net.ListenPacket(network, address)
}

// echoServer echoes lines on a host port until the test ends.
func echoServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// TestSetApply starts a forward and a proxy, reloads to a file that drops
// the proxy and adds a forward, and checks what Apply reports, what
// Listeners and Metrics show, and that Close ends it all.
func TestSetApply(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	target := echoServer(t)
	s := NewSet(SetConfig{Dialer: &hostDialer{}, Log: slog.New(slog.DiscardHandler)})
	fwd := wgconf.TCPClientTunnel{BindAddress: "127.0.0.1:0", Target: target}
	socks := wgconf.Socks5{BindAddress: "127.0.0.1:0"}
	started, stopped, err := s.Apply(&wgconf.Config{TCPClientTunnels: []wgconf.TCPClientTunnel{fwd}, Socks5: []wgconf.Socks5{socks}}, true)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(started, []string{"[TCPClientTunnel] 127.0.0.1:0", "[Socks5] 127.0.0.1:0"}) || stopped != nil {
		t.Errorf("first Apply: started %v, stopped %v", started, stopped)
	}
	ls := s.Listeners()
	if len(ls) != 2 {
		t.Fatalf("Listeners() = %+v; want 2", ls)
	}
	c, err := net.Dial("tcp", ls[0].Listen)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "hello\n"); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(c).ReadString('\n'); line != "hello\n" || err != nil {
		t.Fatalf("through the forward: %q, %v", line, err)
	}
	want := []Listener{
		{Kind: "tcp local-to-tunnel", Listen: ls[0].Listen, Target: target, Counted: true, Open: 1, Accepted: 1},
		{Kind: "socks5", Listen: ls[1].Listen, Counted: true},
	}
	if got := s.Listeners(); !slices.Equal(got, want) {
		t.Errorf("Listeners() = %+v; want %+v", got, want)
	}
	var r metrics.Registry
	s.RegisterMetrics(&r)
	fams := r.Gather()
	names := []string{}
	for _, f := range fams {
		names = append(names, f.Name)
	}
	if !slices.Equal(names, []string{"wgsidecar_forward_open_connections", "wgsidecar_forward_connections_total"}) {
		t.Errorf("metric families %v", names)
	}

	udp := wgconf.UDPProxyTunnel{BindAddress: "127.0.0.1:0", Target: target, InactivityTimeout: time.Minute}
	started, stopped, err = s.Apply(&wgconf.Config{TCPClientTunnels: []wgconf.TCPClientTunnel{fwd}, UDPProxyTunnels: []wgconf.UDPProxyTunnel{udp}}, false)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(started, []string{"[UDPProxyTunnel] 127.0.0.1:0"}) || !slices.Equal(stopped, []string{"[Socks5] 127.0.0.1:0"}) {
		t.Errorf("second Apply: started %v, stopped %v", started, stopped)
	}
	if ls := s.Listeners(); len(ls) != 2 || ls[0].Kind != "tcp local-to-tunnel" || ls[0].Open != 1 || ls[1].Kind != "udp local-to-tunnel" {
		t.Errorf("after the second Apply, Listeners() = %+v", ls)
	}

	s.Close()
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("a relayed connection survived Close")
	}
	c.Close()
	if ls := s.Listeners(); len(ls) != 0 {
		t.Errorf("after Close, Listeners() = %+v", ls)
	}
	if _, _, err := s.Apply(&wgconf.Config{}, false); !errors.Is(err, ErrClosed) {
		t.Errorf("Apply after Close: %v; want ErrClosed", err)
	}
}

// TestSetApplyErrors checks that at start the first error ends Apply and
// that on a reload every section is tried and the errors are joined.
func TestSetApplyErrors(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	s := NewSet(SetConfig{Dialer: &hostDialer{}, Log: slog.New(slog.DiscardHandler)})
	defer s.Close()
	cfg := &wgconf.Config{
		HTTP:   []wgconf.HTTPProxy{{BindAddress: "127.0.0.1:0", CertFile: "cert.pem"}},
		Socks5: []wgconf.Socks5{{BindAddress: "127.0.0.1:-1"}, {BindAddress: "127.0.0.1:0"}},
	}
	if started, _, err := s.Apply(cfg, true); err == nil || started != nil {
		t.Errorf("Apply at start: started %v, err %v; want an error", started, err)
	}
	started, _, err := s.Apply(cfg, false)
	if err == nil || !slices.Equal(started, []string{"[Socks5] 127.0.0.1:0"}) {
		t.Errorf("Apply on reload: started %v, err %v; want the good section started and an error", started, err)
	}
	if n := len(err.(interface{ Unwrap() []error }).Unwrap()); n != 2 {
		t.Errorf("Apply on reload joined %d errors; want 2: %v", n, err)
	}
}

func TestHostBind(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{":1080", "127.0.0.1:1080"},
		{"0.0.0.0:1080", "0.0.0.0:1080"},
		{"[::]:1080", "[::]:1080"},
		{"192.0.2.1:80", "192.0.2.1:80"},
		{"localhost:80", "localhost:80"},
		{"nonsense", "nonsense"},
	} {
		if got := HostBind(tc.in); got != tc.want {
			t.Errorf("HostBind(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

// TestSetProxyStartLogsOnce: a proxy's start is one log line (the
// proxy's own, with its kind, address and whether it asks for
// credentials), a forward's one "forward on" (#15).
func TestSetProxyStartLogsOnce(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	var logs strings.Builder
	s := NewSet(SetConfig{Dialer: &hostDialer{}, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	cfg := &wgconf.Config{
		Socks5:           []wgconf.Socks5{{BindAddress: "127.0.0.1:0"}},
		HTTP:             []wgconf.HTTPProxy{{BindAddress: "127.0.0.1:0"}},
		TCPClientTunnels: []wgconf.TCPClientTunnel{{BindAddress: "127.0.0.1:0", Target: "10.0.0.2:80"}},
	}
	if _, _, err := s.Apply(cfg, true); err != nil {
		t.Fatal(err)
	}
	s.Close()
	out := logs.String()
	for _, want := range []string{`msg="socks5 proxy listening" proxy=socks5`, `msg="http proxy listening" proxy=http`, `msg="forward on" kind="tcp local-to-tunnel"`} {
		if n := strings.Count(out, want); n != 1 {
			t.Errorf("%q logged %d times; want once", want, n)
		}
	}
	if n := strings.Count(out, "\n"); n != 3 {
		t.Errorf("%d lines for three starts:\n%s", n, out)
	}
}
