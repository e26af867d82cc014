// Package sidecar assembles one WireGuard node in user space: a gVisor
// network stack (package netstack) joined by wireguard-go to a UDP socket,
// configured from a wg-quick style file (package wgconf).
//
// It is the embedding API. A Go program, typically a test, starts a node
// from a parsed file or a struct, then uses it like a small network: Dial,
// Listen, ListenPacket, HTTPClient, Ping. Close stops every goroutine the
// node started.
//
//	cfg, err := wgconf.ParseFile("wg0.conf")
//	node, err := sidecar.Start(cfg, sidecar.Options{})
//	defer node.Close()
//	resp, err := node.HTTPClient().Get("http://10.0.0.2/")
//
// Package sidecartest builds connected nodes in one call.
//
// The package is a façade: it owns the Node, the WireGuard device and the
// embedding API, and wires each feature in from the package that owns it.
// Device configuration is devconf's (UAPI text, pure functions); the flow
// log netlog's; proxies and forwards forward's; the watchdog watchdog's;
// the packet-path taps and drop reasons monitor's; the control socket
// control's; the metrics each subsystem registers on a metrics.Registry.
// Files: sidecar.go (Node, Start, Close, the embedding API), device.go
// (the choice of WireGuard device), peers.go (peers and the device's
// status), flowlog.go, reload.go (and the proxies and forwards it
// applies) and control_node.go (control socket, metrics listener).
package sidecar

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/wgsidecar/sidecar/devconf"
	"github.com/wgsidecar/sidecar/forward"
	"github.com/wgsidecar/sidecar/metrics"
	"github.com/wgsidecar/sidecar/monitor"
	"github.com/wgsidecar/sidecar/netlog"
	"github.com/wgsidecar/sidecar/netstack"
	"github.com/wgsidecar/sidecar/resolver"
	"github.com/wgsidecar/sidecar/udpbind"
	"github.com/wgsidecar/sidecar/watchdog"
	"github.com/wgsidecar/sidecar/wgconf"
	"github.com/wgsidecar/sidecar/wrap"
)

// Options tune a node beyond its configuration file. The zero value is
// ready for use.
type Options struct {
	// Logger receives the node's structured logs; slog.Default() when nil.
	Logger *slog.Logger
	// LookupEndpoint resolves a peer Endpoint's host name on the host
	// network; net.DefaultResolver when nil.
	LookupEndpoint func(ctx context.Context, host string) ([]netip.Addr, error)
	// StaleHandshake is how long a peer with a host-name endpoint may go
	// without a handshake before the name is resolved again; 135 s (the
	// interval wg-quick's reresolve-dns uses) when zero.
	StaleHandshake time.Duration
	// Watchdog is how long a peer with traffic waiting may go without a
	// handshake before the node re-resolves its endpoint, reopens its UDP
	// socket if sends were failing, and starts a handshake (see
	// DefaultWatchdog, used when zero); negative turns the watchdog off.
	Watchdog time.Duration
	// FlowSink, if set, receives the node's flow log (in addition to the
	// file's [FlowLog] Output), which turns flow logging on even when
	// the file has no [FlowLog] section. netlog.MemorySink keeps it in
	// memory for the program to read.
	FlowSink netlog.Sink
	// WrapTUN, if set, wraps the tunnel device before WireGuard and the
	// counting wrapper see it: a place to capture or inspect every IP
	// packet (the wrapper must pass packets through unchanged).
	WrapTUN func(tun.Device) tun.Device
	// MaxConns bounds the concurrent connections (UDP: sessions) of each
	// proxy and forward the file starts; relay.DefaultMaxConns (1024)
	// when zero. A connection over the limit is refused and the refusal
	// logged.
	MaxConns int
	// TCPKeepalive is the silence after which the tunnel side of a TCP
	// connection (Dial, proxies, forwards) probes its peer; one to a peer
	// gone away ends within twice it (see netstack.Options.Keepalive):
	// netstack.DefaultKeepalive (30 s) when zero, negative turns it off.
	TCPKeepalive time.Duration
	// LogStreamFlush, if set, is how long a flow-log entry may wait
	// before its upload to the [LogStream] collector (logtail's default,
	// 1 s, when zero).
	LogStreamFlush time.Duration
	// OwnWireGuard runs the node on the module's own WireGuard
	// implementation (package wgdev), which encrypts and sends each
	// packet in the goroutine that has it (unless WrapTUN is set),
	// instead of wireguard-go's device. It speaks the same protocol and
	// takes the same configuration; it is new, so it is off by default.
	OwnWireGuard bool
}

// errClosed is returned by what a closed node can no longer do.
var errClosed = errors.New("sidecar: node closed")

