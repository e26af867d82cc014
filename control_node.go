package sidecar

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/wgsidecar/sidecar/control"
	"github.com/wgsidecar/sidecar/forward"
	"github.com/wgsidecar/sidecar/metrics"
	"github.com/wgsidecar/sidecar/monitor"
	"github.com/wgsidecar/sidecar/netlog"
	"github.com/wgsidecar/sidecar/netstack"
	"github.com/wgsidecar/sidecar/wgconf"
	"github.com/wgsidecar/sidecar/wrap"
)

// readyHandshake is how recent a handshake must be for /readyz: WireGuard
// stops using a session's keys 180 s after the handshake (Reject-After-Time)
// unless a new one replaced it, so an older one means no working session.
const readyHandshake = 3 * time.Minute

// nodeControl is what the control socket ([Control]) and the metrics
// listener ([Metrics]) report beyond the WireGuard device's own view and
// the forwards and proxies listening (forward.Set): the flow log's latest
// window. The zero value is ready for use.
type nodeControl struct {
	// Set by Start before it returns; read-only afterwards.
	socket      string   // the control socket's path; "" when off
	metricsAddr net.Addr // nil when off

	flows recentFlows // a flow-log sink (see controlSink)
}

// controlSink is the flow-log sink that feeds the control socket's
// /v1/flows (the latest window, kept only when the node has a control
// socket) and the metrics' window counts. startFlowLog adds it to the
// node's sinks; it never turns the flow log on by itself.
func (n *Node) controlSink() netlog.Sink {
	n.ctl.flows.keep = n.cfg.Control != nil
	return &n.ctl.flows
}

// ControlSocket returns the path of the node's control socket, or "" when
// the file has no [Control] section.
func (n *Node) ControlSocket() string { return n.ctl.socket }

// MetricsAddr returns the address the metrics listener accepts on, or nil
// when the file has no [Metrics] section.
func (n *Node) MetricsAddr() net.Addr { return n.ctl.metricsAddr }

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
		return fmt.Errorf("sidecar: [Control] %w", err)
	}
	n.closers = append(n.closers, srv)
	n.ctl.socket = path
	n.log.Info("control socket on", "path", path)
	return nil
}

// startMetrics serves /metrics, /healthz and /readyz over HTTP when the
// file has a [Metrics] section: at its BindAddress, on loopback unless it
// names another interface.
func (n *Node) startMetrics() error {
	m := n.cfg.Metrics
	if m == nil {
		return nil
	}
	addr := forward.HostBind(cmp.Or(m.BindAddress, wgconf.DefaultMetricsAddress))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("sidecar: [Metrics] %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics.Handler(n.collectMetrics))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if reason := n.notReady(); reason != "" {
			http.Error(w, "not ready: "+reason, http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "wgsidecar: /metrics (Prometheus), /healthz, /readyz\n")
	})
	s := &httpService{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.srv.Serve(ln)
	}()
	n.closers = append(n.closers, s)
	n.ctl.metricsAddr = ln.Addr()
	n.log.Info("metrics on", "address", ln.Addr().String())
	return nil
}

// httpService is an HTTP server that Close stops and waits for.
type httpService struct {
	srv  *http.Server
	done chan struct{}
}

func (s *httpService) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.srv.Close()
	}
	<-s.done
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

// flowLogState is the flow log's state for the control API.
func (n *Node) flowLogState() control.FlowLog {
	if n.flows == nil {
		return control.FlowLog{}
	}
	window := netlog.DefaultWindow
	if fl := n.cfg.FlowLog; fl != nil && fl.Window > 0 {
		window = fl.Window
	}
	_, windows, messages := n.ctl.flows.snapshot()
	return control.FlowLog{Enabled: true, Window: window.String(), Windows: windows, Messages: messages}
}

// flowNodeID is the node's ID in its flow log.
func (n *Node) flowNodeID() string {
	if fl := n.cfg.FlowLog; fl != nil && fl.NodeID != "" {
		return fl.NodeID
	}
	return NodeID(n.public)
}

// controlAPI answers the control socket's requests for a node.
type controlAPI struct{ n *Node }

