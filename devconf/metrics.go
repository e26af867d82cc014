package devconf

import (
	"math"
	"time"

	"github.com/wgsidecar/sidecar/metrics"
)

// PeerMetrics is the device's view of its peers as metric families: how
// many there are, and each one's bytes on the socket and latest handshake
// (its time, and its age at now).
func PeerMetrics(peers []PeerStatus, now time.Time) []metrics.Family {
	count := metrics.One("wgsidecar_peers", metrics.Gauge, "Configured WireGuard peers.", float64(len(peers)))
	rx := metrics.Family{Name: "wgsidecar_peer_receive_bytes_total", Type: metrics.Counter, Help: "Bytes received from the peer on the WireGuard socket, as the device counts them."}
	tx := metrics.Family{Name: "wgsidecar_peer_transmit_bytes_total", Type: metrics.Counter, Help: "Bytes sent to the peer on the WireGuard socket, as the device counts them."}
	last := metrics.Family{Name: "wgsidecar_peer_last_handshake_timestamp_seconds", Type: metrics.Gauge, Help: "Time of the peer's latest handshake in seconds since the Unix epoch; 0 if none yet."}
	age := metrics.Family{Name: "wgsidecar_peer_handshake_age_seconds", Type: metrics.Gauge, Help: "Seconds since the peer's latest handshake; +Inf if none yet."}
	for _, p := range peers {
		key := p.PublicKey.String()
		rx.Add(float64(p.RxBytes), "public_key", key)
		tx.Add(float64(p.TxBytes), "public_key", key)
		if p.LastHandshake.IsZero() {
			last.Add(0, "public_key", key)
			age.Add(math.Inf(1), "public_key", key)
		} else {
			last.Add(float64(p.LastHandshake.UnixNano())/1e9, "public_key", key)
			age.Add(max(now.Sub(p.LastHandshake).Seconds(), 0), "public_key", key)
		}
	}
	return []metrics.Family{count, rx, tx, last, age}
}