// Node is one running sidecar. Its methods are safe for concurrent use.
//
// The node owns the WireGuard device and the stack and wires each feature
// in through its own package: the flow log (netlog), the proxies and
// forwards (forward), the watchdog (watchdog), the monitor's taps
// (monitor), the control socket (control) and the metrics (metrics).
type Node struct {
	cfg    *wgconf.Config // the configuration it runs; never modified
	log    *slog.Logger
	opts   Options
	stack  *netstack.Stack
	dev    wgDevice
	tun    *wrap.TUN          // counts the virtual layer
	bind   *wrap.Bind         // counts the physical layer
	dns    *resolver.Resolver // nil when the file sets no DNS servers
	dialer resolver.Dialer
	public wgconf.PublicKey

	flows  *netlog.NodeLog // nil when flow logging is off
	mon    monitor.Monitor
	fwd    *forward.Set       // proxies and forwards
	dog    *watchdog.Watchdog // nil until started
	reg    metrics.Registry
	ctl    nodeControl                    // control socket and metrics listener (control_node.go)
	routed atomic.Pointer[devconf.Routes] // the peers' AllowedIPs (never nil after startDevice), for the no-peer drops and the dial guard

	reloadMu sync.Mutex // serialises Reload and SetPeers

	mu      sync.Mutex
	peers   []wgconf.Peer // current peers
	started time.Time
	closed  bool

	httpOnce   sync.Once
	httpClient *http.Client
}

// Start brings a node up: the stack with the file's addresses, the
// WireGuard device with its peers, listening on ListenPort. It returns once
// the device is up; handshakes happen on first traffic (or keepalive).
func Start(cfg *wgconf.Config, opts Options) (*Node, error) {
	if cfg == nil {
		return nil, errors.New("sidecar: nil config")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cmp.Or(opts.Logger, slog.Default()), opts: opts, public: cfg.Interface.PrivateKey.Public()}
	for _, w := range cfg.Warnings {
		n.log.Warn(w.Msg, "file", w.File, "line", w.Line, "key", w.Key)
	}
	for _, section := range cfg.Inactive() {
		n.log.Warn("section accepted but not served by this version", "section", section)
	}
	if err := n.startDevice(); err != nil {
		return nil, err
	}
	if err := n.startFeatures(); err != nil {
		n.release()
		return nil, err
	}
	n.log.Info("sidecar up", "public_key", n.public.String(), "listen_port", n.ListenPort(), "peers", len(cfg.Peers))
	return n, nil
}

// startDevice makes the stack and the WireGuard device over it, with the
// counting wrappers and the monitor's taps between them, starts the flow
// log on the wrappers, and brings the device up with its peers.
func (n *Node) startDevice() error {
	cfg := n.cfg
	var addrs []netip.Addr
	for _, p := range cfg.Interface.Addresses {
		addrs = append(addrs, p.Addr())
	}
	st, err := netstack.New(netstack.Options{
		Addresses: addrs,
		MTU:       cfg.Interface.MTU,
		Routes:    cfg.TunnelRoutes(cfg.Peers),
		// Serving subnets or exit traffic takes packets for any address.
		Promiscuous: cfg.Serve != nil && (len(cfg.Serve.Subnets) > 0 || cfg.Serve.Exit),
		Keepalive:   n.opts.TCPKeepalive,
	})
	if err != nil {
		return cfg.At(&cfg.Interface, "Address", fmt.Errorf("sidecar: %w", err))
	}
	n.stack = st
	n.fwd = forward.NewSet(forward.SetConfig{
		Dialer: n, Stack: st, Serve: cfg.Serve, MaxConns: n.opts.MaxConns, Log: n.log, Monitor: &n.mon,
	})
	if len(cfg.Interface.DNS) > 0 {
		n.dns = &resolver.Resolver{Servers: cfg.Interface.DNS, Search: cfg.Interface.DNSSearch, Dial: st.DialContext}
	}
	n.dialer = resolver.Dialer{Lookup: n.LookupNetIP, Dial: watchdog.GuardDial(dogNode{n}, st.DialContext),
		PreferIPv6: cfg.Resolve != nil && cfg.Resolve.ResolveStrategy == "ipv6"}
	var tunDev tun.Device = st.Device()
	if n.opts.WrapTUN != nil {
		tunDev = n.opts.WrapTUN(tunDev)
	}
	monitor.ObserveStack(st, &n.mon)
	n.routed.Store(devconf.AllowedIPs(nil)) // until setPeers: no peer
	routed := func(dst []byte) bool { return n.routed.Load().Covers(dst) }
	n.tun = wrap.NewTUN(monitor.TapTUN(tunDev, &n.mon, routed))
	n.bind = wrap.NewBind(monitor.TapBind(udpbind.New(), &n.mon))
	n.dev = n.newDevice(routed)
	// Counting starts before the socket's first packet: the handshake
	// that Up and setPeers send is in the first window.
	if err := n.startFlowLog(); err != nil {
		n.release()
		return err
	}
	if err := n.dev.IpcSet(devconf.Interface(cfg.Interface.PrivateKey, cfg.Interface.ListenPort)); err != nil {
		n.release()
		return cfg.At(&cfg.Interface, "ListenPort", fmt.Errorf("sidecar: configure device: %w", err))
	}
	if err := n.dev.Up(); err != nil {
		n.release()
		return cfg.At(&cfg.Interface, "ListenPort", fmt.Errorf("sidecar: bring device up: %w", err))
	}
	if err := n.setPeers(cfg.Peers, true); err != nil {
		n.release()
		return err
	}
	return nil
}

