package netlog_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/netlog"
	"github.com/wgsidecar/sidecar/sidecartest"
)

// TestPhysicalRowsNameWidePeer: node 0 knows node 1 only by wide
// AllowedIPs (10.99.0.0/24, fd00:99::/64); after traffic, the physical
// rows name node 1 by the address it uses, 10.99.0.2, not 10.99.0.0 (#15).
func TestPhysicalRowsNameWidePeer(t *testing.T) {
	sink := &netlog.MemorySink{}
	nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{FlowSinks: []netlog.Sink{sink}})
	a, b := nodes[0], nodes[1]
	peers := a.PeerConfig()
	peers[0].AllowedIPs = []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24"), netip.MustParsePrefix("fd00:99::/64")}
	if err := a.SetPeers(peers); err != nil {
		t.Fatal(err)
	}
	testnet.ServeHTTP(t, b, "b")
	testnet.Get(t, a.HTTPClient(), "http://10.99.0.2/")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.CutFlows(ctx); err != nil {
		t.Fatal(err)
	}
	var srcs []string
	for _, m := range sink.Messages() {
		for _, e := range m.PhysicalTraffic {
			srcs = append(srcs, e.Src)
		}
	}
	if len(srcs) != 1 || srcs[0] != "10.99.0.2:0" {
		t.Errorf("physical rows name the peer %q; want [10.99.0.2:0]", srcs)
	}
}
