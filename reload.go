package sidecar

import (
	"errors"

	"github.com/wgsidecar/sidecar/devconf"
	"github.com/wgsidecar/sidecar/forward"
	"github.com/wgsidecar/sidecar/wgconf"
)

// Changes says what a Reload applied.
type Changes struct {
	PeersAdded, PeersRemoved, PeersChanged int
	// Started and Stopped name the proxies and forwards started and
	// stopped, by section and listen address ("[Socks5] 127.0.0.1:1080").
	Started, Stopped []string
	// NeedRestart names the sections whose changes were not applied: a
	// running node keeps its [Interface] (key, port, addresses, MTU,
	// DNS), [Serve], [FlowLog], [LogStream], [Control], [Metrics] and
	// [Resolve] until it restarts.
	NeedRestart []string
}

// Reload makes cfg the node's configuration as far as a running node can
// change, applying only the difference: peers added, removed or changed
// (see SetPeers: untouched peers keep their sessions), proxies and
// forwards added or removed (unchanged ones carry on with their open
// connections; a section whose keys changed is stopped and started
// again). Changes to sections that need a restart are logged and listed
// in Changes.NeedRestart, not applied.
//
// An invalid cfg is refused before anything changes. A proxy or forward
// that fails to start (its port taken) is logged and reported in the
// error while the rest of the reload stands; a later Reload tries it again.
func (n *Node) Reload(cfg *wgconf.Config) (Changes, error) {
	if cfg == nil {
		return Changes{}, errors.New("sidecar: reload: nil config")
	}
	if err := cfg.Validate(); err != nil {
		n.log.Error("reload refused; keeping the running configuration", "err", err)
		return Changes{}, err
	}
	n.reloadMu.Lock()
	defer n.reloadMu.Unlock()
	n.mu.Lock()
	closed, old := n.closed, n.peers
	n.mu.Unlock()
	if closed {
		return Changes{}, errClosed
	}
	ch := Changes{NeedRestart: wgconf.NeedRestart(n.cfg, cfg)}
	ch.PeersAdded, ch.PeersRemoved, ch.PeersChanged = devconf.Count(old, cfg.Peers)
	if err := n.setPeers(cfg.Peers, true); err != nil {
		n.log.Error("reload failed", "err", err)
		return ch, err
	}
	var err error
	ch.Started, ch.Stopped, err = n.applyForwards(cfg, false)
	for _, s := range ch.NeedRestart {
		n.log.Warn("reload: this section changed; restart the sidecar to apply it", "section", s)
	}
	n.log.Info("configuration reloaded",
		"peers", len(cfg.Peers), "peers_added", ch.PeersAdded, "peers_removed", ch.PeersRemoved, "peers_changed", ch.PeersChanged,
		"forwards_started", len(ch.Started), "forwards_stopped", len(ch.Stopped))
	return ch, err
}

// ReloadFile reads the file the node was started from again and reloads
// it (see Reload). A file that no longer parses is refused, the error
// (which names file, line and key, and never a secret) logged, and the
// running configuration kept. It is what SIGHUP and the control socket's
// reload call do.
func (n *Node) ReloadFile() (Changes, error) {
	path := n.cfg.Path
	if path == "" {
		return Changes{}, errors.New("sidecar: reload: the node was not started from a file")
	}
	cfg, err := wgconf.ParseFile(path)
	if err != nil {
		n.log.Error("reload refused; keeping the running configuration", "err", err)
		return Changes{}, err
	}
	return n.Reload(cfg)
}

// applyForwards makes the running proxies and forwards those of cfg (see
// forward.Set.Apply).
func (n *Node) applyForwards(cfg *wgconf.Config, atStart bool) (started, stopped []string, err error) {
	started, stopped, err = n.fwd.Apply(cfg, atStart)
	if errors.Is(err, forward.ErrClosed) {
		err = errClosed
	}
	return started, stopped, err
}
