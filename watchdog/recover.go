package watchdog

import (
	"cmp"
	"time"

	"github.com/wgsidecar/sidecar/devconf"
	"github.com/wgsidecar/sidecar/wgconf"
)

// recoveryLoop watches for peers that WireGuard has traffic for but
// cannot reach: since the last check, an initiation was sent to the peer's
// endpoint, or a send to it failed, after the peer's last handshake. Such a
// peer whose last handshake (or the node's start) is older than timeout is
// recovered: its endpoint name is resolved again, the UDP socket is
// reopened on the same port if sends failed since the last check (a socket
// closed or broken under the node), and a handshake is started. A peer
// that stays unreachable (switched off) is tried again after twice the
// wait each time, up to 16 times timeout, so that the watchdog's own
// handshake tries do not keep it busy.
func (w *Watchdog) recoveryLoop(timeout time.Duration) {
	defer w.wg.Done()
	t := time.NewTicker(min(max(timeout/4, 10*time.Millisecond), 5*time.Second))
	defer t.Stop()
	prev := time.Now()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		now := time.Now()
		w.check(timeout, prev, now)
		prev = now
	}
}

// check is one round of the recovery loop: signals newer than prev count
// as trouble.
func (w *Watchdog) check(timeout time.Duration, prev, now time.Time) {
	status, err := w.node.Status()
	if err != nil {
		return
	}
	peers, started := w.node.Peers()
	var due []wgconf.Peer
	for _, p := range peers {
		if w.isDue(p, status.Peers[p.PublicKey], timeout, started, prev, now) {
			due = append(due, p)
		}
	}
	for key := range w.acted {
		if _, ok := status.Peers[key]; !ok {
			delete(w.acted, key) // removed peer
			delete(w.backoff, key)
		}
	}
	if len(due) > 0 {
		w.recover(due, status, now)
	}
}

// isDue reports whether the watchdog should act for p now, and if so
// records that it does.
func (w *Watchdog) isDue(p wgconf.Peer, s devconf.PeerStatus, timeout time.Duration, started, prev, now time.Time) bool {
	key := p.PublicKey
	if acted, ok := w.acted[key]; ok && s.LastHandshake.After(acted) {
		delete(w.acted, key) // reached since: start afresh
		delete(w.backoff, key)
	}
	if !s.Endpoint.IsValid() {
		return false
	}
	initAt, errAt := w.node.Trouble(s.Endpoint)
	recent := func(t time.Time) bool { return t.After(s.LastHandshake) && t.After(prev) }
	if !recent(initAt) && !recent(errAt) {
		return false // nothing waiting, or it got through
	}
	last := s.LastHandshake
	if last.IsZero() {
		last = started
	}
	if now.Sub(last) < timeout {
		return false
	}
	wait := cmp.Or(w.backoff[key], timeout)
	acted, ok := w.acted[key]
	if ok && now.Sub(acted) < wait {
		return false
	}
	if ok {
		wait = min(2*wait, 16*timeout)
	}
	w.acted[key], w.backoff[key] = now, wait
	return true
}

// recover acts for the peers that are due: reopens the socket if sends
// failed, re-resolves names and starts handshakes.
func (w *Watchdog) recover(due []wgconf.Peer, status devconf.Status, now time.Time) {
	rebound := false
	if errs := w.node.SendErrors(); errs != w.sendErrs {
		if err := w.node.Rebind(); err != nil {
			w.log.Error("watchdog: reopening the UDP socket failed", "err", err)
		} else {
			rebound = true
			w.rebinds.Add(1)
			w.log.Warn("watchdog: sends were failing; reopened the UDP socket", "listen_port", w.node.ListenPort())
		}
		w.sendErrs = w.node.SendErrors()
	}
	for _, p := range due {
		w.recoveries.Add(1)
		s := status.Peers[p.PublicKey]
		hs := "never"
		if !s.LastHandshake.IsZero() {
			hs = now.Sub(s.LastHandshake).Round(time.Second).String() + " ago"
		}
		moved := hasName(p) && w.reresolve(p, s.Endpoint)
		if moved {
			w.moved.Add(1)
		}
		w.node.Handshake(p.PublicKey)
		w.log.Warn("watchdog: peer has traffic waiting and no handshake; re-resolved, re-handshaking",
			"peer", p.PublicKey.String(), "last_handshake", hs, "endpoint_moved", moved, "socket_reopened", rebound)
	}
}
