package wgconf

import (
	"net/netip"
	"reflect"
	"slices"
)

// NeedRestart names the sections that differ between the running
// configuration and next but that a running node cannot change: its
// [Interface] (key, port, addresses, MTU, DNS), [Serve], [FlowLog],
// [LogStream], [Control], [Metrics], [IPFIX], [Resolve] and [STDIOTunnel]. Peers
// and the proxy and forward sections are not among them. A missing
// [Control] in next is no change: the binary adds a default one.
func NeedRestart(running, next *Config) []string {
	var out []string
	ri, ni := running.Interface, next.Interface
	if ri.PrivateKey != ni.PrivateKey || ri.ListenPort != ni.ListenPort || ri.MTU != ni.MTU ||
		!slices.Equal(ri.Addresses, ni.Addresses) || !slices.Equal(ri.DNS, ni.DNS) || !slices.Equal(ri.DNSSearch, ni.DNSSearch) {
		out = append(out, "[Interface]")
	}
	differ := func(name string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			out = append(out, name)
		}
	}
	differ("[Serve]", running.Serve, next.Serve)
	differ("[FlowLog]", running.FlowLog, next.FlowLog)
	differ("[LogStream]", running.LogStream, next.LogStream)
	if next.Control != nil {
		differ("[Control]", running.Control, next.Control)
	}
	differ("[Metrics]", running.Metrics, next.Metrics)
	differ("[IPFIX]", running.IPFIX, next.IPFIX)
	differ("[Resolve]", running.Resolve, next.Resolve)
	differ("[STDIOTunnel]", running.STDIOTunnels, next.STDIOTunnels)
	return out
}

// Inactive names the sections of c that this version parses but does not
// act on yet, so that a node can say so instead of ignoring them silently.
func (c *Config) Inactive() []string {
	var out []string
	if len(c.SNI) > 0 {
		out = append(out, "[SNI]")
	}
	if len(c.Interface.CheckAlive) > 0 {
		out = append(out, "[Interface] CheckAlive")
	}
	return out
}

// TunnelRoutes is what a node with peers may send into the tunnel: every
// peer's AllowedIPs, plus the prefixes of its own Addresses that are wider
// than one address (so that a /24 Address routes its subnet as wg-quick
// does).
func (c *Config) TunnelRoutes(peers []Peer) []netip.Prefix {
	routes := []netip.Prefix{}
	for _, p := range c.Interface.Addresses {
		if p.Bits() < p.Addr().BitLen() {
			routes = append(routes, p.Masked())
		}
	}
	for _, p := range peers {
		routes = append(routes, p.AllowedIPs...)
	}
	return routes
}
