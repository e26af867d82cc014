package watchdog

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/wgsidecar/sidecar/wgconf"
)

// SessionLife is how long a WireGuard session lasts after its handshake
// unless a new one replaces it (Reject-After-Time, 180 s): a peer whose
// last handshake is older has no session.
const SessionLife = 180 * time.Second

// DefaultHint is how long a peer may leave handshake initiations
// unanswered before the watchdog says its key or endpoint is likely wrong,
// when Config.Hint is zero: the first initiation and two retries (WireGuard
// sends one every 5 s).
const DefaultHint = 10 * time.Second

// NoSessionWait is how long a TCP dial through the tunnel waits for the
// peer it is routed to before GuardDial fails it for having no session.
// WireGuard sends an initiation at most every 5 s (plus up to 1/3 s of
// jitter) while a handshake is pending, so any wait this long holds a try
// and its round trip: a peer that has not answered by then is not
// answering.
const NoSessionWait = 6 * time.Second

// peerState is what sessionLoop remembers of a peer.
type peerState struct {
	up         bool      // "peer up" was logged, "peer down" not since
	unanswered time.Time // first initiation seen unanswered since the last handshake; zero if none
	hinted     bool      // the hint was logged for this run of unanswered initiations
}

// sessionLoop logs each peer's sessions: "peer up" (with its endpoint) at
// its first handshake and after each "peer down", "peer down" when its
// session expires (no handshake for SessionLife), and, when initiations
// to it go unanswered for hint, that its key or endpoint is likely wrong.
func (w *Watchdog) sessionLoop(tick, hint time.Duration) {
	defer w.wg.Done()
	t := time.NewTicker(tick)
	defer t.Stop()
	states := map[wgconf.PublicKey]*peerState{}
	for {
		w.watchSessions(states, hint, time.Now())
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
	}
}

// watchSessions is one round of sessionLoop.
func (w *Watchdog) watchSessions(states map[wgconf.PublicKey]*peerState, hint time.Duration, now time.Time) {
	status, err := w.node.Status()
	if err != nil {
		return
	}
	peers, _ := w.node.Peers()
	seen := map[wgconf.PublicKey]bool{}
	for _, p := range peers {
		seen[p.PublicKey] = true
		st := states[p.PublicKey]
		if st == nil {
			st = &peerState{}
			states[p.PublicKey] = st
		}
		s := status.Peers[p.PublicKey]
		live := !s.LastHandshake.IsZero() && now.Sub(s.LastHandshake) < SessionLife
		switch {
		case live && !st.up:
			st.up = true
			w.log.Info("peer up", "peer", p.PublicKey.String(), "endpoint", s.Endpoint.String())
		case !live && st.up:
			st.up = false
			w.log.Warn("peer down: its session expired (no handshake for 3m0s); the next packet to it starts a new one",
				"peer", p.PublicKey.String(), "endpoint", s.Endpoint.String(), "last_handshake", s.LastHandshake.Format(time.RFC3339))
		}
		if !s.Endpoint.IsValid() {
			continue
		}
		initAt, _ := w.node.Trouble(s.Endpoint)
		if initAt.IsZero() || !initAt.After(s.LastHandshake) {
			st.unanswered, st.hinted = time.Time{}, false // answered, or never asked
			continue
		}
		if st.unanswered.IsZero() || st.unanswered.Before(s.LastHandshake) {
			st.unanswered, st.hinted = initAt, false
		}
		if !st.hinted && now.Sub(st.unanswered) >= hint {
			st.hinted = true
			w.log.Warn("peer does not answer handshakes: its public key, this node's key in its configuration, or its endpoint is likely wrong (or it is down)",
				"peer", p.PublicKey.String(), "endpoint", s.Endpoint.String(), "unanswered_for", now.Sub(st.unanswered).Round(time.Second).String())
		}
	}
	for k := range states {
		if !seen[k] {
			delete(states, k)
		}
	}
}

// ErrNoSession is the cause of a dial that GuardDial failed. It says
// "host is unreachable", which proxies pass on to their clients (SOCKS5
// reply 0x04, HTTP 502).
var ErrNoSession = errors.New("no WireGuard session with the peer (handshake not answered): host is unreachable")

// GuardDial wraps dial, a dial through n's tunnel, so that a TCP dial
// still waiting after NoSessionWait whose destination is routed to a peer
// with no session fails at once with an error wrapping ErrNoSession that
// names the peer, instead of waiting for its context's deadline.
func GuardDial(n Node, dial func(ctx context.Context, network, address string) (net.Conn, error)) func(ctx context.Context, network, address string) (net.Conn, error) {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		if !strings.HasPrefix(network, "tcp") {
			return dial(ctx, network, address)
		}
		ctx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		t := time.AfterFunc(NoSessionWait, func() {
			if err := noSession(n, address); err != nil {
				cancel(err)
			}
		})
		c, err := dial(ctx, network, address)
		t.Stop()
		if cause := context.Cause(ctx); err != nil && errors.Is(cause, ErrNoSession) {
			return nil, &net.OpError{Op: "dial", Net: network, Err: cause}
		}
		return c, err
	}
}

// noSession returns an error wrapping ErrNoSession when address is routed
// to a peer without a session; nil otherwise.
func noSession(n Node, address string) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil
	}
	key, ok := n.PeerFor(ap.Addr())
	if !ok {
		return nil
	}
	status, err := n.Status()
	if err != nil {
		return nil
	}
	s := status.Peers[key]
	if !s.LastHandshake.IsZero() && time.Since(s.LastHandshake) < SessionLife {
		return nil
	}
	return fmt.Errorf("%s: peer %s (endpoint %v) has not answered in %v: %w", address, key, s.Endpoint, NoSessionWait, ErrNoSession)
}
