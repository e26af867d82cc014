package sidecar

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"

	"github.com/wgsidecar/sidecar/forward"
	"github.com/wgsidecar/sidecar/proxy"
)

// startForwards starts the file's proxies ([Socks5], [http]) and forwards:
// local-to-tunnel TCP
// ([TCPClientTunnel]) and UDP ([UDPProxyTunnel]) listeners on the host, and
// the tunnel-side server for tunnel-to-local forwards ([TCPServerTunnel],
// [UDPServerTunnel]) and served subnets or exit ([Serve]).
func (n *Node) startForwards() error {
	cfg := n.cfg
	for _, t := range cfg.TCPClientTunnels {
		f, err := forward.ListenTCP(hostBind(t.BindAddress), t.Target, n, 0, n.log)
		if err != nil {
			return fmt.Errorf("sidecar: [TCPClientTunnel] %s: %w", t.BindAddress, err)
		}
		n.closers = append(n.closers, f)
		n.registerListener("tcp local-to-tunnel", f.Addr().String(), t.Target, f.Conns)
		n.log.Info("forward on", "kind", "tcp local-to-tunnel", "listen", f.Addr().String(), "target", t.Target)
	}
	for _, t := range cfg.UDPProxyTunnels {
		f, err := forward.ListenUDP(hostBind(t.BindAddress), t.Target, n, t.InactivityTimeout, 0, n.log)
		if err != nil {
			return fmt.Errorf("sidecar: [UDPProxyTunnel] %s: %w", t.BindAddress, err)
		}
		n.closers = append(n.closers, f)
		n.registerListener("udp local-to-tunnel", f.Addr().String(), t.Target, f.Conns)
		n.log.Info("forward on", "kind", "udp local-to-tunnel", "listen", f.Addr().String(), "target", t.Target)
	}
	for _, p := range cfg.Socks5 {
		s, err := proxy.ListenSOCKS5(proxy.SOCKS5Config{
			BindAddress: hostBind(p.BindAddress), Username: p.Username, Password: p.Password, Logger: n.log,
		}, n)
		if err != nil {
			return fmt.Errorf("sidecar: [Socks5] %s: %w", p.BindAddress, err)
		}
		n.closers = append(n.closers, s)
		n.registerListener("socks5", s.Addr().String(), "", nil)
		n.log.Info("proxy on", "kind", "socks5", "listen", s.Addr().String(), "auth", p.Username != "")
	}
	for _, p := range cfg.HTTP {
		if p.CertFile != "" || p.KeyFile != "" {
			return fmt.Errorf("sidecar: [http] %s: CertFile/KeyFile (an HTTPS proxy) is not supported yet", p.BindAddress)
		}
		s, err := proxy.ListenHTTP(proxy.HTTPConfig{
			BindAddress: hostBind(p.BindAddress), Username: p.Username, Password: p.Password, Logger: n.log,
		}, n)
		if err != nil {
			return fmt.Errorf("sidecar: [http] %s: %w", p.BindAddress, err)
		}
		n.closers = append(n.closers, s)
		n.registerListener("http", s.Addr().String(), "", nil)
		n.log.Info("proxy on", "kind", "http", "listen", s.Addr().String(), "auth", p.Username != "")
	}
	srv := &forward.Server{TCP: map[uint16]string{}, UDP: map[uint16]string{}, Log: n.log, Monitor: &n.mon}
	for _, t := range cfg.TCPServerTunnels {
		srv.TCP[uint16(t.ListenPort)] = t.Target
	}
	for _, t := range cfg.UDPServerTunnels {
		srv.UDP[uint16(t.ListenPort)] = t.Target
		if t.InactivityTimeout > 0 && (srv.UDPTimeout == 0 || t.InactivityTimeout < srv.UDPTimeout) {
			srv.UDPTimeout = t.InactivityTimeout
		}
	}
	if cfg.Serve != nil {
		srv.Subnets = cfg.Serve.Subnets
		srv.Exit = cfg.Serve.Exit
	}
	if len(srv.TCP)+len(srv.UDP)+len(srv.Subnets) == 0 && !srv.Exit {
		return nil
	}
	own := n.stack.Addresses()
	srv.IsLocal = func(a netip.Addr) bool { return slices.Contains(own, a.Unmap()) }
	if err := srv.Attach(n.stack); err != nil {
		return fmt.Errorf("sidecar: %w", err)
	}
	n.closers = append(n.closers, srv)
	for port, target := range srv.TCP {
		n.registerListener("tcp tunnel-to-local", fmt.Sprintf(":%d", port), target, nil)
		n.log.Info("forward on", "kind", "tcp tunnel-to-local", "port", port, "target", target)
	}
	for port, target := range srv.UDP {
		n.registerListener("udp tunnel-to-local", fmt.Sprintf(":%d", port), target, nil)
		n.log.Info("forward on", "kind", "udp tunnel-to-local", "port", port, "target", target)
	}
	if len(srv.Subnets) > 0 || srv.Exit {
		n.log.Info("serving peers", "subnets", fmt.Sprint(srv.Subnets), "exit", srv.Exit)
	}
	return nil
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

// closeAll closes cs in reverse order.
func closeAll(cs []io.Closer) {
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i].Close()
	}
}
