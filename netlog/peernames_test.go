package netlog

import (
	"net/netip"
	"testing"

	"github.com/wgsidecar/sidecar/classify"
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
		{p("10.77.0.0/24", "10.78.0.0/24"), "invalid IP"}, // named from its traffic, not its prefix
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

// TestPeerNamerLearnsAddress: a peer known only by a wide prefix
// (AllowedIPs 10.77.0.0/24) has no name until it sends traffic, then the
// address inside its prefix that sent the most packets, kept afterwards;
// exit traffic and traffic outside its prefix teach nothing (#15: it was
// named 10.77.0.0, an address nobody uses).
func TestPeerNamerLearnsAddress(t *testing.T) {
	hub := netip.MustParseAddrPort("127.0.0.1:1000")
	single := netip.MustParseAddrPort("127.0.0.1:2000")
	calls := 0
	n := &peerNamer{endpoints: func() map[netip.AddrPort][]netip.Prefix {
		calls++
		return map[netip.AddrPort][]netip.Prefix{
			hub:    {netip.MustParsePrefix("10.77.0.0/24"), netip.MustParsePrefix("0.0.0.0/0")},
			single: {netip.MustParsePrefix("10.0.0.9/32")},
		}
	}}
	if got := n.name(hub); got.IsValid() {
		t.Errorf("before traffic: %v; want no name", got)
	}
	flow := func(dst string, rx uint64, c classify.Class) Flow {
		return Flow{Proto: 6, Src: netip.MustParseAddrPort("10.77.0.1:5000"), Dst: netip.MustParseAddrPort(dst), RxPackets: rx, Class: c}
	}
	n.learn([]Flow{
		flow("8.8.8.8:443", 900, classify.Exit),    // through its default route: not its address
		flow("10.78.0.5:80", 500, classify.Subnet), // outside its prefixes
		flow("10.77.0.3:22", 7, classify.Virtual),  // another host behind it
		flow("10.77.0.2:80", 10, classify.Virtual), // the peer itself, busiest
		flow("10.77.0.2:81", 2, classify.Virtual),  // summed per address
		flow("10.77.0.4:80", 0, classify.Virtual),  // sent nothing
	})
	want := netip.MustParseAddr("10.77.0.2")
	if got := n.name(hub); got != want {
		t.Errorf("after traffic: %v; want %v", got, want)
	}
	if got := n.name(single); got != netip.MustParseAddr("10.0.0.9") {
		t.Errorf("single-address peer: %v", got)
	}
	before := calls
	n.learn([]Flow{flow("10.77.0.3:22", 1000, classify.Virtual)})
	if got := n.name(hub); got != want {
		t.Errorf("the name changed to %v with later traffic", got)
	}
	if calls != before {
		t.Errorf("with every peer named, learning asked the device again (%d calls)", calls-before)
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
