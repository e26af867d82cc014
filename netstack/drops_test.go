package netstack

import (
	"net/netip"
	"sync"
	"testing"
)

// v4Packet builds an IPv4 packet from src to dst carrying proto and l4.
func v4Packet(dst string, proto byte, l4 []byte) []byte {
	p := make([]byte, 20, 20+len(l4))
	p[0], p[8], p[9] = 0x45, 64, proto
	total := 20 + len(l4)
	p[2], p[3] = byte(total>>8), byte(total)
	copy(p[12:16], netip.MustParseAddr("10.0.0.1").AsSlice())
	copy(p[16:20], netip.MustParseAddr(dst).AsSlice())
	return append(p, l4...)
}

// v6Packet builds an IPv6 packet to dst whose first next header is next.
func v6Packet(dst string, next byte, rest []byte) []byte {
	p := make([]byte, 40, 40+len(rest))
	p[0], p[6], p[7] = 0x60, next, 64
	p[4], p[5] = byte(len(rest)>>8), byte(len(rest))
	copy(p[8:24], netip.MustParseAddr("fd00::1").AsSlice())
	copy(p[24:40], netip.MustParseAddr(dst).AsSlice())
	return append(p, rest...)
}

func tcpHeader() []byte {
	h := make([]byte, 20)
	h[12] = 5 << 4 // data offset: 5 words
	return h
}

func TestInboundRefusal(t *testing.T) {
	ns, err := New(Options{Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("fd00::2")}})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	hopByHop := append([]byte{6, 0, 0, 0, 0, 0, 0, 0}, tcpHeader()...) // next: TCP, 8 bytes
	badOffset := tcpHeader()
	badOffset[12] = 2 << 4
	frag := v4Packet("10.0.0.2", 6, []byte{1, 2, 3})
	frag[6] = 0x20 // more fragments
	for _, c := range []struct {
		name string
		pkt  []byte
		want Drop
	}{
		{"tcp to own v4", v4Packet("10.0.0.2", 6, tcpHeader()), 0},
		{"udp to own v4", v4Packet("10.0.0.2", 17, make([]byte, 8)), 0},
		{"icmp to own v4", v4Packet("10.0.0.2", 1, make([]byte, 8)), 0},
		{"tcp to own v6 past a hop-by-hop header", v6Packet("fd00::2", 0, hopByHop), 0},
		{"icmpv6 to own v6", v6Packet("fd00::2", 58, make([]byte, 8)), 0},
		{"a v4 fragment", frag, 0},
		{"v4 multicast", v4Packet("224.0.0.1", 17, make([]byte, 8)), 0},
		{"tcp to another address", v4Packet("10.0.0.77", 6, tcpHeader()), DropNotLocal},
		{"udp to another v6 address", v6Packet("fd00::77", 17, make([]byte, 8)), DropNotLocal},
		{"gre", v4Packet("10.0.0.2", 47, make([]byte, 8)), DropUnsupported},
		{"icmpv4 inside ipv6", v6Packet("fd00::2", 1, make([]byte, 8)), DropUnsupported},
		{"icmpv6 inside ipv4", v4Packet("10.0.0.2", 58, make([]byte, 8)), DropUnsupported},
		{"empty", nil, DropMalformed},
		{"ip version 5", []byte{0x50, 0, 0, 0}, DropMalformed},
		{"short ipv4 header", v4Packet("10.0.0.2", 6, nil)[:12], DropMalformed},
		{"ipv4 header length past the packet", append([]byte{0x4f}, v4Packet("10.0.0.2", 6, nil)[1:]...), DropMalformed},
		{"short ipv6 header", v6Packet("fd00::2", 6, nil)[:30], DropMalformed},
		{"truncated tcp", v4Packet("10.0.0.2", 6, make([]byte, 12)), DropMalformed},
		{"tcp data offset under 20", v4Packet("10.0.0.2", 6, badOffset), DropMalformed},
		{"truncated udp", v4Packet("10.0.0.2", 17, make([]byte, 4)), DropMalformed},
		{"truncated extension header", v6Packet("fd00::2", 0, []byte{6, 3, 0, 0, 0, 0, 0, 0}), DropMalformed},
	} {
		if got := ns.inboundRefusal(c.pkt); got != c.want {
			t.Errorf("%s: refusal %d, want %d", c.name, got, c.want)
		}
	}
}

type recordDrops struct {
	mu     sync.Mutex
	active bool
	got    []Drop
	pkts   [][]byte // the packets, as Dropped got them
}

func (r *recordDrops) Active() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.active }
func (r *recordDrops) Dropped(d Drop, pkt []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, d)
	r.pkts = append(r.pkts, pkt)
}

// TestScreenInboundOnlyWhileObserved writes refused packets into the
// stack's device: the observer hears of each, with its reason, only while
// active, and Drops counts what was screened.
func TestScreenInboundOnlyWhileObserved(t *testing.T) {
	ns, err := New(Options{Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.2")}})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	obs := &recordDrops{}
	ns.SetDropObserver(obs)
	batch := [][]byte{v4Packet("10.0.0.9", 17, make([]byte, 8)), v4Packet("10.0.0.2", 47, make([]byte, 8))}
	ns.Device().Write(batch, 0)
	if len(obs.got) != 0 || ns.Drops(DropNotLocal) != 0 {
		t.Fatalf("screened while inactive: %v", obs.got)
	}
	obs.active = true
	ns.Device().Write(batch, 0)
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.got) != 2 || obs.got[0] != DropNotLocal || obs.got[1] != DropUnsupported {
		t.Errorf("observer heard %v, want [not-local unsupported]", obs.got)
	}
	if ns.Drops(DropNotLocal) != 1 || ns.Drops(DropUnsupported) != 1 {
		t.Errorf("Drops: not-local %d, unsupported %d; want 1 each", ns.Drops(DropNotLocal), ns.Drops(DropUnsupported))
	}
}

func TestParseListen(t *testing.T) {
	for _, c := range []struct {
		network, address, want string
		ok                     bool
		wantAP                 string
	}{
		{"tcp", ":80", "tcp", true, "invalid AddrPort"},
		{"tcp4", ":80", "tcp", true, "0.0.0.0:80"},
		{"tcp6", "[fd00::2]:443", "tcp", true, "[fd00::2]:443"},
		{"udp", "10.0.0.2:53", "udp", true, "10.0.0.2:53"},
		{"udp", "10.0.0.2:53", "tcp", false, ""},
		{"tcp", "host.example:80", "tcp", false, ""},
		{"tcp", "10.0.0.2:99999", "tcp", false, ""},
		{"tcp", "10.0.0.2", "tcp", false, ""},
		{"sctp", ":1", "tcp", false, ""},
	} {
		ap, err := parseListen(c.network, c.address, c.want)
		if c.ok != (err == nil) {
			t.Errorf("parseListen(%q, %q): err %v, want ok=%v", c.network, c.address, err, c.ok)
			continue
		}
		if c.ok && ap.String() != c.wantAP { // no address: "invalid AddrPort"
			t.Errorf("parseListen(%q, %q) = %v, want %s", c.network, c.address, ap, c.wantAP)
		}
	}
}
