package sidecar_test

import (
	"testing"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/sidecartest"
)

// devices are the WireGuard devices a node can run on: wireguard-go's, and
// the module's own (sidecar.Options.OwnWireGuard).
var devices = []struct {
	name string
	own  bool
}{{"wireguard-go", false}, {"wgdev", true}}

// forEachDevice runs f once per device, as parallel subtests named after
// the device. They run when the calling test function returns, so a test
// that checks for leaked goroutines calls forEachDevice inside a t.Run of
// its own and checks after that returns.
func forEachDevice(t *testing.T, f func(t *testing.T, own bool)) {
	for _, d := range devices {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			f(t, d.own)
		})
	}
}

// TestMixedDevices peers a node on wireguard-go with one on wgdev, each in
// turn the one that speaks first (and so initiates the handshake): HTTP
// both ways over IPv4 and IPv6, then a bulk transfer each way with its
// checksum, over IPv4 one way and IPv6 the other.
func TestMixedDevices(t *testing.T) {
	for _, first := range devices {
		t.Run(first.name+" initiates", func(t *testing.T) {
			t.Parallel()
			nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{
				NodeOptions: func(i int, o *sidecar.Options) { o.OwnWireGuard = (i == 0) == first.own },
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
