package classify

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

func pfx(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// Route sets of the test cases, named after what the node does.
var (
	usesSubnetRouter = Routes{
		Local: pfx("10.0.0.1/32", "fd00::1/128"),
		Peers: [][]netip.Prefix{
			pfx("10.0.0.2/32", "fd00::2/128", "192.168.50.0/24", "fd50::/64"),
			pfx("10.0.0.3/32", "fd00::3/128"),
		},
	}
	isSubnetRouter = Routes{
		Local: pfx("10.0.0.2/32", "fd00::2/128"),
		Peers: [][]netip.Prefix{pfx("10.0.0.1/32", "fd00::1/128")},
		Serve: pfx("192.168.50.0/24", "fd50::/64"),
	}
	usesExitNode = Routes{
		Local: pfx("10.0.0.1/32", "fd00::1/128"),
		Peers: [][]netip.Prefix{
			pfx("10.0.0.2/32", "fd00::2/128", "0.0.0.0/0", "::/0"),
			pfx("10.0.0.3/32", "192.168.60.0/24"),
		},
	}
	isExitNode = Routes{
		Local:     pfx("10.0.0.2/32", "fd00::2/128"),
		Peers:     [][]netip.Prefix{pfx("10.0.0.1/32", "fd00::1/128")},
		ServeExit: true,
	}
	// wg-quick style: the Address carries the tunnel network, and a hub
	// peer routes all of it.
	wgQuick24 = Routes{
		Local: pfx("10.0.0.1/24", "fd00::1/64"),
		Peers: [][]netip.Prefix{
			pfx("10.0.0.0/24", "fd00::/64", "192.168.50.0/24"),
		},
	}
	// The same hub without the /24 on Address: the other spokes are
	// reached through a routed prefix, so they count as a subnet.
	hubOnly = Routes{
		Local: pfx("10.0.0.1/32"),
		Peers: [][]netip.Prefix{pfx("10.0.0.0/24")},
	}
	// Default routes written in pieces: a split default, and the "all but
	// private ranges" list WireGuard clients generate (abridged).
	splitDefault = Routes{
		Local: pfx("10.0.0.1/32", "fd00::1/128"),
		Peers: [][]netip.Prefix{
			pfx("10.0.0.2/32", "0.0.0.0/1", "128.0.0.0/1", "2000::/3"),
			pfx("10.0.0.3/32", "0.0.0.0/5", "8.0.0.0/7", "11.0.0.0/8",
				"12.0.0.0/6", "16.0.0.0/4", "32.0.0.0/3", "64.0.0.0/2",
				"128.0.0.0/3", "160.0.0.0/5", "168.0.0.0/6", "172.0.0.0/12",
				"172.32.0.0/11", "172.64.0.0/10", "172.128.0.0/9",
				"173.0.0.0/8", "174.0.0.0/7", "176.0.0.0/4",
				"192.0.0.0/9", "192.128.0.0/11", "192.160.0.0/13",
				"192.169.0.0/16", "192.170.0.0/15", "192.172.0.0/14",
				"192.176.0.0/12", "192.192.0.0/10", "193.0.0.0/8",
				"194.0.0.0/7", "196.0.0.0/6", "200.0.0.0/5", "208.0.0.0/4"),
			pfx("10.0.0.4/32", "192.168.50.0/24", "10.200.0.0/16"),
		},
	}
	// IPv4-mapped IPv6 prefixes in the routes.
	mappedRoutes = Routes{
		Local: pfx("::ffff:10.0.0.1/128"),
		Peers: [][]netip.Prefix{pfx("::ffff:10.0.0.2/128", "::ffff:192.168.50.0/120")},
	}
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name   string
		routes Routes
		a, b   string // classified as (a, b) and as (b, a)
		want   Class
	}{
		{"uses subnet router/virtual v4", usesSubnetRouter, "10.0.0.1", "10.0.0.2", Virtual},
		{"uses subnet router/virtual v6", usesSubnetRouter, "fd00::1", "fd00::3", Virtual},
		{"uses subnet router/subnet v4", usesSubnetRouter, "10.0.0.1", "192.168.50.7", Subnet},
		{"uses subnet router/subnet v6", usesSubnetRouter, "fd00::1", "fd50::7", Subnet},
		{"uses subnet router/subnet first", usesSubnetRouter, "10.0.0.1", "192.168.50.0", Subnet},
		{"uses subnet router/subnet last", usesSubnetRouter, "10.0.0.1", "192.168.50.255", Subnet},
		{"uses subnet router/outside subnet", usesSubnetRouter, "10.0.0.1", "192.168.51.0", Exit},
		{"uses subnet router/exit v4", usesSubnetRouter, "10.0.0.1", "8.8.8.8", Exit},
		{"uses subnet router/exit v6", usesSubnetRouter, "fd00::1", "2001:db8::1", Exit},
		{"uses subnet router/unknown tunnel-ish", usesSubnetRouter, "10.0.0.1", "10.0.0.9", Exit},

		{"is subnet router/virtual v4", isSubnetRouter, "10.0.0.2", "10.0.0.1", Virtual},
		{"is subnet router/virtual v6", isSubnetRouter, "fd00::2", "fd00::1", Virtual},
		{"is subnet router/subnet v4", isSubnetRouter, "192.168.50.9", "10.0.0.1", Subnet},
		{"is subnet router/subnet v6", isSubnetRouter, "fd50::9", "fd00::1", Subnet},
		{"is subnet router/exit v4", isSubnetRouter, "1.1.1.1", "10.0.0.1", Exit},
		{"is subnet router/exit v6", isSubnetRouter, "2606:4700::1111", "fd00::1", Exit},

		{"uses exit node/virtual v4", usesExitNode, "10.0.0.1", "10.0.0.2", Virtual},
		{"uses exit node/virtual v6", usesExitNode, "fd00::1", "fd00::2", Virtual},
		{"uses exit node/subnet", usesExitNode, "10.0.0.1", "192.168.60.1", Subnet},
		{"uses exit node/exit v4", usesExitNode, "10.0.0.1", "1.1.1.1", Exit},
		{"uses exit node/exit v6", usesExitNode, "fd00::1", "2606:4700::1111", Exit},

		{"is exit node/virtual", isExitNode, "10.0.0.2", "10.0.0.1", Virtual},
		{"is exit node/exit v4", isExitNode, "9.9.9.9", "10.0.0.1", Exit},
		{"is exit node/exit v6", isExitNode, "2620:fe::9", "fd00::1", Exit},

		{"/24 address/virtual in tunnel network", wgQuick24, "10.0.0.1", "10.0.0.77", Virtual},
		{"/64 address/virtual in tunnel network", wgQuick24, "fd00::1", "fd00::77", Virtual},
		{"/24 address/network and broadcast", wgQuick24, "10.0.0.0", "10.0.0.255", Virtual},
		{"/24 address/subnet", wgQuick24, "10.0.0.1", "192.168.50.1", Subnet},
		{"/24 address/exit despite hub route", wgQuick24, "10.0.0.1", "8.8.8.8", Exit},
		{"/24 address/outside tunnel network", wgQuick24, "10.0.0.1", "10.0.1.1", Exit},

		{"hub only/spoke via routed prefix", hubOnly, "10.0.0.1", "10.0.0.5", Subnet},
		{"hub only/exit", hubOnly, "10.0.0.1", "8.8.8.8", Exit},

		{"split default/virtual", splitDefault, "10.0.0.1", "10.0.0.2", Virtual},
		{"split default/halves are exit", splitDefault, "10.0.0.1", "1.1.1.1", Exit},
		{"split default/2000::/3 is exit", splitDefault, "fd00::1", "2606:4700::1111", Exit},
		{"split default/generated list is exit", splitDefault, "10.0.0.1", "11.1.1.1", Exit},
		{"split default/real subnet kept", splitDefault, "10.0.0.1", "192.168.50.3", Subnet},
		{"split default/real /16 kept", splitDefault, "10.0.0.1", "10.200.3.4", Subnet},

		{"mapped/virtual", usesSubnetRouter, "::ffff:10.0.0.1", "::ffff:10.0.0.2", Virtual},
		{"mapped/subnet", usesSubnetRouter, "::ffff:10.0.0.1", "::ffff:192.168.50.7", Subnet},
		{"mapped/one end mapped", usesSubnetRouter, "10.0.0.1", "::ffff:10.0.0.3", Virtual},
		{"mapped/exit", usesExitNode, "::ffff:10.0.0.1", "::ffff:1.1.1.1", Exit},
		{"mapped routes/virtual", mappedRoutes, "10.0.0.1", "10.0.0.2", Virtual},
		{"mapped routes/subnet", mappedRoutes, "10.0.0.1", "::ffff:192.168.50.7", Subnet},

		{"zone ignored", Routes{Local: pfx("fe80::1/128"), Peers: [][]netip.Prefix{pfx("fe80::2/128")}}, "fe80::1%eth0", "fe80::2%eth0", Virtual},
		{"mixed families", usesSubnetRouter, "10.0.0.1", "fd00::2", Virtual},
		{"no routes", Routes{}, "10.0.0.1", "10.0.0.2", Exit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(tt.routes)
			a, b := addr(tt.a), addr(tt.b)
			if got := c.Classify(a, b); got != tt.want {
				t.Errorf("Classify(%v, %v) = %v, want %v", a, b, got, tt.want)
			}
			if got := c.Classify(b, a); got != tt.want {
				t.Errorf("Classify(%v, %v) = %v, want %v", b, a, got, tt.want)
			}
		})
	}
}

