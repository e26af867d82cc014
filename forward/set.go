package forward

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"

	"github.com/wgsidecar/sidecar/metrics"
	"github.com/wgsidecar/sidecar/monitor"
	"github.com/wgsidecar/sidecar/netstack"
	"github.com/wgsidecar/sidecar/proxy"
	"github.com/wgsidecar/sidecar/relay"
	"github.com/wgsidecar/sidecar/wgconf"
)

// ErrClosed is returned by Apply after Close.
var ErrClosed = errors.New("forward: set closed")

// SetConfig configures a Set.
type SetConfig struct {
	// Dialer reaches the tunnel: the node. The proxies resolve names and
	// open UDP sockets through it too.
	Dialer relay.Dialer
	// Stack is the node's stack, which tunnel-to-local forwards and Serve
	// are attached to.
	Stack *netstack.Stack
	// Serve is the [Serve] section of the file the node started with, or
	// nil; a reload does not change it.
	Serve *wgconf.Serve
	// MaxConns bounds each proxy's and forward's concurrent connections;
	// relay.DefaultMaxConns when zero.
	MaxConns int
	// Log receives "forward on" and "forward off" (a proxy logs its own
	// start); nil means slog.Default().
	Log *slog.Logger
	// Monitor, if set, receives the connection records of the
	// tunnel-to-local forwards and served destinations. The proxies and
	// local-to-tunnel forwards use the Dialer's (monitor.Of).
	Monitor *monitor.Monitor
}

// Set is a node's running proxies and forwards: those the sections of its
// file ask for, kept one by one so that a reload starts and stops them
// singly. Host listeners ([TCPClientTunnel], [UDPProxyTunnel], [Socks5],
// [http]) each have their own socket; tunnel-to-local forwards
// ([TCPServerTunnel], [UDPServerTunnel]) share one Server on the stack with
// Serve. Its methods are safe for concurrent use.
type Set struct {
	c SetConfig

	mu      sync.Mutex // held while proxies and forwards start or stop
	running []*running // in the order they started
	srv     *Server    // tunnel-to-local forwards and Serve; nil until one is needed
	closed  bool
}

// running is one section's proxy or forward.
type running struct {
	section any       // the section's value, e.g. wgconf.Socks5: its identity
	name    string    // "[Socks5] 127.0.0.1:1080", for logs; never a secret
	closer  io.Closer // nil for tunnel-to-local forwards (the shared server runs them)
	kind    string    // Listener.Kind
	listen  string    // Listener.Listen
	target  string    // Listener.Target
	conns   func() (open int, accepted uint64)
}

// Listener is a running proxy or forward, as status and metrics show it.
type Listener struct {
	// Kind says what it is: "tcp local-to-tunnel", "udp local-to-tunnel",
	// "socks5", "http", "tcp tunnel-to-local" or "udp tunnel-to-local".
	Kind string
	// Listen is where it accepts: a host address, or ":port" on the
	// node's tunnel addresses.
	Listen string
	// Target is where it relays; "" for proxies.
	Target string
	// Counted reports whether Open and Accepted are kept: the
	// connections (UDP: sessions) open now and accepted since it started.
	Counted  bool
	Open     int
	Accepted uint64
}

// NewSet returns a Set with nothing running.
func NewSet(c SetConfig) *Set {
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return &Set{c: c}
}

// sections lists the sections of cfg that start a proxy or forward, in the
// order they start.
func sections(cfg *wgconf.Config) []any {
	var out []any
	out = appendAny(out, cfg.TCPClientTunnels)
	out = appendAny(out, cfg.UDPProxyTunnels)
	out = appendAny(out, cfg.Socks5)
	out = appendAny(out, cfg.HTTP)
	out = appendAny(out, cfg.TCPServerTunnels)
	return appendAny(out, cfg.UDPServerTunnels)
}

// appendAny appends each of ts to out.
func appendAny[T any](out []any, ts []T) []any {
	for _, t := range ts {
		out = append(out, t)
	}
	return out
}

