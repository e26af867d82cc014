package monitor

import (
	"github.com/wgsidecar/sidecar/metrics"
	"github.com/wgsidecar/sidecar/netstack"
)

// RegisterMetrics registers on r the monitor's counts (listeners, lost
// events, refused connections by reason, connection errors) and the
// stack's refusals under the monitor's reason names.
func (m *Monitor) RegisterMetrics(r *metrics.Registry, st *netstack.Stack) {
	r.Register(func() []metrics.Family {
		sd := metrics.Family{Name: "wgsidecar_stack_drops_total", Type: metrics.Counter, Help: "Packets the node's TCP/IP stack refused, by drop reason: no-listener (answered with RST or ICMP), forward-refused, queue-full (the queue to the WireGuard device was full)."}
		for _, d := range []netstack.Drop{netstack.DropNoListener, netstack.DropRefused, netstack.DropQueueFull} {
			r, _ := StackReason(d)
			sd.Add(float64(st.Drops(d)), "reason", r.String())
		}
		mc := m.Counts()
		listeners := metrics.One("wgsidecar_monitor_listeners", metrics.Gauge, "Monitor listeners attached (sidecar monitor sessions).", float64(mc.Listeners))
		lost := metrics.One("wgsidecar_monitor_lost_events_total", metrics.Counter, "Monitor events that listeners missed because their queue was full (each reported to its listener).", float64(mc.Lost))
		refused := metrics.Family{Name: "wgsidecar_connections_refused_total", Type: metrics.Counter, Help: "Connections the proxies and forwards refused, by drop reason."}
		for _, r := range Reasons() {
			if v := mc.Refused[r]; v > 0 {
				refused.Add(float64(v), "reason", r.String())
			}
		}
		connErrors := metrics.One("wgsidecar_connection_errors_total", metrics.Counter, "Connections the proxies and forwards accepted but could not relay (the dial of their target failed).", float64(mc.ConnErrors))
		return []metrics.Family{sd, listeners, lost, refused, connErrors}
	})
}
