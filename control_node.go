package sidecar

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"time"

	"github.com/wgsidecar/sidecar/control"
	"github.com/wgsidecar/sidecar/devconf"
	"github.com/wgsidecar/sidecar/forward"
	"github.com/wgsidecar/sidecar/metrics"
	"github.com/wgsidecar/sidecar/netlog"
	"github.com/wgsidecar/sidecar/wgconf"
)

// readyHandshake is how recent a handshake must be for /readyz: WireGuard
// stops using a session's keys 180 s after the handshake (Reject-After-Time)
// unless a new one replaced it, so an older one means no working session.
const readyHandshake = 3 * time.Minute

// nodeControl is the node's control socket ([Control]) and metrics
// listener ([Metrics]). Set by Start before it returns; read-only
// afterwards.
type nodeControl struct {
	socket  *control.Server // nil when off
	metrics *metrics.Server // nil when off
}

// close stops the metrics listener and the control socket.
func (c *nodeControl) close() {
	if c.metrics != nil {
		c.metrics.Close()
	}
	if c.socket != nil {
		c.socket.Close()
	}
}

// ControlSocket returns the path of the node's control socket, or "" when
// the file has no [Control] section.
func (n *Node) ControlSocket() string {
	if n.ctl.socket == nil {
		return ""
	}
	return n.ctl.socket.Path()
}

// MetricsAddr returns the address the metrics listener accepts on, or nil
// when the file has no [Metrics] section.
func (n *Node) MetricsAddr() net.Addr {
	if n.ctl.metrics == nil {
		return nil
	}
	return n.ctl.metrics.Addr()
}

// startControl serves the control socket when the file has a [Control]
// section: at its Socket, or control.DefaultSocket of the node's ID.
func (n *Node) startControl() error {
	c := n.cfg.Control
	if c == nil {
		return nil
	}
	path := cmp.Or(c.Socket, control.DefaultSocket(NodeID(n.public)))
	srv, err := control.Listen(path, controlAPI{n}, n.log.With("component", "control"))
	if err != nil {
		return n.cfg.At(c, "Socket", fmt.Errorf("sidecar: [Control] %w", err))
	}
	n.ctl.socket = srv
	n.log.Info("control socket on", "path", path)
	return nil
}

// startMetrics serves the node's metrics registry, /healthz and /readyz
// over HTTP when the file has a [Metrics] section: at its BindAddress, on
// loopback unless it names another interface.
func (n *Node) startMetrics() error {
	m := n.cfg.Metrics
	if m == nil {
		return nil
	}
	srv, err := metrics.Serve(forward.HostBind(cmp.Or(m.BindAddress, wgconf.DefaultMetricsAddress)), &n.reg, n.notReady)
	if err != nil {
		return n.cfg.At(m, "BindAddress", fmt.Errorf("sidecar: [Metrics] %w", err))
	}
	n.ctl.metrics = srv
	n.log.Info("metrics on", "address", srv.Addr().String())
	return nil
}

// notReady says why the node is not ready, or "" when it is: ready means at
// least one peer had a handshake in the last readyHandshake.
func (n *Node) notReady() string {
	peers, err := n.Peers()
	if err != nil {
		return fmt.Sprintf("wireguard device: %v", err)
	}
	if len(peers) == 0 {
		return "no peers configured"
	}
	for _, p := range peers {
		if !p.LastHandshake.IsZero() && time.Since(p.LastHandshake) < readyHandshake {
			return ""
		}
	}
	return fmt.Sprintf("no handshake with any of %d peer(s) in the last %v", len(peers), readyHandshake)
}

// registerMetrics registers the node's metric families: its own (identity,
// peers as the device counts them), then each feature's.
func (n *Node) registerMetrics() {
	n.reg.Register(n.deviceMetrics)
	n.bind.RegisterMetrics(&n.reg)
	if n.flows != nil {
		n.flows.RegisterMetrics(&n.reg)
	}
	n.mon.RegisterMetrics(&n.reg, n.stack)
	n.fwd.RegisterMetrics(&n.reg)
}