// startFeatures starts what the file asks for beyond the device and its
// flow log: the proxies and forwards, the control socket, the metrics and
// the watchdog. On error the caller releases the node.
func (n *Node) startFeatures() error {
	if _, _, err := n.applyForwards(n.cfg, true); err != nil {
		return err
	}
	n.mu.Lock()
	n.started = time.Now()
	n.mu.Unlock()
	n.registerMetrics()
	if err := n.startControl(); err != nil {
		return err
	}
	if err := n.startMetrics(); err != nil {
		return err
	}
	n.dog = watchdog.Start(dogNode{n}, watchdog.Config{
		Timeout: n.opts.Watchdog, Stale: n.opts.StaleHandshake, Tick: monitor.QueueDropLogger(n.stack.QueueDrops, n.log), Log: n.log,
	})
	n.dog.RegisterMetrics(&n.reg)
	return nil
}

// PublicKey returns the node's public key.
func (n *Node) PublicKey() wgconf.PublicKey { return n.public }

// Addresses returns the node's tunnel addresses.
func (n *Node) Addresses() []netip.Addr { return n.stack.Addresses() }

// Config returns the configuration the node was started with. The caller
// must not modify it.
func (n *Node) Config() *wgconf.Config { return n.cfg }

// Stack returns the node's network stack, for forwarders and proxies.
func (n *Node) Stack() *netstack.Stack { return n.stack }

// Monitor returns the node's live event stream: packets passing from and
// to the peers (the tunnel device) and from and to the network (the UDP
// socket), packets dropped with their reasons, and the connections of the
// proxies and forwards. Listening costs the packet path one atomic load
// per batch while nobody listens.
func (n *Node) Monitor() *monitor.Monitor { return &n.mon }

// LookupNetIP resolves host through the tunnel's DNS servers when the file
// sets any, and on the host otherwise. network is "ip", "ip4" or "ip6".
func (n *Node) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	return n.dns.LookupNetIP(ctx, network, host) // the host's when nil
}

// Dial connects to address through the tunnel; see DialContext.
func (n *Node) Dial(network, address string) (net.Conn, error) {
	return n.DialContext(context.Background(), network, address)
}

// DialContext connects to address ("host:port") through the tunnel over
// network ("tcp", "tcp4", "tcp6", "udp", "udp4", "udp6"). A host name is
// resolved with LookupNetIP and its addresses are tried in turn (IPv6
// first when the file's [Resolve] ResolveStrategy says ipv6).
func (n *Node) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return n.dialer.DialContext(ctx, network, address)
}

// Listen listens for TCP connections on the node's tunnel address.
// network is "tcp", "tcp4" or "tcp6"; address is "[ip]:port", where an
// empty ip listens on every tunnel address.
func (n *Node) Listen(network, address string) (net.Listener, error) {
	return n.stack.Listen(network, address)
}

// ListenPacket opens a UDP socket on the node's tunnel address, with the
// address rules of Listen.
func (n *Node) ListenPacket(network, address string) (net.PacketConn, error) {
	return n.stack.ListenPacket(network, address)
}

// HTTPClient returns the node's HTTP client: its connections go through the
// tunnel, with names resolved as LookupNetIP does. Every call returns the
// same client; Close closes its idle connections.
func (n *Node) HTTPClient() *http.Client {
	n.httpOnce.Do(func() {
		n.httpClient = &http.Client{Transport: &http.Transport{
			DialContext:         n.DialContext,
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     30 * time.Second,
		}}
	})
	return n.httpClient
}

// Ping sends an ICMP echo request through the tunnel to host (an IP or a
// name) and returns the round-trip time of the reply.
func (n *Node) Ping(ctx context.Context, host string) (time.Duration, error) {
	addrs, err := n.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return 0, err
	}
	return n.stack.Ping(ctx, addrs[0])
}

// Close shuts the node down: the WireGuard device, its socket, the stack and
// every goroutine the node started. It is idempotent.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()
	n.httpOnce.Do(func() {}) // no client is made after Close
	if n.httpClient != nil {
		n.httpClient.CloseIdleConnections()
	}
	n.release()
	n.log.Info("sidecar down", "public_key", n.public.String())
	return nil
}

// release stops what Start started, in reverse: the watchdog; metrics
// and control socket; forwards and proxies; the flow log (writing its
// last window while the tunnel is still up); the WireGuard device with its
// socket and tun device; the stack. Each step is a no-op when its part
// never started.
func (n *Node) release() {
	if n.dog != nil {
		n.dog.Close()
	}
	n.ctl.close()
	if n.fwd != nil {
		n.fwd.Close()
	}
	n.shutdownFlowLog()
	if n.dev != nil {
		n.dev.Close() // closes the bind and the tun device
	}
	n.stack.Close()
}
