package devconf

import (
	"strings"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/metrics"
)

func TestPeerMetrics(t *testing.T) {
	now := time.Unix(1000, 0)
	peers := []PeerStatus{
		{PublicKey: key(1), RxBytes: 10, TxBytes: 20, LastHandshake: time.Unix(990, 500_000_000)},
		{PublicKey: key(2)},
	}
	var b strings.Builder
	if err := metrics.Write(&b, PeerMetrics(peers, now)); err != nil {
		t.Fatal(err)
	}
	k1, k2 := key(1).String(), key(2).String()
	for _, want := range []string{
		"wgsidecar_peers 2\n",
		`wgsidecar_peer_receive_bytes_total{public_key="` + k1 + `"} 10` + "\n",
		`wgsidecar_peer_transmit_bytes_total{public_key="` + k1 + `"} 20` + "\n",
		`wgsidecar_peer_last_handshake_timestamp_seconds{public_key="` + k1 + `"} 990.5` + "\n",
		`wgsidecar_peer_handshake_age_seconds{public_key="` + k1 + `"} 9.5` + "\n",
		`wgsidecar_peer_last_handshake_timestamp_seconds{public_key="` + k2 + `"} 0` + "\n",
		`wgsidecar_peer_handshake_age_seconds{public_key="` + k2 + `"} +Inf` + "\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("missing %q in\n%s", want, b.String())
		}
	}
}