// deviceMetrics is the node's identity and the WireGuard device's view of
// its peers.
func (n *Node) deviceMetrics() []metrics.Family {
	n.mu.Lock()
	started := n.started
	n.mu.Unlock()
	info := metrics.Family{Name: "wgsidecar_info", Type: metrics.Gauge, Help: "The node's identity; the value is always 1."}
	info.Add(1, "public_key", n.public.String(), "node_id", n.flowNodeID())
	start := metrics.One("wgsidecar_start_time_seconds", metrics.Gauge, "When the node started, in seconds since the Unix epoch.", float64(started.UnixNano())/1e9)
	peers, err := n.Peers()
	if err != nil {
		return []metrics.Family{info, start}
	}
	return append([]metrics.Family{info, start}, devconf.PeerMetrics(peers, time.Now())...)
}

// controlAPI answers the control socket's requests for a node.
type controlAPI struct{ n *Node }

// flowLogState is the flow log's state for the control API.
func (a controlAPI) flowLogState() control.FlowLog {
	fl := a.n.flows
	if fl == nil {
		return control.FlowLog{}
	}
	windows, messages := fl.Recent().Counts()
	return control.FlowLog{Enabled: true, Window: fl.Window().String(), Windows: windows, Messages: messages}
}

func (a controlAPI) Status(ctx context.Context) (*control.Status, error) {
	n := a.n
	dev, err := n.deviceStatus()
	if err != nil {
		return nil, fmt.Errorf("wireguard device: %w", err)
	}
	now := time.Now()
	n.mu.Lock()
	peers, started := n.peers, n.started
	n.mu.Unlock()
	st := &control.Status{
		Time: now, PublicKey: n.public.String(), NodeID: n.flowNodeID(), Addresses: []string{},
		ListenPort: dev.ListenPort, Started: started, UptimeSeconds: now.Sub(started).Seconds(),
		Peers: make([]control.Peer, 0, len(peers)), Listeners: []control.Listener{}, FlowLog: a.flowLogState(),
	}
	for _, p := range n.cfg.Interface.Addresses {
		st.Addresses = append(st.Addresses, p.String())
	}
	for _, p := range peers {
		d := dev.Peers[p.PublicKey]
		cp := control.Peer{
			PublicKey: p.PublicKey.String(), AllowedIPs: []string{}, LatestHandshake: d.LastHandshake,
			RxBytes: d.RxBytes, TxBytes: d.TxBytes, PersistentKeepalive: p.PersistentKeepalive,
		}
		if d.Endpoint.IsValid() {
			cp.Endpoint = d.Endpoint.String()
		}
		for _, a := range p.AllowedIPs {
			cp.AllowedIPs = append(cp.AllowedIPs, a.String())
		}
		st.Peers = append(st.Peers, cp)
	}
	for _, l := range n.fwd.Listeners() {
		cl := control.Listener{Kind: l.Kind, Listen: l.Listen, Target: l.Target}
		if l.Counted {
			cl.Conns = &control.Conns{Open: l.Open, Accepted: l.Accepted}
		}
		st.Listeners = append(st.Listeners, cl)
	}
	return st, nil
}

func (a controlAPI) Flows(ctx context.Context) (*control.Flows, error) {
	msgs := []netlog.Message{}
	if a.n.flows != nil {
		msgs = append(msgs, a.n.flows.Recent().Latest()...)
	}
	return &control.Flows{FlowLog: a.flowLogState(), Messages: msgs}, nil
}

func (a controlAPI) Reload(ctx context.Context) (*control.Reload, error) {
	ch, err := a.n.ReloadFile()
	if err != nil {
		return nil, err
	}
	return &control.Reload{
		PeersAdded: ch.PeersAdded, PeersRemoved: ch.PeersRemoved, PeersChanged: ch.PeersChanged,
		Started: nonNil(ch.Started), Stopped: nonNil(ch.Stopped), NeedRestart: nonNil(ch.NeedRestart),
	}, nil
}

// Stream serves the control socket's monitor (see monitor.Monitor.Stream).
func (a controlAPI) Stream(ctx context.Context, q map[string][]string, emit func([]byte) error) error {
	return a.n.mon.Stream(ctx, q, emit)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
