package sidecar

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/wgsidecar/sidecar/devconf"
	"github.com/wgsidecar/sidecar/netlog"
	"github.com/wgsidecar/sidecar/watchdog"
	"github.com/wgsidecar/sidecar/wgconf"
	"github.com/wgsidecar/sidecar/wgnoise"
)

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

// setPeers configures peers (see devconf.Diff); with announce, a
// handshake with every new peer that has an endpoint starts at once, so
// that peers learn of a (re)started node without waiting for their own
// rekey timers.
func (n *Node) setPeers(peers []wgconf.Peer, announce bool) error {
	old := n.PeerConfig()
	endpoints := map[wgconf.PublicKey]netip.AddrPort{}
	for _, p := range devconf.EndpointChanges(old, peers) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ep, err := n.resolveEndpoint(ctx, p.Endpoint)
		cancel()
		if err != nil {
			n.log.Warn("peer endpoint does not resolve yet; will retry", "peer", p.PublicKey.String(), "endpoint", p.Endpoint, "err", err)
			continue
		}
		endpoints[p.PublicKey] = ep
	}
	set, restore, err := devconf.Diff(old, peers, endpoints, announce)
	if err != nil {
		return fmt.Errorf("sidecar: %w", err)
	}
	for _, uapi := range []string{set, restore} {
		if uapi == "" {
			continue
		}
		if err := n.dev.IpcSet(uapi); err != nil {
			return fmt.Errorf("sidecar: configure peers: %w", err)
		}
	}
	n.mu.Lock()
	n.peers = slices.Clone(peers)
	n.mu.Unlock()
	n.routed.Store(devconf.AllowedIPs(peers))
	n.stack.SetRoutes(n.cfg.TunnelRoutes(peers))
	if n.flows != nil {
		n.flows.ReconfigRoutes(netlog.ClassRoutes(n.cfg, peers))
	}
	return nil
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

// PeerConfig returns the peers the node is configured with now (the
// file's, or the last SetPeers).
func (n *Node) PeerConfig() []wgconf.Peer {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.peers)
}

// PeerStatus is what the WireGuard device knows of one peer.
type PeerStatus = devconf.PeerStatus

// Peers reports the device's view of every peer, in configuration order.
func (n *Node) Peers() ([]PeerStatus, error) {
	st, err := n.deviceStatus()
	if err != nil {
		return nil, err
	}
	peers := n.PeerConfig()
	out := make([]PeerStatus, 0, len(peers))
	for _, p := range peers {
		if s, ok := st.Peers[p.PublicKey]; ok {
			out = append(out, s)
		}
	}
	return out, nil
}

func (n *Node) deviceStatus() (devconf.Status, error) {
	text, err := n.dev.IpcGet()
	if err != nil {
		return devconf.Status{}, err
	}
	return devconf.ParseStatus(text)
}

// ListenPort returns the UDP port WireGuard listens on (the one the OS
// chose when the file sets none).
func (n *Node) ListenPort() int {
	st, err := n.deviceStatus()
	if err != nil {
		return 0
	}
	return st.ListenPort
}

// DefaultWatchdog is how long a peer with traffic waiting may go without a
// handshake before the watchdog acts, when Options.Watchdog is zero (see
// package watchdog).
const DefaultWatchdog = watchdog.DefaultTimeout

// dogNode is the node as the watchdog sees it.
type dogNode struct{ n *Node }

func (d dogNode) Status() (devconf.Status, error) { return d.n.deviceStatus() }

func (d dogNode) Peers() ([]wgconf.Peer, time.Time) {
	d.n.mu.Lock()
	defer d.n.mu.Unlock()
	return d.n.peers, d.n.started
}

func (d dogNode) Trouble(ep netip.AddrPort) (time.Time, time.Time) { return d.n.bind.Trouble(ep) }
func (d dogNode) SendErrors() uint64                               { return d.n.bind.SendErrors() }
func (d dogNode) Rebind() error                                    { return d.n.dev.BindUpdate() }
func (d dogNode) PeerFor(a netip.Addr) (wgconf.PublicKey, bool)    { return d.n.routed.Load().PeerFor(a) }

func (d dogNode) ListenPort() int { return d.n.ListenPort() }

func (d dogNode) Handshake(key wgconf.PublicKey) { d.n.dev.Handshake(wgnoise.PublicKey(key)) }

func (d dogNode) Resolve(ctx context.Context, endpoint string) (netip.AddrPort, error) {
	return d.n.resolveEndpoint(ctx, endpoint)
}

func (d dogNode) SetEndpoint(key wgconf.PublicKey, ep netip.AddrPort) error {
	return d.n.dev.IpcSet(devconf.Endpoint(key, ep))
}
