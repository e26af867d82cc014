package sidecar

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/device"

	"github.com/wgsidecar/sidecar/wgconf"
)

// DefaultWatchdog is how long a peer with traffic waiting may go without a
// handshake before the watchdog acts, when Options.Watchdog is zero. A
// healthy handshake takes one round trip and WireGuard retries every 5 s,
// so 30 s is six failed tries; it is well inside the 90 s after which
// WireGuard gives up and drops what it queued.
const DefaultWatchdog = 30 * time.Second

// watchdog is the state of the node's watchdog loop; only that loop
// touches the maps. The counters are read by the metrics.
type watchdog struct {
	acted    map[wgconf.PublicKey]time.Time     // when the watchdog last acted for the peer
	backoff  map[wgconf.PublicKey]time.Duration // how long until it may act again
	sendErrs uint64                             // the bind's send errors when last checked

	recoveries atomic.Uint64 // times the watchdog acted for a peer
	rebinds    atomic.Uint64 // times it reopened the UDP socket
	resolved   atomic.Uint64 // times its re-resolution moved an endpoint
}

// watchdogLoop watches for peers that WireGuard has traffic for but
// cannot reach: since the last check, an initiation was sent to the peer's
// endpoint, or a send to it failed, after the peer's last handshake. Such a
// peer whose last handshake (or the node's start) is older than
// Options.Watchdog is recovered: its endpoint name is resolved again, the
// UDP socket is reopened on the same port if sends failed since the last
// check (a socket closed or broken under the node), and a handshake is
// started. Each recovery is logged and counted in the metrics. A peer that
// stays unreachable (switched off) is tried again after twice the wait
// each time, up to 16 times Options.Watchdog, so that the watchdog's own
// handshake tries do not keep it busy.
func (n *Node) watchdogLoop(timeout time.Duration) {
	defer n.wg.Done()
	interval := min(max(timeout/4, 10*time.Millisecond), 5*time.Second)
	t := time.NewTicker(interval)
	defer t.Stop()
	w := &n.dog
	w.acted = map[wgconf.PublicKey]time.Time{}
	w.backoff = map[wgconf.PublicKey]time.Duration{}
	prev := time.Now()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		now := time.Now()
		n.watchdogCheck(timeout, prev, now)
		prev = now
	}
}

// watchdogCheck is one round of the watchdog: signals newer than prev
// count as trouble.
func (n *Node) watchdogCheck(timeout time.Duration, prev, now time.Time) {
	w := &n.dog
	status, err := n.peerStatus()
	if err != nil {
		return
	}
	n.mu.Lock()
	peers, started := n.peers, n.started
	n.mu.Unlock()
	var due []wgconf.Peer
	for _, p := range peers {
		key := p.PublicKey
		s := status[key]
		if acted, ok := w.acted[key]; ok && s.LastHandshake.After(acted) {
			delete(w.acted, key) // reached since: start afresh
			delete(w.backoff, key)
		}
		if !s.Endpoint.IsValid() {
			continue
		}
		initAt, errAt := n.bind.Trouble(s.Endpoint)
		recent := func(t time.Time) bool { return t.After(s.LastHandshake) && t.After(prev) }
		if !recent(initAt) && !recent(errAt) {
			continue // nothing waiting, or it got through
		}
		last := s.LastHandshake
		if last.IsZero() {
			last = started
		}
		if now.Sub(last) < timeout {
			continue
		}
		wait := cmp.Or(w.backoff[key], timeout)
		if acted, ok := w.acted[key]; ok && now.Sub(acted) < wait {
			continue
		}
		if _, ok := w.acted[key]; ok {
			wait = min(2*wait, 16*timeout)
		}
		w.acted[key], w.backoff[key] = now, wait
		due = append(due, p)
	}
	for key := range w.acted {
		if _, ok := status[key]; !ok {
			delete(w.acted, key) // removed peer
			delete(w.backoff, key)
		}
	}
	if len(due) == 0 {
		return
	}
	rebound := false
	if n.bind.SendErrors() != w.sendErrs {
		if err := n.dev.BindUpdate(); err != nil {
			n.log.Error("watchdog: reopening the UDP socket failed", "err", err)
		} else {
			rebound = true
			w.rebinds.Add(1)
			n.log.Warn("watchdog: sends were failing; reopened the UDP socket", "listen_port", n.ListenPort())
		}
		w.sendErrs = n.bind.SendErrors()
	}
	for _, p := range due {
		w.recoveries.Add(1)
		s := status[p.PublicKey]
		hs := "never"
		if !s.LastHandshake.IsZero() {
			hs = now.Sub(s.LastHandshake).Round(time.Second).String() + " ago"
		}
		moved := false
		if _, err := netip.ParseAddrPort(p.Endpoint); err != nil && p.Endpoint != "" {
			moved = n.reresolvePeer(p, s.Endpoint)
			if moved {
				w.resolved.Add(1)
			}
		}
		if peer := n.dev.LookupPeer(device.NoisePublicKey(p.PublicKey)); peer != nil {
			peer.SendHandshakeInitiation(false)
		}
		n.log.Warn("watchdog: peer has traffic waiting and no handshake; re-resolved, re-handshaking",
			"peer", p.PublicKey.String(), "last_handshake", hs, "endpoint_moved", moved, "socket_reopened", rebound)
	}
}

// reresolvePeer resolves p's endpoint name again and, if it now names
// another address than current, points the peer there. It reports whether
// the endpoint moved.
func (n *Node) reresolvePeer(p wgconf.Peer, current netip.AddrPort) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	ep, err := n.resolveEndpoint(ctx, p.Endpoint)
	cancel()
	if err != nil {
		n.log.Warn("re-resolving peer endpoint failed", "peer", p.PublicKey.String(), "endpoint", p.Endpoint, "err", err)
		return false
	}
	if ep == current {
		return false
	}
	uapi := fmt.Sprintf("public_key=%s\nupdate_only=true\nendpoint=%s\n", p.PublicKey.Hex(), ep)
	if err := n.dev.IpcSet(uapi); err != nil {
		n.log.Warn("setting re-resolved endpoint failed", "peer", p.PublicKey.String(), "err", err)
		return false
	}
	n.log.Info("peer endpoint re-resolved", "peer", p.PublicKey.String(), "endpoint", p.Endpoint, "address", ep.String())
	return true
}
