package wrap

import "github.com/wgsidecar/sidecar/metrics"

// RegisterMetrics registers the bind's WireGuard message counts (see
// Messages) on r.
func (b *Bind) RegisterMetrics(r *metrics.Registry) {
	r.Register(func() []metrics.Family {
		msgs := metrics.Family{Name: "wgsidecar_wireguard_messages_total", Type: metrics.Counter, Help: "WireGuard handshake and keepalive messages on the node's socket, by direction and type."}
		sent, received := b.Messages()
		for _, d := range []struct {
			dir string
			c   MessageCounts
		}{{"sent", sent}, {"received", received}} {
			msgs.Add(float64(d.c.Initiations), "direction", d.dir, "type", "initiation")
			msgs.Add(float64(d.c.Responses), "direction", d.dir, "type", "response")
			msgs.Add(float64(d.c.CookieReplies), "direction", d.dir, "type", "cookie_reply")
			msgs.Add(float64(d.c.Keepalives), "direction", d.dir, "type", "keepalive")
		}
		return []metrics.Family{msgs}
	})
}
