package sidecar_test

import (
	"testing"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/sidecartest"
)

// TestMixedDevices peers a node on wireguard-go with one on wgdev, each in
// turn the one that speaks first (and so initiates the handshake): HTTP
// both ways over IPv4 and IPv6, then a bulk transfer each way with its
// checksum, over IPv4 one way and IPv6 the other.
func TestMixedDevices(t *testing.T) {
	for _, first := range sidecartest.Devices {
		t.Run(first.Name+" initiates", func(t *testing.T) {
			t.Parallel()
			nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{
				NodeOptions: func(i int, o *sidecar.Options) { o.OwnWireGuard = (i == 0) == first.Own },
			})
			a, b := nodes[0], nodes[1]
			httpBothWays(t, a, b)
			bulkChecksum(t, a, b, sidecartest.Addr4(1), 16<<20)
			bulkChecksum(t, b, a, sidecartest.Addr6(0), 16<<20)
			for i, n := range nodes {
				if peers, err := n.Peers(); err != nil || len(peers) != 1 || peers[0].LastHandshake.IsZero() {
					t.Errorf("node %d's peer status: %+v, %v", i, peers, err)
				}
			}
		})
	}
}