func TestIsNode(t *testing.T) {
	tests := []struct {
		routes Routes
		a      string
		want   bool
	}{
		{usesSubnetRouter, "10.0.0.1", true},
		{usesSubnetRouter, "10.0.0.3", true},
		{usesSubnetRouter, "fd00::2", true},
		{usesSubnetRouter, "::ffff:10.0.0.2", true},
		{usesSubnetRouter, "192.168.50.7", false},
		{usesSubnetRouter, "10.0.0.4", false},
		{usesExitNode, "1.1.1.1", false},
		{isSubnetRouter, "192.168.50.1", false},
		{wgQuick24, "10.0.0.200", true},
		{wgQuick24, "10.0.1.1", false},
		{hubOnly, "10.0.0.5", false},
		{Routes{Local: pfx("10.0.0.1/0")}, "10.0.0.1", true},
		{Routes{Local: pfx("10.0.0.1/0")}, "10.0.0.2", false},
	}
	for _, tt := range tests {
		if got := New(tt.routes).IsNode(addr(tt.a)); got != tt.want {
			t.Errorf("IsNode(%s) with %+v = %v, want %v", tt.a, tt.routes, got, tt.want)
		}
	}
	if New(usesSubnetRouter).IsNode(netip.Addr{}) {
		t.Error("IsNode(zero Addr) = true, want false")
	}
}