// Apply makes the running proxies and forwards those of cfg: the ones no
// longer listed stop (ending their connections), new ones start, and
// unchanged ones carry on untouched. It returns the names of the sections
// started and stopped. With atStart, the first error ends it; otherwise
// every section is tried and the errors are joined. After Close it returns
// ErrClosed.
func (s *Set) Apply(cfg *wgconf.Config, atStart bool) (started, stopped []string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, nil, ErrClosed
	}
	want := sections(cfg)
	keep := s.running[:0:0]
	for _, r := range s.running {
		if slices.Contains(want, r.section) {
			keep = append(keep, r)
			continue
		}
		if r.closer != nil {
			r.closer.Close()
		}
		stopped = append(stopped, r.name)
		s.c.Log.Info("forward off", "section", r.name)
	}
	s.running = keep
	var errs []error
	for _, sec := range want {
		if slices.ContainsFunc(s.running, func(r *running) bool { return r.section == sec }) {
			continue
		}
		r, err := s.start(sec)
		if err != nil {
			err = cfg.At(sec, refusedKey(sec, err), err)
			if atStart {
				return nil, nil, err
			}
			s.c.Log.Error("forward not started", "err", err)
			errs = append(errs, err)
			continue
		}
		s.running = append(s.running, r)
		started = append(started, r.name)
	}
	if err := s.updateServerLocked(); err != nil {
		if s.c.Serve != nil {
			err = cfg.At(cfg.Serve, "Subnets", err)
		}
		if atStart {
			return nil, nil, err
		}
		errs = append(errs, err)
	}
	return started, stopped, errors.Join(errs...)
}

// refusedKey is the key of section that err, the failure to start it,
// is about: for the file's error to name it.
func refusedKey(section any, err error) string {
	switch section.(type) {
	case wgconf.HTTPProxy:
		if errors.Is(err, errHTTPS) {
			return "CertFile"
		}
	case wgconf.TCPServerTunnel, wgconf.UDPServerTunnel:
		return "ListenPort"
	}
	return "BindAddress"
}

// errHTTPS refuses wireproxy's HTTPS proxy.
var errHTTPS = errors.New("CertFile/KeyFile (an HTTPS proxy) is not supported yet")

// start starts the proxy or forward of one section. A tunnel-to-local
// forward is only recorded here; updateServerLocked hands it to the server.
func (s *Set) start(section any) (*running, error) {
	switch t := section.(type) {
	case wgconf.TCPClientTunnel:
		r := &running{section: t, name: "[TCPClientTunnel] " + t.BindAddress, kind: "tcp local-to-tunnel", target: t.Target}
		f, err := ListenTCP(HostBind(t.BindAddress), t.Target, s.c.Dialer, s.c.MaxConns, s.c.Log)
		return s.started(r, f, f.Addr, f.Conns, err, "target", t.Target)
	case wgconf.UDPProxyTunnel:
		r := &running{section: t, name: "[UDPProxyTunnel] " + t.BindAddress, kind: "udp local-to-tunnel", target: t.Target}
		f, err := ListenUDP(HostBind(t.BindAddress), t.Target, s.c.Dialer, t.InactivityTimeout, s.c.MaxConns, s.c.Log)
		return s.started(r, f, f.Addr, f.Conns, err, "target", t.Target)
	case wgconf.Socks5:
		r := &running{section: t, name: "[Socks5] " + t.BindAddress, kind: "socks5"}
		p, err := proxy.ListenSOCKS5(proxy.SOCKS5Config{
			BindAddress: HostBind(t.BindAddress), Username: t.Username, Password: t.Password, MaxConns: s.c.MaxConns, Logger: s.c.Log,
		}, s.c.Dialer)
		return s.started(r, p, p.Addr, p.Conns, err)
	case wgconf.HTTPProxy:
		r := &running{section: t, name: "[http] " + t.BindAddress, kind: "http"}
		if t.CertFile != "" || t.KeyFile != "" {
			return nil, fmt.Errorf("forward: %s: %w", r.name, errHTTPS)
		}
		p, err := proxy.ListenHTTP(proxy.HTTPConfig{
			BindAddress: HostBind(t.BindAddress), Username: t.Username, Password: t.Password, MaxConns: s.c.MaxConns, Logger: s.c.Log,
		}, s.c.Dialer)
		return s.started(r, p, p.Addr, p.Conns, err)
	case wgconf.TCPServerTunnel:
		return s.tunnelToLocal(&running{section: t, name: fmt.Sprintf("[TCPServerTunnel] %d", t.ListenPort),
			kind: "tcp tunnel-to-local", listen: fmt.Sprintf(":%d", t.ListenPort), target: t.Target}, false, t.ListenPort), nil
	case wgconf.UDPServerTunnel:
		return s.tunnelToLocal(&running{section: t, name: fmt.Sprintf("[UDPServerTunnel] %d", t.ListenPort),
			kind: "udp tunnel-to-local", listen: fmt.Sprintf(":%d", t.ListenPort), target: t.Target}, true, t.ListenPort), nil
	}
	return nil, fmt.Errorf("forward: unknown section %T", section)
}