func (a controlAPI) Status(ctx context.Context) (*control.Status, error) {
	n := a.n
	dev, err := n.peerStatus()
	if err != nil {
		return nil, fmt.Errorf("wireguard device: %w", err)
	}
	now := time.Now()
	n.mu.Lock()
	peers, started := n.peers, n.started
	n.mu.Unlock()
	st := &control.Status{
		Time:          now,
		PublicKey:     n.public.String(),
		NodeID:        n.flowNodeID(),
		Addresses:     []string{},
		ListenPort:    n.ListenPort(),
		Started:       started,
		UptimeSeconds: now.Sub(started).Seconds(),
		Peers:         make([]control.Peer, 0, len(peers)),
		Listeners:     []control.Listener{},
		FlowLog:       n.flowLogState(),
	}
	for _, p := range n.cfg.Interface.Addresses {
		st.Addresses = append(st.Addresses, p.String())
	}
	for _, p := range peers {
		d := dev[p.PublicKey]
		cp := control.Peer{
			PublicKey:           p.PublicKey.String(),
			AllowedIPs:          []string{},
			LatestHandshake:     d.LastHandshake,
			RxBytes:             d.RxBytes,
			TxBytes:             d.TxBytes,
			PersistentKeepalive: p.PersistentKeepalive,
		}
		if d.Endpoint.IsValid() {
			cp.Endpoint = d.Endpoint.String()
		}
		for _, a := range p.AllowedIPs {
			cp.AllowedIPs = append(cp.AllowedIPs, a.String())
		}
		st.Peers = append(st.Peers, cp)
	}
	for _, l := range n.forwardSet().Listeners() {
		cl := control.Listener{Kind: l.Kind, Listen: l.Listen, Target: l.Target}
		if l.Counted {
			cl.Conns = &control.Conns{Open: l.Open, Accepted: l.Accepted}
		}
		st.Listeners = append(st.Listeners, cl)
	}
	return st, nil
}