func TestNilAndZeroClassifier(t *testing.T) {
	a, b := addr("10.0.0.1"), addr("10.0.0.2")
	for _, c := range []*Classifier{nil, {}} {
		if got := c.Classify(a, b); got != Exit {
			t.Errorf("%#v.Classify = %v, want exit", c, got)
		}
		if c.IsNode(a) {
			t.Errorf("%#v.IsNode = true, want false", c)
		}
	}
	if got := New(usesSubnetRouter).Classify(netip.Addr{}, netip.Addr{}); got != Exit {
		t.Errorf("Classify(zero, zero) = %v, want exit", got)
	}
}

// TestNewKeepsNoAlias checks that New copies what it needs: changing the
// caller's slices afterwards changes nothing.
func TestNewKeepsNoAlias(t *testing.T) {
	r := Routes{Local: pfx("10.0.0.1/32"), Peers: [][]netip.Prefix{pfx("10.0.0.2/32", "192.168.50.0/24")}}
	c := New(r)
	r.Local[0] = netip.MustParsePrefix("10.9.9.9/32")
	r.Peers[0][1] = netip.MustParsePrefix("172.16.0.0/12")
	if got := c.Classify(addr("10.0.0.1"), addr("192.168.50.1")); got != Subnet {
		t.Errorf("after editing routes: Classify = %v, want subnet", got)
	}
}

func TestClassString(t *testing.T) {
	for c, want := range map[Class]string{Virtual: "virtual", Subnet: "subnet", Exit: "exit", 0: "class(0)", 9: "class(9)"} {
		if got := c.String(); got != want {
			t.Errorf("Class(%d).String() = %q, want %q", uint8(c), got, want)
		}
	}
}

