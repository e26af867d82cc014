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
package sidecar

import (
	"bufio"
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/wgsidecar/sidecar/logtail"
	"github.com/wgsidecar/sidecar/monitor"
	"github.com/wgsidecar/sidecar/netlog"
	"github.com/wgsidecar/sidecar/netstack"
	"github.com/wgsidecar/sidecar/resolver"
	"github.com/wgsidecar/sidecar/udpbind"
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
	// proxy and forward the file starts; forward.DefaultMaxConns (1024)
	// when zero. A connection over the limit is refused and the refusal
	// logged.
	MaxConns int
	// LogStreamFlush, if set, is how long a flow-log entry may wait
	// before its upload to the [LogStream] collector (logtail's default,
	// 1 s, when zero).
	LogStreamFlush time.Duration
}

// errClosed is returned by what a closed node can no longer do.
var errClosed = errors.New("sidecar: node closed")

// Node is one running sidecar. Its methods are safe for concurrent use.
type Node struct {
	cfg    *wgconf.Config // the configuration it runs; never modified
	log    *slog.Logger
	opts   Options
	stack  *netstack.Stack
	dev    *device.Device
	tun    *wrap.TUN  // counts the virtual layer
	bind   *wrap.Bind // counts the physical layer
	flows  *netlog.Logger
	peerOf atomic.Pointer[map[netip.AddrPort]netip.Addr] // endpoint -> peer tunnel address, for the flow log
	dns    *resolver.Resolver                            // nil when the file sets no DNS servers
	public wgconf.PublicKey

	reloadMu sync.Mutex // serialises Reload

	mu      sync.Mutex
	peers   []wgconf.Peer // current peers
	started time.Time
	closed  bool

	closers          []io.Closer // control socket, metrics; closed in reverse order
	fwd              forwards    // proxies and forwards (forwards.go)
	mon              monitor.Monitor
	queueDropsLogged uint64 // owned by reresolveLoop
	// logStream is the flow log's log stream ([LogStream]); nil when off.
	logStream *logtail.Logger

	ctl nodeControl // control socket, metrics and what they report (control_node.go)
	dog watchdog    // watchdog.go

	httpOnce   sync.Once
	httpClient *http.Client

	stop chan struct{}
	wg   sync.WaitGroup
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
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	n := &Node{
		cfg:    cfg,
		log:    log,
		opts:   opts,
		public: cfg.Interface.PrivateKey.Public(),
		stop:   make(chan struct{}),
	}
	for _, w := range cfg.Warnings {
		log.Warn(w.Msg, "file", w.File, "line", w.Line, "key", w.Key)
	}
	for _, section := range inactiveSections(cfg) {
		log.Warn("section accepted but not served by this version", "section", section)
	}
	var addrs []netip.Addr
	for _, p := range cfg.Interface.Addresses {
		addrs = append(addrs, p.Addr())
	}
	st, err := netstack.New(netstack.Options{
		Addresses: addrs,
		MTU:       cfg.Interface.MTU,
		Routes:    routesOf(cfg.Interface.Addresses, cfg.Peers),
		// Serving subnets or exit traffic takes packets for any address.
		Promiscuous: cfg.Serve != nil && (len(cfg.Serve.Subnets) > 0 || cfg.Serve.Exit),
	})
	if err != nil {
		return nil, fmt.Errorf("sidecar: %w", err)
	}
	n.stack = st
	if len(cfg.Interface.DNS) > 0 {
		n.dns = &resolver.Resolver{Servers: cfg.Interface.DNS, Search: cfg.Interface.DNSSearch, Dial: st.DialContext}
	}
	var tunDev tun.Device = st.Device()
	if opts.WrapTUN != nil {
		tunDev = opts.WrapTUN(tunDev)
	}
	tunDev = traceTUN{Device: tunDev, n: n}
	st.SetDropObserver(dropObserver{&n.mon})
	n.tun = wrap.NewTUN(tunDev)
	n.bind = wrap.NewBind(&traceBind{Bind: udpbind.New(), mon: &n.mon})
	n.dev = device.NewDevice(n.tun, n.bind, deviceLogger(log, &n.mon))

	// On failure, undo what was started; each step is a no-op when its
	// part never started.
	fail := func(err error) (*Node, error) {
		n.release()
		return nil, err
	}
	if err := n.dev.IpcSet(n.interfaceUAPI()); err != nil {
		return fail(fmt.Errorf("sidecar: configure device: %w", err))
	}
	if err := n.dev.Up(); err != nil {
		return fail(fmt.Errorf("sidecar: bring device up: %w", err))
	}
	if err := n.setPeers(cfg.Peers, true); err != nil {
		return fail(err)
	}
	if err := n.startFlowLog(); err != nil {
		return fail(err)
	}
	if err := n.startForwards(); err != nil {
		return fail(err)
	}
	n.started = time.Now()
	if err := n.startControl(); err != nil {
		return fail(err)
	}
	if err := n.startMetrics(); err != nil {
		return fail(err)
	}
	n.wg.Add(1)
	go n.reresolveLoop()
	if opts.Watchdog >= 0 {
		n.wg.Add(1)
		go n.watchdogLoop(cmp.Or(opts.Watchdog, DefaultWatchdog))
	}
	log.Info("sidecar up", "public_key", n.public.String(), "listen_port", n.ListenPort(), "peers", len(cfg.Peers))
	return n, nil
}

