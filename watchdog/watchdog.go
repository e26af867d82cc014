// Package watchdog keeps a node's peers reachable and says how they are:
// it logs a peer's sessions (peer up, peer down, and a hint when its
// handshakes go unanswered), fails dials to a peer without a session
// quickly (GuardDial), resolves host-name endpoints again when a peer's
// handshake goes stale (as wg-quick's reresolve-dns does), and recovers a
// peer that WireGuard has traffic for but cannot reach (re-resolving its
// name, reopening a UDP socket whose sends fail, starting a handshake),
// logging and counting what it did.
//
// It reaches the node only through the Node interface: it knows nothing
// of the stack, the flow log or how the device is configured. Its loops
// run in goroutines that Start starts and Close stops; the counters are
// safe to read concurrently.
package watchdog

import (
	"cmp"
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wgsidecar/sidecar/devconf"
	"github.com/wgsidecar/sidecar/metrics"
	"github.com/wgsidecar/sidecar/wgconf"
)

// DefaultTimeout is how long a peer with traffic waiting may go without a
// handshake before the watchdog acts, when Config.Timeout is zero. A
// healthy handshake takes one round trip and WireGuard retries every 5 s,
// so 30 s is six failed tries; it is well inside the 90 s after which
// WireGuard gives up and drops what it queued.
const DefaultTimeout = 30 * time.Second

// DefaultStale is how long a peer with a host-name endpoint may go without
// a handshake before its name is resolved again, when Config.Stale is
// zero: the interval wg-quick's reresolve-dns uses.
const DefaultStale = 135 * time.Second

// Node is what the watchdog needs of a running node. Its methods must be
// safe for concurrent use.
type Node interface {
	// Status is the WireGuard device's view of the peers.
	Status() (devconf.Status, error)
	// Peers is the configured peer list and when the node started.
	Peers() (peers []wgconf.Peer, started time.Time)
	// PeerFor names the peer the device sends packets for a to (the
	// device's own longest-prefix match on AllowedIPs).
	PeerFor(a netip.Addr) (wgconf.PublicKey, bool)
	// Trouble tells when an initiation was last sent to ep, and when a
	// send to it last failed (zero if never).
	Trouble(ep netip.AddrPort) (lastInitiation, lastSendError time.Time)
	// SendErrors counts the failed sends on the node's UDP socket.
	SendErrors() uint64
	// Rebind reopens the node's UDP socket on the same port.
	Rebind() error
	// Handshake starts a handshake with the peer.
	Handshake(key wgconf.PublicKey)
	// Resolve turns a peer's Endpoint ("host:port") into an address.
	Resolve(ctx context.Context, endpoint string) (netip.AddrPort, error)
	// SetEndpoint points the peer at ep.
	SetEndpoint(key wgconf.PublicKey, ep netip.AddrPort) error
	// ListenPort is the node's UDP port, for the log.
	ListenPort() int
}

// Config tunes the watchdog. The zero value uses the defaults.
type Config struct {
	// Timeout is DefaultTimeout when zero; negative turns the recovery of
	// unreachable peers off (stale names are still resolved again).
	Timeout time.Duration
	// Stale is DefaultStale when zero.
	Stale time.Duration
	// Tick, if set, is called on each round of the stale-name loop (at
	// most every 10 s), for other periodic checks of the node.
	Tick func()
	// Hint is how long initiations to a peer may go unanswered before
	// the log says its key or endpoint is likely wrong; DefaultHint when
	// zero. Peer up and down are logged too.
	Hint time.Duration
	// SessionTick is how often peers' sessions are checked for the
	// "peer up", "peer down" and hint lines; 1 s when zero.
	SessionTick time.Duration
	// Log receives what the watchdog does; slog.Default() when nil.
	Log *slog.Logger
}

// Watchdog is a running watchdog. Close stops it.
type Watchdog struct {
	node Node
	cfg  Config
	log  *slog.Logger
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once

	// Owned by the recovery loop.
	acted    map[wgconf.PublicKey]time.Time     // when the watchdog last acted for the peer
	backoff  map[wgconf.PublicKey]time.Duration // how long until it may act again
	sendErrs uint64                             // the node's send errors when last checked

	recoveries atomic.Uint64 // times the watchdog acted for a peer
	rebinds    atomic.Uint64 // times it reopened the UDP socket
	moved      atomic.Uint64 // times its re-resolution moved an endpoint
}