func TestPrefixSpan(t *testing.T) {
	tests := []struct {
		p      string
		lo, hi key
	}{
		{"10.0.0.7/24", key{0, 0x0a000000}, key{0, 0x0a0000ff}},
		{"0.0.0.0/0", key{0, 0}, key{0, 0xffffffff}},
		{"1.2.3.4/32", key{0, 0x01020304}, key{0, 0x01020304}},
		{"::/0", key{0, 0}, key{^uint64(0), ^uint64(0)}},
		{"fd00::/64", key{0xfd00 << 48, 0}, key{0xfd00 << 48, ^uint64(0)}},
		{"fd00::/8", key{0xfd00 << 48, 0}, key{0xfdff_ffff_ffff_ffff, ^uint64(0)}},
		{"fd00::1/128", key{0xfd00 << 48, 1}, key{0xfd00 << 48, 1}},
		{"fd00::8000:0:0:0/65", key{0xfd00 << 48, 1 << 63}, key{0xfd00 << 48, ^uint64(0)}},
	}
	for _, tt := range tests {
		got := prefixSpan(netip.MustParsePrefix(tt.p))
		if want := (span{tt.lo, tt.hi}); got != want {
			t.Errorf("prefixSpan(%s) = %x, want %x", tt.p, got, want)
		}
	}
}

func TestSpanSize(t *testing.T) {
	tests := []struct {
		p    string
		want float64
	}{
		{"10.0.0.0/24", 256},
		{"0.0.0.0/0", 0x1p32},
		{"::/0", 0x1p128},
		{"fd00::/63", 0x1p65},
		{"fd00::1/128", 1},
	}
	for _, tt := range tests {
		if got := prefixSpan(netip.MustParsePrefix(tt.p)).size(); got != tt.want {
			t.Errorf("size(%s) = %g, want %g", tt.p, got, tt.want)
		}
	}
	borrow := span{key{1, 5}, key{2, 4}}
	if got, want := borrow.size(), 0x1p64; got != want {
		t.Errorf("size(%x) = %g, want %g", borrow, got, want)
	}
}

func TestMergeSpans(t *testing.T) {
	k := func(n uint64) key { return key{lo: n} }
	max := key{^uint64(0), ^uint64(0)}
	tests := []struct {
		name string
		in   []span
		want spanSet
	}{
		{"empty", nil, nil},
		{"disjoint unsorted", []span{{k(10), k(12)}, {k(1), k(3)}}, spanSet{{k(1), k(3)}, {k(10), k(12)}}},
		{"adjacent", []span{{k(1), k(3)}, {k(4), k(6)}}, spanSet{{k(1), k(6)}}},
		{"gap of one", []span{{k(1), k(3)}, {k(5), k(6)}}, spanSet{{k(1), k(3)}, {k(5), k(6)}}},
		{"nested", []span{{k(1), k(10)}, {k(2), k(3)}, {k(4), k(11)}}, spanSet{{k(1), k(11)}}},
		{"up to max", []span{{k(0), max}, {k(5), max}}, spanSet{{k(0), max}}},
		{"carry", []span{{key{0, ^uint64(0)}, key{0, ^uint64(0)}}, {key{1, 0}, key{1, 0}}}, spanSet{{key{0, ^uint64(0)}, key{1, 0}}}},
	}
	for _, tt := range tests {
		got := mergeSpans(tt.in)
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("%s: mergeSpans = %x, want %x", tt.name, got, tt.want)
		}
	}
}

// TestClassifyMatchesReference compares Classify with a direct reading of
// the rules (Prefix.Contains over every route) on random routes and
// addresses drawn from a small space, so that edges are hit often.
func TestClassifyMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	randAddr := func(v6 bool) netip.Addr {
		if v6 {
			var b [16]byte
			b[0], b[1] = 0xfd, 0
			b[14], b[15] = byte(rng.IntN(4)), byte(rng.IntN(256))
			return netip.AddrFrom16(b)
		}
		return netip.AddrFrom4([4]byte{10, 0, byte(rng.IntN(4)), byte(rng.IntN(256))})
	}
	randPrefix := func(v6 bool) netip.Prefix {
		a := randAddr(v6)
		bits := a.BitLen() - rng.IntN(11) // sizes 1 to 1024
		if rng.IntN(3) == 0 {
			bits = a.BitLen()
		}
		return netip.PrefixFrom(a, bits)
	}
	randPrefixes := func(n int) []netip.Prefix {
		ps := make([]netip.Prefix, n)
		for i := range ps {
			ps[i] = randPrefix(rng.IntN(2) == 0)
		}
		return ps
	}
	for round := range 200 {
		r := Routes{Local: randPrefixes(1 + rng.IntN(2)), Serve: randPrefixes(rng.IntN(3))}
		for range rng.IntN(5) {
			r.Peers = append(r.Peers, randPrefixes(1+rng.IntN(4)))
		}
		c := New(r)
		for range 500 {
			v6 := rng.IntN(2) == 0
			a, b := randAddr(v6), randAddr(v6)
			if got, want := c.Classify(a, b), referenceClassify(r, a, b); got != want {
				t.Fatalf("round %d: routes %v: Classify(%v, %v) = %v, want %v", round, r, a, b, got, want)
			}
		}
	}
}