// inactiveSections names the sections of cfg that this version parses but
// does not act on yet, so that "sidecar up" says so instead of ignoring
// them silently.
func inactiveSections(cfg *wgconf.Config) []string {
	var out []string
	add := func(present bool, name string) {
		if present {
			out = append(out, name)
		}
	}
	add(len(cfg.SNI) > 0, "[SNI]")
	add(len(cfg.Interface.CheckAlive) > 0, "[Interface] CheckAlive")
	return out
}

// routesOf is what the stack may send into the tunnel: every peer's
// AllowedIPs, plus the node's own address prefixes (so that a /24 Address
// routes its subnet as wg-quick does).
func routesOf(own []netip.Prefix, peers []wgconf.Peer) []netip.Prefix {
	routes := []netip.Prefix{}
	for _, p := range own {
		if p.Bits() < p.Addr().BitLen() {
			routes = append(routes, p.Masked())
		}
	}
	for _, p := range peers {
		routes = append(routes, p.AllowedIPs...)
	}
	return routes
}

// deviceLogger logs wireguard-go's messages (its verbose ones at debug
// level) and passes those about dropped packets to the monitor.
func deviceLogger(log *slog.Logger, mon *monitor.Monitor) *device.Logger {
	wg := log.With("component", "wireguard")
	return &device.Logger{
		Verbosef: func(format string, args ...any) {
			deviceDrops(mon, format, args)
			if wg.Enabled(context.Background(), slog.LevelDebug) {
				wg.Debug(fmt.Sprintf(format, args...))
			}
		},
		Errorf: func(format string, args ...any) { wg.Error(fmt.Sprintf(format, args...)) },
	}
}

func (n *Node) interfaceUAPI() string {
	var b strings.Builder
	fmt.Fprintf(&b, "private_key=%s\n", n.cfg.Interface.PrivateKey.Hex())
	fmt.Fprintf(&b, "listen_port=%d\n", n.cfg.Interface.ListenPort)
	return b.String()
}

// SetPeers makes peers the node's peer list, applying only the
// difference: peers no longer listed are removed, new ones added, and of a
// changed peer only what changed is updated, so untouched peers (and a
// changed peer's session) carry on. Endpoint host names are resolved on the
// host network; a name that does not resolve yet is logged and tried again
// later. Handshakes with new peers happen on first traffic.
func (n *Node) SetPeers(peers []wgconf.Peer) error {
	n.reloadMu.Lock()
	defer n.reloadMu.Unlock()
	return n.setPeers(peers, false)
}

