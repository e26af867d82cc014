package sidecar

import (
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"

	"github.com/wgsidecar/sidecar/forward"
	"github.com/wgsidecar/sidecar/proxy"
	"github.com/wgsidecar/sidecar/wgconf"
)

// forwards are the proxies and forwards the file's sections asked for,
// kept one by one so that a reload can start and stop them singly. The zero
// value is ready for use.
type forwards struct {
	mu      sync.Mutex // held while forwards start or stop
	running []*runningForward
	srv     *forward.Server // tunnel-to-local forwards and [Serve]; nil until one is needed
	closed  bool
}

// runningForward is one section's proxy or forward.
type runningForward struct {
	section any       // the section's value, e.g. wgconf.Socks5: its identity
	name    string    // "[Socks5] 127.0.0.1:1080", for logs; never a secret
	closer  io.Closer // nil for tunnel-to-local forwards (the shared server runs them)
	entry   *listenerEntry
}

// forwardSections lists the sections of cfg that start a proxy or forward,
// in the order they start.
func forwardSections(cfg *wgconf.Config) []any {
	var out []any
	for _, t := range cfg.TCPClientTunnels {
		out = append(out, t)
	}
	for _, t := range cfg.UDPProxyTunnels {
		out = append(out, t)
	}
	for _, p := range cfg.Socks5 {
		out = append(out, p)
	}
	for _, p := range cfg.HTTP {
		out = append(out, p)
	}
	for _, t := range cfg.TCPServerTunnels {
		out = append(out, t)
	}
	for _, t := range cfg.UDPServerTunnels {
		out = append(out, t)
	}
	return out
}

// startForwards starts the proxies and forwards of the node's file.
func (n *Node) startForwards() error {
	_, _, err := n.applyForwards(n.cfg, true)
	return err
}

// applyForwards makes the running proxies and forwards those of cfg: the
// ones no longer listed stop (ending their connections), new ones start,
// and unchanged ones carry on untouched. Host listeners ([TCPClientTunnel],
// [UDPProxyTunnel], [Socks5], [http]) each have their own socket;
// tunnel-to-local forwards ([TCPServerTunnel], [UDPServerTunnel]) share one
// forward.Server on the stack with [Serve], whose subnets and exit are
// those of the file the node started with. With atStart, the first error
// ends it; otherwise every section is tried and the errors are joined.
func (n *Node) applyForwards(cfg *wgconf.Config, atStart bool) (started, stopped []string, err error) {
	f := &n.fwd
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, nil, errClosed
	}
	want := forwardSections(cfg)
	keep := f.running[:0:0]
	for _, r := range f.running {
		if slices.Contains(want, r.section) {
			keep = append(keep, r)
			continue
		}
		if r.closer != nil {
			r.closer.Close()
		}
		n.unregisterListener(r.entry)
		stopped = append(stopped, r.name)
		n.log.Info("forward off", "section", r.name)
	}
	f.running = keep
	var errs []error
	for _, s := range want {
		if slices.ContainsFunc(f.running, func(r *runningForward) bool { return r.section == s }) {
			continue
		}
		r, err := n.startSection(s)
		if err != nil {
			if atStart {
				return nil, nil, err
			}
			n.log.Error("forward not started", "err", err)
			errs = append(errs, err)
			continue
		}
		f.running = append(f.running, r)
		started = append(started, r.name)
	}
	if err := n.updateServerLocked(); err != nil {
		if atStart {
			return nil, nil, err
		}
		errs = append(errs, err)
	}
	return started, stopped, errors.Join(errs...)
}

