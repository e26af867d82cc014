package wgconf

import (
	"reflect"
	"slices"
)

// NeedRestart names the sections that differ between the running
// configuration and next but that a running node cannot change: its
// [Interface] (key, port, addresses, MTU, DNS), [Serve], [FlowLog],
// [LogStream], [Control], [Metrics], [Resolve] and [STDIOTunnel]. Peers
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
	differ("[Resolve]", running.Resolve, next.Resolve)
	differ("[STDIOTunnel]", running.STDIOTunnels, next.STDIOTunnels)
	return out
}