// setPeers configures peers; with announce, a handshake with every new
// peer that has an endpoint starts at once, so that peers learn of a
// (re)started node without waiting for their own rekey timers.
func (n *Node) setPeers(peers []wgconf.Peer, announce bool) error {
	n.mu.Lock()
	old := make(map[wgconf.PublicKey]wgconf.Peer, len(n.peers))
	for _, p := range n.peers {
		old[p.PublicKey] = p
	}
	n.mu.Unlock()
	seen := make(map[wgconf.PublicKey]bool, len(peers))
	var b, restore strings.Builder
	for _, p := range peers {
		if seen[p.PublicKey] {
			return fmt.Errorf("sidecar: peer %s listed twice", p.PublicKey)
		}
		seen[p.PublicKey] = true
		prev, existed := old[p.PublicKey]
		if existed && peerEqual(prev, p) {
			continue // untouched: its session carries on
		}
		fmt.Fprintf(&b, "public_key=%s\n", p.PublicKey.Hex())
		if existed {
			b.WriteString("update_only=true\n")
		}
		if !existed || prev.PresharedKey != p.PresharedKey {
			fmt.Fprintf(&b, "preshared_key=%s\n", p.PresharedKey.Hex())
		}
		if !existed || !slices.Equal(prev.AllowedIPs, p.AllowedIPs) {
			b.WriteString("replace_allowed_ips=true\n")
			for _, a := range p.AllowedIPs {
				fmt.Fprintf(&b, "allowed_ip=%s\n", a.Masked())
			}
		}
		if p.Endpoint != "" && (!existed || prev.Endpoint != p.Endpoint) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			ep, err := n.resolveEndpoint(ctx, p.Endpoint)
			cancel()
			if err != nil {
				n.log.Warn("peer endpoint does not resolve yet; will retry", "peer", p.PublicKey.String(), "endpoint", p.Endpoint, "err", err)
			} else {
				fmt.Fprintf(&b, "endpoint=%s\n", ep)
			}
		}
		keepalive := p.PersistentKeepalive
		if announce && !existed && p.Endpoint != "" {
			// Switching keepalive on makes wireguard-go send one at
			// once, which starts a handshake; it is switched back
			// off below when the file does not ask for it.
			keepalive = max(keepalive, 1)
		}
		if !existed || prev.PersistentKeepalive != p.PersistentKeepalive || keepalive != p.PersistentKeepalive {
			fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", keepalive)
		}
		if keepalive != p.PersistentKeepalive {
			fmt.Fprintf(&restore, "public_key=%s\nupdate_only=true\npersistent_keepalive_interval=0\n", p.PublicKey.Hex())
		}
	}
	for key := range old {
		if !seen[key] {
			fmt.Fprintf(&b, "public_key=%s\nremove=true\n", key.Hex())
		}
	}
	if b.Len() > 0 {
		if err := n.dev.IpcSet(b.String()); err != nil {
			return fmt.Errorf("sidecar: configure peers: %w", err)
		}
	}
	if restore.Len() > 0 {
		if err := n.dev.IpcSet(restore.String()); err != nil {
			return fmt.Errorf("sidecar: configure peers: %w", err)
		}
	}
	n.mu.Lock()
	n.peers = append([]wgconf.Peer(nil), peers...)
	n.mu.Unlock()
	n.stack.SetRoutes(routesOf(n.cfg.Interface.Addresses, peers))
	if n.flows != nil {
		n.flows.ReconfigRoutes(n.classRoutes(peers))
	}
	return nil
}

func peerEqual(a, b wgconf.Peer) bool {
	return a.PublicKey == b.PublicKey && a.PresharedKey == b.PresharedKey && slices.Equal(a.AllowedIPs, b.AllowedIPs) &&
		a.Endpoint == b.Endpoint && a.PersistentKeepalive == b.PersistentKeepalive
}