// startSection starts the proxy or forward of one section. A tunnel-to-local
// forward is only recorded here; updateServerLocked hands it to the server.
func (n *Node) startSection(section any) (*runningForward, error) {
	max := n.opts.MaxConns
	switch t := section.(type) {
	case wgconf.TCPClientTunnel:
		name := "[TCPClientTunnel] " + t.BindAddress
		f, err := forward.ListenTCP(hostBind(t.BindAddress), t.Target, n, max, n.log)
		if err != nil {
			return nil, fmt.Errorf("sidecar: %s: %w", name, err)
		}
		n.log.Info("forward on", "kind", "tcp local-to-tunnel", "listen", f.Addr().String(), "target", t.Target)
		return &runningForward{section: t, name: name, closer: f,
			entry: n.registerListener("tcp local-to-tunnel", f.Addr().String(), t.Target, f.Conns)}, nil
	case wgconf.UDPProxyTunnel:
		name := "[UDPProxyTunnel] " + t.BindAddress
		f, err := forward.ListenUDP(hostBind(t.BindAddress), t.Target, n, t.InactivityTimeout, max, n.log)
		if err != nil {
			return nil, fmt.Errorf("sidecar: %s: %w", name, err)
		}
		n.log.Info("forward on", "kind", "udp local-to-tunnel", "listen", f.Addr().String(), "target", t.Target)
		return &runningForward{section: t, name: name, closer: f,
			entry: n.registerListener("udp local-to-tunnel", f.Addr().String(), t.Target, f.Conns)}, nil
	case wgconf.Socks5:
		name := "[Socks5] " + t.BindAddress
		s, err := proxy.ListenSOCKS5(proxy.SOCKS5Config{
			BindAddress: hostBind(t.BindAddress), Username: t.Username, Password: t.Password, MaxConns: max, Logger: n.log,
		}, n)
		if err != nil {
			return nil, fmt.Errorf("sidecar: %s: %w", name, err)
		}
		n.log.Info("proxy on", "kind", "socks5", "listen", s.Addr().String(), "auth", t.Username != "")
		return &runningForward{section: t, name: name, closer: s,
			entry: n.registerListener("socks5", s.Addr().String(), "", nil)}, nil
	case wgconf.HTTPProxy:
		name := "[http] " + t.BindAddress
		if t.CertFile != "" || t.KeyFile != "" {
			return nil, fmt.Errorf("sidecar: %s: CertFile/KeyFile (an HTTPS proxy) is not supported yet", name)
		}
		s, err := proxy.ListenHTTP(proxy.HTTPConfig{
			BindAddress: hostBind(t.BindAddress), Username: t.Username, Password: t.Password, MaxConns: max, Logger: n.log,
		}, n)
		if err != nil {
			return nil, fmt.Errorf("sidecar: %s: %w", name, err)
		}
		n.log.Info("proxy on", "kind", "http", "listen", s.Addr().String(), "auth", t.Username != "")
		return &runningForward{section: t, name: name, closer: s,
			entry: n.registerListener("http", s.Addr().String(), "", nil)}, nil
	case wgconf.TCPServerTunnel:
		n.log.Info("forward on", "kind", "tcp tunnel-to-local", "port", t.ListenPort, "target", t.Target)
		return &runningForward{section: t, name: fmt.Sprintf("[TCPServerTunnel] %d", t.ListenPort),
			entry: n.registerListener("tcp tunnel-to-local", fmt.Sprintf(":%d", t.ListenPort), t.Target, nil)}, nil
	case wgconf.UDPServerTunnel:
		n.log.Info("forward on", "kind", "udp tunnel-to-local", "port", t.ListenPort, "target", t.Target)
		return &runningForward{section: t, name: fmt.Sprintf("[UDPServerTunnel] %d", t.ListenPort),
			entry: n.registerListener("udp tunnel-to-local", fmt.Sprintf(":%d", t.ListenPort), t.Target, nil)}, nil
	}
	return nil, fmt.Errorf("sidecar: unknown forward section %T", section)
}

// updateServerLocked gives the tunnel-side server the running
// tunnel-to-local forwards, attaching it to the stack the first time one
// (or the start file's [Serve]) needs it. f.mu must be held.
func (n *Node) updateServerLocked() error {
	f := &n.fwd
	tcp, udp := map[uint16]string{}, map[uint16]string{}
	var udpTimeout = forward.DefaultUDPTimeout
	haveTimeout := false
	for _, r := range f.running {
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
	if f.srv != nil {
		f.srv.SetPorts(tcp, udp, udpTimeout)
		return nil
	}
	srv := &forward.Server{TCP: tcp, UDP: udp, UDPTimeout: udpTimeout, MaxConns: n.opts.MaxConns, Log: n.log, Monitor: &n.mon}
	if s := n.cfg.Serve; s != nil {
		srv.Subnets = s.Subnets
		srv.Exit = s.Exit
	}
	if len(srv.TCP)+len(srv.UDP)+len(srv.Subnets) == 0 && !srv.Exit {
		return nil
	}
	srv.IsLocal = n.stack.IsLocal
	if err := srv.Attach(n.stack); err != nil {
		return fmt.Errorf("sidecar: %w", err)
	}
	f.srv = srv
	if len(srv.Subnets) > 0 || srv.Exit {
		n.log.Info("serving peers", "subnets", fmt.Sprint(srv.Subnets), "exit", srv.Exit)
	}
	return nil
}

// closeForwards stops every proxy and forward; later applyForwards calls
// fail.
func (n *Node) closeForwards() {
	f := &n.fwd
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for i := len(f.running) - 1; i >= 0; i-- {
		if c := f.running[i].closer; c != nil {
			c.Close()
		}
	}
	if f.srv != nil {
		f.srv.Close()
	}
	f.running = nil
}

// hostBind makes a listen address without a host bind to loopback: the
// sidecar's listeners are local unless the file names an interface
// (0.0.0.0 or [::] for all).
func hostBind(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != "" {
		return addr
	}
	return net.JoinHostPort("127.0.0.1", port)
}