// started completes r with the host listener c that its section started
// (or failed to start, with err): c's address, its connection counts, and
// a "forward on" line with attrs (a proxy logs its own start).
// c is not looked at when err is set.
func (s *Set) started(r *running, c io.Closer, addr func() net.Addr, conns func() (int, uint64), err error, attrs ...any) (*running, error) {
	if err != nil {
		return nil, fmt.Errorf("forward: %s: %w", r.name, err)
	}
	r.closer, r.listen, r.conns = c, addr().String(), conns
	if r.kind != "socks5" && r.kind != "http" {
		s.c.Log.Info("forward on", append([]any{"kind", r.kind, "listen", r.listen}, attrs...)...)
	}
	return r, nil
}

// tunnelToLocal logs and returns r, a tunnel-to-local forward of port,
// counted by the shared server.
func (s *Set) tunnelToLocal(r *running, udp bool, port int) *running {
	r.conns = func() (int, uint64) {
		if s.srv == nil { // s.mu is held by Listeners
			return 0, 0
		}
		return s.srv.PortConns(udp, uint16(port))
	}
	s.c.Log.Info("forward on", "kind", r.kind, "port", port, "target", r.target)
	return r
}

// updateServerLocked gives the tunnel-side server the running
// tunnel-to-local forwards, attaching it to the stack the first time one
// (or Serve) needs it. s.mu must be held.
func (s *Set) updateServerLocked() error {
	tcp, udp := map[uint16]string{}, map[uint16]string{}
	var udpTimeout = DefaultUDPTimeout
	haveTimeout := false
	for _, r := range s.running {
		switch t := r.section.(type) {
		case wgconf.TCPServerTunnel:
			tcp[uint16(t.ListenPort)] = t.Target
		case wgconf.UDPServerTunnel:
			udp[uint16(t.ListenPort)] = t.Target
			if t.InactivityTimeout > 0 && (!haveTimeout || t.InactivityTimeout < udpTimeout) {
				udpTimeout, haveTimeout = t.InactivityTimeout, true
			}
		}
	}
	if s.srv != nil {
		s.srv.SetPorts(tcp, udp, udpTimeout)
		return nil
	}
	srv := &Server{TCP: tcp, UDP: udp, UDPTimeout: udpTimeout, MaxConns: s.c.MaxConns, Log: s.c.Log, Monitor: s.c.Monitor}
	if sv := s.c.Serve; sv != nil {
		srv.Subnets = sv.Subnets
		srv.Exit = sv.Exit
	}
	if len(srv.TCP)+len(srv.UDP)+len(srv.Subnets) == 0 && !srv.Exit {
		return nil
	}
	srv.IsLocal = s.c.Stack.IsLocal
	if err := srv.Attach(s.c.Stack); err != nil {
		return err
	}
	s.srv = srv
	if len(srv.Subnets) > 0 || srv.Exit {
		s.c.Log.Info("serving peers", "subnets", fmt.Sprint(srv.Subnets), "exit", srv.Exit)
	}
	return nil
}

// Listeners returns the running proxies and forwards, in the order they
// started.
func (s *Set) Listeners() []Listener {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Listener, 0, len(s.running))
	for _, r := range s.running {
		l := Listener{Kind: r.kind, Listen: r.listen, Target: r.target, Counted: r.conns != nil}
		if l.Counted {
			l.Open, l.Accepted = r.conns()
		}
		out = append(out, l)
	}
	return out
}

// Metrics returns the metric families of the counted proxies and
// forwards: the connections (UDP: sessions) each has open and has
// accepted, labelled by kind and listen address.
func (s *Set) Metrics() []metrics.Family {
	open := metrics.Family{Name: "wgsidecar_forward_open_connections", Type: metrics.Gauge, Help: "Connections (UDP: sessions) a forward or proxy has open."}
	accepted := metrics.Family{Name: "wgsidecar_forward_connections_total", Type: metrics.Counter, Help: "Connections (UDP: sessions) a forward or proxy has accepted."}
	for _, l := range s.Listeners() {
		if !l.Counted {
			continue
		}
		open.Add(float64(l.Open), "kind", l.Kind, "listen", l.Listen)
		accepted.Add(float64(l.Accepted), "kind", l.Kind, "listen", l.Listen)
	}
	return []metrics.Family{open, accepted}
}

// RegisterMetrics registers Metrics with r.
func (s *Set) RegisterMetrics(r *metrics.Registry) { r.Register(s.Metrics) }

// Close stops every proxy and forward, the last started first; later
// Apply calls return ErrClosed.
func (s *Set) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for i := len(s.running) - 1; i >= 0; i-- {
		if c := s.running[i].closer; c != nil {
			c.Close()
		}
	}
	if s.srv != nil {
		s.srv.Close()
	}
	s.running = nil
}

// HostBind makes a listen address without a host bind to loopback: the
// sidecar's listeners are local unless the file names an interface
// (0.0.0.0 or [::] for all).
func HostBind(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != "" {
		return addr
	}
	return net.JoinHostPort("127.0.0.1", port)
}