func (a controlAPI) Flows(ctx context.Context) (*control.Flows, error) {
	msgs, _, _ := a.n.ctl.flows.snapshot()
	if msgs == nil {
		msgs = []netlog.Message{}
	}
	return &control.Flows{FlowLog: a.n.flowLogState(), Messages: msgs}, nil
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

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// collectMetrics builds the metric families of one scrape.
func (n *Node) collectMetrics() []metrics.Family {
	now := time.Now()
	pub := n.public.String()
	n.mu.Lock()
	started := n.started
	n.mu.Unlock()

	info := metrics.Family{Name: "wgsidecar_info", Type: metrics.Gauge, Help: "The node's identity; the value is always 1."}
	info.Add(1, "public_key", pub, "node_id", n.flowNodeID())
	start := metrics.Family{Name: "wgsidecar_start_time_seconds", Type: metrics.Gauge, Help: "When the node started, in seconds since the Unix epoch."}
	start.Add(float64(started.UnixNano()) / 1e9)
	fams := []metrics.Family{info, start}

	peers, err := n.Peers()
	if err == nil {
		count := metrics.Family{Name: "wgsidecar_peers", Type: metrics.Gauge, Help: "Configured WireGuard peers."}
		count.Add(float64(len(peers)))
		rx := metrics.Family{Name: "wgsidecar_peer_receive_bytes_total", Type: metrics.Counter, Help: "Bytes received from the peer on the WireGuard socket, as the device counts them."}
		tx := metrics.Family{Name: "wgsidecar_peer_transmit_bytes_total", Type: metrics.Counter, Help: "Bytes sent to the peer on the WireGuard socket, as the device counts them."}
		last := metrics.Family{Name: "wgsidecar_peer_last_handshake_timestamp_seconds", Type: metrics.Gauge, Help: "Time of the peer's latest handshake in seconds since the Unix epoch; 0 if none yet."}
		age := metrics.Family{Name: "wgsidecar_peer_handshake_age_seconds", Type: metrics.Gauge, Help: "Seconds since the peer's latest handshake; +Inf if none yet."}
		for _, p := range peers {
			key := p.PublicKey.String()
			rx.Add(float64(p.RxBytes), "public_key", key)
			tx.Add(float64(p.TxBytes), "public_key", key)
			if p.LastHandshake.IsZero() {
				last.Add(0, "public_key", key)
				age.Add(math.Inf(1), "public_key", key)
			} else {
				last.Add(float64(p.LastHandshake.UnixNano())/1e9, "public_key", key)
				age.Add(max(now.Sub(p.LastHandshake).Seconds(), 0), "public_key", key)
			}
		}
		fams = append(fams, count, rx, tx, last, age)
	}

	msgs := metrics.Family{Name: "wgsidecar_wireguard_messages_total", Type: metrics.Counter, Help: "WireGuard handshake and keepalive messages on the node's socket, by direction and type."}
	sent, received := n.Messages()
	for _, d := range []struct {
		dir string
		c   wrap.MessageCounts
	}{{"sent", sent}, {"received", received}} {
		msgs.Add(float64(d.c.Initiations), "direction", d.dir, "type", "initiation")
		msgs.Add(float64(d.c.Responses), "direction", d.dir, "type", "response")
		msgs.Add(float64(d.c.CookieReplies), "direction", d.dir, "type", "cookie_reply")
		msgs.Add(float64(d.c.Keepalives), "direction", d.dir, "type", "keepalive")
	}
	fams = append(fams, msgs)

	dog := metrics.Family{Name: "wgsidecar_watchdog_recoveries_total", Type: metrics.Counter, Help: "Times the watchdog acted for a peer with traffic waiting and no handshake (re-resolve, re-handshake)."}
	dog.Add(float64(n.dog.recoveries.Load()))
	rebinds := metrics.Family{Name: "wgsidecar_watchdog_socket_reopens_total", Type: metrics.Counter, Help: "Times the watchdog reopened the WireGuard UDP socket because sends were failing."}
	rebinds.Add(float64(n.dog.rebinds.Load()))
	moved := metrics.Family{Name: "wgsidecar_watchdog_endpoint_moves_total", Type: metrics.Counter, Help: "Times the watchdog's re-resolution pointed a peer at a new address."}
	moved.Add(float64(n.dog.resolved.Load()))
	fams = append(fams, dog, rebinds, moved)

	if n.flows != nil {
		_, windows, messages := n.ctl.flows.snapshot()
		w := metrics.Family{Name: "wgsidecar_flowlog_windows_total", Type: metrics.Counter, Help: "Flow-log windows with traffic written (empty windows write nothing)."}
		w.Add(float64(windows))
		m := metrics.Family{Name: "wgsidecar_flowlog_messages_total", Type: metrics.Counter, Help: "Flow-log messages written (a large window is split into several)."}
		m.Add(float64(messages))
		fams = append(fams, w, m)
		e := metrics.Family{Name: "wgsidecar_flowlog_early_cuts_total", Type: metrics.Counter, Help: "Flow-log windows cut before their time because a flow table filled up."}
		e.Add(float64(n.flows.EarlyCuts()))
		size := metrics.Family{Name: "wgsidecar_flowlog_window_flows", Type: metrics.Gauge, Help: "Flows in the current flow-log window so far (the size of its flow tables), by layer."}
		v, p := n.flows.Flows()
		size.Add(float64(v), "layer", "virtual")
		size.Add(float64(p), "layer", "physical")
		fams = append(fams, e, size)
	}
	if ls := n.logStream; ls != nil {
		c := ls.Counts()
		pending := metrics.Family{Name: "wgsidecar_logstream_pending_bytes", Type: metrics.Gauge, Help: "Bytes of log-stream entries waiting in the disk buffer for upload."}
		pending.Add(float64(c.PendingBytes))
		uploads := metrics.Family{Name: "wgsidecar_logstream_uploads_total", Type: metrics.Counter, Help: "Log-stream batches the collector accepted."}
		uploads.Add(float64(c.Uploads))
		entries := metrics.Family{Name: "wgsidecar_logstream_uploaded_entries_total", Type: metrics.Counter, Help: "Log-stream entries the collector accepted."}
		entries.Add(float64(c.UploadedEntries))
		failures := metrics.Family{Name: "wgsidecar_logstream_upload_failures_total", Type: metrics.Counter, Help: "Log-stream upload attempts that failed; each is retried with backoff."}
		failures.Add(float64(c.Failures))
		dropped := metrics.Family{Name: "wgsidecar_logstream_dropped_entries_total", Type: metrics.Counter, Help: "Log-stream entries dropped unsent because the disk buffer was full."}
		dropped.Add(float64(c.Dropped))
		fams = append(fams, pending, uploads, entries, failures, dropped)
	}

	sd := metrics.Family{Name: "wgsidecar_stack_drops_total", Type: metrics.Counter, Help: "Packets the node's TCP/IP stack refused, by drop reason: no-listener (answered with RST or ICMP), forward-refused, queue-full (the queue to the WireGuard device was full)."}
	for _, d := range []struct {
		drop   netstack.Drop
		reason monitor.DropReason
	}{{netstack.DropNoListener, monitor.NoListener}, {netstack.DropRefused, monitor.ForwardRefused}, {netstack.DropQueueFull, monitor.QueueFull}} {
		sd.Add(float64(n.stack.Drops(d.drop)), "reason", d.reason.String())
	}
	fams = append(fams, sd)

	mc := n.mon.Counts()
	listeners := metrics.Family{Name: "wgsidecar_monitor_listeners", Type: metrics.Gauge, Help: "Monitor listeners attached (sidecar monitor sessions)."}
	listeners.Add(float64(mc.Listeners))
	lost := metrics.Family{Name: "wgsidecar_monitor_lost_events_total", Type: metrics.Counter, Help: "Monitor events that listeners missed because their queue was full (each reported to its listener)."}
	lost.Add(float64(mc.Lost))
	refused := metrics.Family{Name: "wgsidecar_connections_refused_total", Type: metrics.Counter, Help: "Connections the proxies and forwards refused, by drop reason."}
	for _, r := range monitor.Reasons() {
		if v := mc.Refused[r]; v > 0 {
			refused.Add(float64(v), "reason", r.String())
		}
	}
	connErrors := metrics.Family{Name: "wgsidecar_connection_errors_total", Type: metrics.Counter, Help: "Connections the proxies and forwards accepted but could not relay (the dial of their target failed)."}
	connErrors.Add(float64(mc.ConnErrors))
	fams = append(fams, listeners, lost, refused, connErrors)
	return append(fams, n.forwardSet().Metrics()...)
}

// recentFlows is a flow-log sink that counts the windows and messages
// written and, when keep is set, keeps the latest window's messages. It is
// safe for concurrent use; Close keeps what it holds readable.
type recentFlows struct {
	keep bool // set before the flow log starts

	mu        sync.Mutex
	lastStart time.Time        // start of the latest window
	last      []netlog.Message // its messages when kept; never modified, only replaced
	windows   uint64
	messages  uint64
}

var _ netlog.Sink = (*recentFlows)(nil)

func (r *recentFlows) Write(ctx context.Context, m *netlog.Message) error {
	var c netlog.Message
	if r.keep {
		c = *m
		c.VirtualTraffic = slices.Clone(m.VirtualTraffic)
		c.SubnetTraffic = slices.Clone(m.SubnetTraffic)
		c.ExitTraffic = slices.Clone(m.ExitTraffic)
		c.PhysicalTraffic = slices.Clone(m.PhysicalTraffic)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.messages++
	// The messages of one window (split for size) come one after another
	// and share its start.
	newWindow := r.windows == 0 || !r.lastStart.Equal(m.Start)
	if newWindow {
		r.windows++
		r.lastStart = m.Start
	}
	if !r.keep {
		return nil
	}
	if newWindow {
		r.last = []netlog.Message{c}
	} else {
		// Copy on write: a snapshot handed out is never changed.
		r.last = append(slices.Clip(r.last), c)
	}
	return nil
}

func (r *recentFlows) Close() error { return nil }

// snapshot returns the latest window's messages (not to be modified) and
// the counts.
func (r *recentFlows) snapshot() (last []netlog.Message, windows, messages uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last, r.windows, r.messages
}
