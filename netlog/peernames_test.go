package netlog

import (
	"net/netip"
	"testing"

	"github.com/wgsidecar/sidecar/wgconf"
)

func TestTunnelAddr(t *testing.T) {
	p := func(s ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, x := range s {
			out = append(out, netip.MustParsePrefix(x))
		}
		return out
	}
	for _, c := range []struct {
		allowed []netip.Prefix
		want    string
	}{
		{p("10.0.0.0/24", "fd00::2/128", "10.0.0.2/32"), "10.0.0.2"},
		{p("10.0.0.0/24", "fd00::2/128"), "fd00::2"},
		{p("10.77.0.0/24", "10.78.0.0/24"), "10.77.0.0"},
		{nil, "invalid IP"},
	} {
		if got := TunnelAddr(c.allowed); got.String() != c.want {
			t.Errorf("TunnelAddr(%v) = %v, want %s", c.allowed, got, c.want)
		}
	}
}

// TestPeerNamerRemembersRoamedEndpoints: an endpoint a peer used before it
// roamed still names it; an unknown endpoint names nobody.
func TestPeerNamerRemembersRoamedEndpoints(t *testing.T) {
	old := netip.MustParseAddrPort("127.0.0.1:1000")
	moved := netip.MustParseAddrPort("127.0.0.2:1000")
	current := old
	calls := 0
	n := &peerNamer{endpoints: func() map[netip.AddrPort][]netip.Prefix {
		calls++
		return map[netip.AddrPort][]netip.Prefix{current: {netip.MustParsePrefix("10.0.0.2/32")}}
	}}
	peer := netip.MustParseAddr("10.0.0.2")
	if got := n.name(old); got != peer {
		t.Fatalf("name(%v) = %v", old, got)
	}
	if n.name(old); calls != 1 {
		t.Errorf("a known endpoint asked the device again (%d calls)", calls)
	}
	current = moved
	if got := n.name(moved); got != peer {
		t.Errorf("after roaming: name(%v) = %v", moved, got)
	}
	if got := n.name(old); got != peer {
		t.Errorf("the old endpoint is forgotten: %v", got)
	}
	if got := n.name(netip.MustParseAddrPort("127.0.0.9:1")); got.IsValid() {
		t.Errorf("an unknown endpoint is named %v", got)
	}
}

func TestClassRoutes(t *testing.T) {
	cfg := &wgconf.Config{
		Interface: wgconf.Interface{Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}},
		Serve:     &wgconf.Serve{Subnets: []netip.Prefix{netip.MustParsePrefix("192.168.5.0/24")}, Exit: true},
	}
	peers := []wgconf.Peer{{AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.2/32")}}, {}}
	r := ClassRoutes(cfg, peers)
	if len(r.Local) != 1 || len(r.Peers) != 2 || len(r.Peers[0]) != 1 || len(r.Serve) != 1 || !r.ServeExit {
		t.Errorf("ClassRoutes = %+v", r)
	}
	if r := ClassRoutes(&wgconf.Config{}, nil); r.Serve != nil || r.ServeExit {
		t.Errorf("without [Serve]: %+v", r)
	}
}