// referenceClassify states the rules as plainly as possible (without the
// default-in-pieces rule, which the random routes above never trigger).
func referenceClassify(r Routes, a, b netip.Addr) Class {
	isNode := func(x netip.Addr) bool {
		for _, p := range r.Local {
			if p.Addr() == x || p.Bits() > 0 && p.Contains(x) {
				return true
			}
		}
		for _, ps := range r.Peers {
			for _, p := range ps {
				if p.IsSingleIP() && p.Addr() == x {
					return true
				}
			}
		}
		return false
	}
	inSubnet := func(x netip.Addr) bool {
		for _, ps := range r.Peers {
			for _, p := range ps {
				if !p.IsSingleIP() && p.Bits() > 0 && p.Contains(x) {
					return true
				}
			}
		}
		for _, p := range r.Serve {
			if p.Bits() > 0 && p.Contains(x) {
				return true
			}
		}
		return false
	}
	switch an, bn := isNode(a), isNode(b); {
	case an && bn:
		return Virtual
	case !an && inSubnet(a), !bn && inSubnet(b):
		return Subnet
	}
	return Exit
}

// benchRoutes is a typical table: this node, ten peers with an IPv4 and an
// IPv6 address each, two of them subnet routers, one an exit node.
func benchRoutes() Routes {
	r := Routes{Local: pfx("10.0.0.1/32", "fd00::1/128"), Serve: pfx("192.168.1.0/24")}
	for i := 2; i <= 11; i++ {
		ps := pfx(fmt.Sprintf("10.0.0.%d/32", i), fmt.Sprintf("fd00::%d/128", i))
		switch i {
		case 3:
			ps = append(ps, pfx("192.168.50.0/24", "172.16.0.0/16", "fd50::/64")...)
		case 4:
			ps = append(ps, pfx("10.20.0.0/16")...)
		case 5:
			ps = append(ps, pfx("0.0.0.0/0", "::/0")...)
		}
		r.Peers = append(r.Peers, ps)
	}
	return r
}

func BenchmarkClassify(b *testing.B) {
	c := New(benchRoutes())
	pairs := [][2]netip.Addr{
		{addr("10.0.0.1"), addr("10.0.0.7")},               // virtual
		{addr("fd00::1"), addr("fd00::9")},                 // virtual v6
		{addr("10.0.0.1"), addr("192.168.50.20")},          // subnet
		{addr("192.168.1.9"), addr("10.0.0.4")},            // subnet, served
		{addr("10.0.0.1"), addr("142.250.74.110")},         // exit
		{addr("fd00::1"), addr("2a00:1450:4001::200e")},    // exit v6
		{addr("::ffff:10.0.0.1"), addr("::ffff:10.0.0.2")}, // virtual, mapped
	}
	b.ReportAllocs()
	var n int
	for i := 0; b.Loop(); i++ {
		p := pairs[i%len(pairs)]
		n += int(c.Classify(p[0], p[1]))
	}
	if n == 0 {
		b.Fatal("no result")
	}
}

func TestClassifyAllocs(t *testing.T) {
	c := New(benchRoutes())
	a, d := addr("10.0.0.1"), addr("2a00:1450:4001::200e")
	if n := testing.AllocsPerRun(100, func() { c.Classify(a, d) }); n != 0 {
		t.Errorf("Classify allocates %v times per call, want 0", n)
	}
}

func Example() {
	c := New(Routes{
		Local: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/24")},
		Peers: [][]netip.Prefix{{
			netip.MustParsePrefix("10.0.0.2/32"),
			netip.MustParsePrefix("192.168.50.0/24"),
			netip.MustParsePrefix("0.0.0.0/0"),
		}},
	})
	self := netip.MustParseAddr("10.0.0.1")
	for _, dst := range strings.Fields("10.0.0.2 10.0.0.9 192.168.50.7 1.1.1.1") {
		fmt.Println(dst, c.Classify(self, netip.MustParseAddr(dst)))
	}
	// Output:
	// 10.0.0.2 virtual
	// 10.0.0.9 virtual
	// 192.168.50.7 subnet
	// 1.1.1.1 exit
}