// resolveEndpoint turns "host:port" into an address and port, resolving a
// host name on the host network. IPv4 is preferred when both are offered.
func (n *Node) resolveEndpoint(ctx context.Context, endpoint string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(endpoint); err == nil {
		return ap, nil
	}
	host, portStr, err := net.SplitHostPort(endpoint)
	if err != nil {
		return netip.AddrPort{}, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad port in endpoint %q", endpoint)
	}
	lookup := n.opts.LookupEndpoint
	if lookup == nil {
		lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	addrs, err := lookup(ctx, host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if len(addrs) == 0 {
		return netip.AddrPort{}, fmt.Errorf("endpoint %q: no addresses", endpoint)
	}
	best := addrs[0]
	for _, a := range addrs {
		if a.Unmap().Is4() {
			best = a
			break
		}
	}
	return netip.AddrPortFrom(best.Unmap(), uint16(port)), nil
}

// reresolveLoop resolves host-name endpoints again for peers whose last
// handshake is older than StaleHandshake (or who never had one), as
// wg-quick's reresolve-dns script does, so a peer whose name moves to
// another address is followed.
func (n *Node) reresolveLoop() {
	defer n.wg.Done()
	stale := n.opts.StaleHandshake
	if stale == 0 {
		stale = 135 * time.Second
	}
	interval := min(stale/4, 10*time.Second)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		n.reresolveStale(stale)
		n.reportQueueDrops()
	}
}

// reportQueueDrops logs the packets dropped because the queue to the
// tunnel device was full since the last report (the bound that keeps a
// stalled device from holding unbounded memory).
func (n *Node) reportQueueDrops() {
	d := n.stack.QueueDrops()
	if d > n.queueDropsLogged {
		n.log.Warn("tunnel queue full: packets to the peers dropped (TCP sends them again; UDP datagrams are lost)",
			"dropped", d-n.queueDropsLogged, "queue", 4096)
		n.queueDropsLogged = d
	}
}

func (n *Node) reresolveStale(stale time.Duration) {
	n.mu.Lock()
	peers := n.peers
	started := n.started
	n.mu.Unlock()
	status, err := n.peerStatus()
	if err != nil {
		return
	}
	for _, p := range peers {
		if p.Endpoint == "" {
			continue
		}
		if _, err := netip.ParseAddrPort(p.Endpoint); err == nil {
			continue // an IP literal never moves by name
		}
		last := status[p.PublicKey].LastHandshake
		if last.IsZero() {
			last = started
		}
		if time.Since(last) < stale {
			continue
		}
		n.reresolvePeer(p, status[p.PublicKey].Endpoint)
	}
}

// PeerConfig returns the peers the node is configured with now (the
// file's, or the last SetPeers).
func (n *Node) PeerConfig() []wgconf.Peer {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.peers)
}

// PeerStatus is what the WireGuard device knows of one peer.
type PeerStatus struct {
	PublicKey     wgconf.PublicKey
	Endpoint      netip.AddrPort
	LastHandshake time.Time // zero if none yet
	RxBytes       uint64
	TxBytes       uint64
}

// Peers reports the device's view of every peer, in configuration order.
func (n *Node) Peers() ([]PeerStatus, error) {
	m, err := n.peerStatus()
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]PeerStatus, 0, len(n.peers))
	for _, p := range n.peers {
		if s, ok := m[p.PublicKey]; ok {
			out = append(out, s)
		}
	}
	return out, nil
}

func (n *Node) peerStatus() (map[wgconf.PublicKey]PeerStatus, error) {
	text, err := n.dev.IpcGet()
	if err != nil {
		return nil, err
	}
	out := map[wgconf.PublicKey]PeerStatus{}
	var cur *PeerStatus
	var sec, nsec int64
	flush := func() {
		if cur != nil {
			if sec != 0 || nsec != 0 {
				cur.LastHandshake = time.Unix(sec, nsec)
			}
			out[cur.PublicKey] = *cur
		}
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		switch k {
		case "public_key":
			flush()
			cur, sec, nsec = &PeerStatus{}, 0, 0
			if raw, err := hex.DecodeString(v); err == nil && len(raw) == len(cur.PublicKey) {
				copy(cur.PublicKey[:], raw)
			}
		case "endpoint":
			if cur != nil {
				cur.Endpoint, _ = netip.ParseAddrPort(v)
			}
		case "last_handshake_time_sec":
			sec, _ = strconv.ParseInt(v, 10, 64)
		case "last_handshake_time_nsec":
			nsec, _ = strconv.ParseInt(v, 10, 64)
		case "rx_bytes":
			if cur != nil {
				cur.RxBytes, _ = strconv.ParseUint(v, 10, 64)
			}
		case "tx_bytes":
			if cur != nil {
				cur.TxBytes, _ = strconv.ParseUint(v, 10, 64)
			}
		}
	}
	flush()
	return out, nil
}