// Start starts the watchdog's loops for n.
func Start(n Node, c Config) *Watchdog {
	w := &Watchdog{
		node: n, cfg: c, log: cmp.Or(c.Log, slog.Default()), stop: make(chan struct{}),
		acted: map[wgconf.PublicKey]time.Time{}, backoff: map[wgconf.PublicKey]time.Duration{},
	}
	w.wg.Add(2)
	go w.staleLoop(cmp.Or(c.Stale, DefaultStale))
	go w.sessionLoop(cmp.Or(c.SessionTick, time.Second), cmp.Or(c.Hint, DefaultHint))
	if c.Timeout >= 0 {
		w.wg.Add(1)
		go w.recoveryLoop(cmp.Or(c.Timeout, DefaultTimeout))
	}
	return w
}

// Close stops the loops and waits for them. It is idempotent.
func (w *Watchdog) Close() error {
	w.once.Do(func() { close(w.stop) })
	w.wg.Wait()
	return nil
}

// RegisterMetrics registers the watchdog's counters on r.
func (w *Watchdog) RegisterMetrics(r *metrics.Registry) {
	r.Register(func() []metrics.Family {
		rec := metrics.One("wgsidecar_watchdog_recoveries_total", metrics.Counter, "Times the watchdog acted for a peer with traffic waiting and no handshake (re-resolve, re-handshake).", float64(w.recoveries.Load()))
		rebinds := metrics.One("wgsidecar_watchdog_socket_reopens_total", metrics.Counter, "Times the watchdog reopened the WireGuard UDP socket because sends were failing.", float64(w.rebinds.Load()))
		moved := metrics.One("wgsidecar_watchdog_endpoint_moves_total", metrics.Counter, "Times the watchdog's re-resolution pointed a peer at a new address.", float64(w.moved.Load()))
		return []metrics.Family{rec, rebinds, moved}
	})
}

// staleLoop resolves host-name endpoints again for peers whose last
// handshake is older than stale (or who never had one), so a peer whose
// name moves to another address is followed.
func (w *Watchdog) staleLoop(stale time.Duration) {
	defer w.wg.Done()
	t := time.NewTicker(min(stale/4, 10*time.Second))
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		w.reresolveStale(stale)
		if w.cfg.Tick != nil {
			w.cfg.Tick()
		}
	}
}

func (w *Watchdog) reresolveStale(stale time.Duration) {
	peers, started := w.node.Peers()
	status, err := w.node.Status()
	if err != nil {
		return
	}
	for _, p := range peers {
		if !hasName(p) {
			continue
		}
		last := status.Peers[p.PublicKey].LastHandshake
		if last.IsZero() {
			last = started
		}
		if time.Since(last) >= stale {
			w.reresolve(p, status.Peers[p.PublicKey].Endpoint)
		}
	}
}

// hasName reports whether p's endpoint is a host name (an IP literal never
// moves by name).
func hasName(p wgconf.Peer) bool {
	if p.Endpoint == "" {
		return false
	}
	_, err := netip.ParseAddrPort(p.Endpoint)
	return err != nil
}

// reresolve resolves p's endpoint name again and, if it now names another
// address than current, points the peer there. It reports whether the
// endpoint moved.
func (w *Watchdog) reresolve(p wgconf.Peer, current netip.AddrPort) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	ep, err := w.node.Resolve(ctx, p.Endpoint)
	cancel()
	if err != nil {
		w.log.Warn("re-resolving peer endpoint failed", "peer", p.PublicKey.String(), "endpoint", p.Endpoint, "err", err)
		return false
	}
	if ep == current {
		return false
	}
	if err := w.node.SetEndpoint(p.PublicKey, ep); err != nil {
		w.log.Warn("setting re-resolved endpoint failed", "peer", p.PublicKey.String(), "err", err)
		return false
	}
	w.log.Info("peer endpoint re-resolved", "peer", p.PublicKey.String(), "endpoint", p.Endpoint, "address", ep.String())
	return true
}