// ListenPort returns the UDP port WireGuard listens on (the one the OS
// chose when the file sets none).
func (n *Node) ListenPort() int {
	text, err := n.dev.IpcGet()
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, "listen_port="); ok {
			p, _ := strconv.Atoi(v)
			return p
		}
	}
	return 0
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

// LookupNetIP resolves host through the tunnel's DNS servers when the file
// sets any, and on the host otherwise. network is "ip", "ip4" or "ip6".
func (n *Node) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if n.dns != nil {
		return n.dns.LookupNetIP(ctx, network, host)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	return net.DefaultResolver.LookupNetIP(ctx, network, host)
}

// Dial connects to address through the tunnel; see DialContext.
func (n *Node) Dial(network, address string) (net.Conn, error) {
	return n.DialContext(context.Background(), network, address)
}

// DialContext connects to address ("host:port") through the tunnel over
// network ("tcp", "tcp4", "tcp6", "udp", "udp4", "udp6"). A host name is
// resolved with LookupNetIP and its addresses are tried in turn.
func (n *Node) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return n.stack.DialContext(ctx, network, address)
	}
	family := "ip"
	switch {
	case strings.HasSuffix(network, "4"):
		family = "ip4"
	case strings.HasSuffix(network, "6"):
		family = "ip6"
	}
	addrs, err := n.LookupNetIP(ctx, family, host)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	if n.cfg.Resolve != nil && n.cfg.Resolve.ResolveStrategy == "ipv6" {
		// [Resolve] ResolveStrategy (wireproxy): which family is tried
		// first. IPv4 first is already the lookup's order.
		slices.SortStableFunc(addrs, func(a, b netip.Addr) int { return cmp.Compare(b.BitLen(), a.BitLen()) })
	}
	var firstErr error
	for _, a := range addrs {
		c, err := n.stack.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
		if err == nil {
			return c, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, firstErr
}

// Listen listens for TCP connections on the node's tunnel address.
// network is "tcp", "tcp4" or "tcp6"; address is "[ip]:port", where an
// empty ip listens on every tunnel address.
func (n *Node) Listen(network, address string) (net.Listener, error) {
	ap, err := listenAddr(network, address, "tcp")
	if err != nil {
		return nil, err
	}
	return n.stack.ListenTCP(ap)
}

// ListenPacket opens a UDP socket on the node's tunnel address, with the
// address rules of Listen.
func (n *Node) ListenPacket(network, address string) (net.PacketConn, error) {
	ap, err := listenAddr(network, address, "udp")
	if err != nil {
		return nil, err
	}
	return n.stack.ListenUDP(ap)
}

func listenAddr(network, address, want string) (netip.AddrPort, error) {
	if strings.TrimRight(network, "46") != want {
		return netip.AddrPort{}, &net.OpError{Op: "listen", Net: network, Err: net.UnknownNetworkError(network)}
	}
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return netip.AddrPort{}, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return netip.AddrPort{}, &net.OpError{Op: "listen", Net: network, Err: fmt.Errorf("bad port %q", portStr)}
	}
	var a netip.Addr
	switch {
	case host != "":
		if a, err = netip.ParseAddr(host); err != nil {
			return netip.AddrPort{}, &net.OpError{Op: "listen", Net: network, Err: fmt.Errorf("tunnel listeners take an IP address, not %q", host)}
		}
	case strings.HasSuffix(network, "4"):
		a = netip.IPv4Unspecified()
	}
	return netip.AddrPortFrom(a, uint16(port)), nil
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
	close(n.stop)
	n.wg.Wait()
	n.httpOnce.Do(func() {}) // no client is made after Close
	if n.httpClient != nil {
		n.httpClient.CloseIdleConnections()
	}
	n.release()
	n.log.Info("sidecar down", "public_key", n.public.String())
	return nil
}

// release stops what Start started, in reverse: metrics and control
// socket; forwards and proxies; the flow log (writing its last window while the
// tunnel is still up); the WireGuard device with its socket and tun
// device; the stack.
func (n *Node) release() {
	closeAll(n.closers)
	n.closeForwards()
	n.shutdownFlowLog()
	n.dev.Close() // closes the bind and the tun device
	n.stack.Close()
}
