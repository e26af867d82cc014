package wrap

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/wgsidecar/sidecar/stats"
)

// ipv4 builds an IPv4 packet with a transport header of proto carrying
// the given ports, padded to size bytes.
func ipv4(proto uint8, src, dst string, sport, dport uint16, size int) []byte {
	p := make([]byte, size)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(size))
	p[8] = 64
	p[9] = proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	if size >= 24 {
		binary.BigEndian.PutUint16(p[20:], sport)
		binary.BigEndian.PutUint16(p[22:], dport)
	}
	return p
}

func ipv6(proto uint8, src, dst string, sport, dport uint16, size int) []byte {
	p := make([]byte, size)
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(size-40))
	p[6] = proto
	p[7] = 64
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(p[8:], s[:])
	copy(p[24:], d[:])
	if size >= 44 {
		binary.BigEndian.PutUint16(p[40:], sport)
		binary.BigEndian.PutUint16(p[42:], dport)
	}
	return p
}

func TestFlowKey(t *testing.T) {
	frag := ipv4(17, "10.0.0.1", "10.0.0.2", 5, 6, 60)
	binary.BigEndian.PutUint16(frag[6:], 100) // a later fragment: no ports in it
	cases := []struct {
		name string
		pkt  []byte
		rx   bool
		want string // stats.Key.String(), or "" for not counted
	}{
		{"tcp4 tx", ipv4(6, "10.0.0.1", "10.0.0.2", 40000, 80, 60), false, "6 10.0.0.1:40000 -> 10.0.0.2:80"},
		{"tcp4 rx swaps", ipv4(6, "10.0.0.2", "10.0.0.1", 80, 40000, 60), true, "6 10.0.0.1:40000 -> 10.0.0.2:80"},
		{"udp6 tx", ipv6(17, "fd00::1", "fd00::2", 5353, 53, 80), false, "17 [fd00::1]:5353 -> [fd00::2]:53"},
		{"udp6 rx", ipv6(17, "fd00::2", "fd00::1", 53, 5353, 80), true, "17 [fd00::1]:5353 -> [fd00::2]:53"},
		{"icmp4 no ports", ipv4(1, "10.0.0.1", "10.0.0.2", 0x0800, 0x1234, 84), false, "1 10.0.0.1:0 -> 10.0.0.2:0"},
		{"icmp6 no ports", ipv6(58, "fd00::1", "fd00::2", 0x8000, 1, 64), false, "58 [fd00::1]:0 -> [fd00::2]:0"},
		{"later fragment", frag, false, "17 10.0.0.1:0 -> 10.0.0.2:0"},
		{"truncated transport", ipv4(6, "10.0.0.1", "10.0.0.2", 1, 2, 22), false, "6 10.0.0.1:0 -> 10.0.0.2:0"},
		{"short ipv4", ipv4(6, "10.0.0.1", "10.0.0.2", 1, 2, 60)[:19], false, ""},
		{"short ipv6", ipv6(6, "fd00::1", "fd00::2", 1, 2, 60)[:39], false, ""},
		{"version 5", []byte{0x50, 1, 2, 3}, false, ""},
		{"empty", nil, false, ""},
	}
	for _, tc := range cases {
		var k stats.Key
		ok := flowKey(tc.pkt, tc.rx, &k)
		got := ""
		if ok {
			got = k.String()
		}
		if got != tc.want {
			t.Errorf("%s: key %q; want %q", tc.name, got, tc.want)
		}
	}
}

// FuzzFlowKey: any bytes, no panic; a counted packet has a valid source
// address of the packet's IP version.
func FuzzFlowKey(f *testing.F) {
	f.Add(ipv4(6, "10.0.0.1", "10.0.0.2", 1, 2, 60), false)
	f.Add(ipv6(17, "fd00::1", "fd00::2", 1, 2, 48), true)
	f.Add([]byte{0x4f}, false)
	f.Add([]byte{0x46, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2}, false)
	f.Fuzz(func(t *testing.T, pkt []byte, rx bool) {
		var k stats.Key
		if !flowKey(pkt, rx, &k) {
			return
		}
		src := k.Src().Addr()
		if !src.IsValid() || (pkt[0]>>4 == 4) != src.Is4() {
			t.Errorf("packet version %d gave source %v", pkt[0]>>4, src)
		}
	})
}

// fakeTUN hands out the same batch of packets on every Read.
type fakeTUN struct {
	tun.Device
	pkts [][]byte
}

func (f *fakeTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	for i, p := range f.pkts {
		sizes[i] = copy(bufs[i][offset:], p)
	}
	return len(f.pkts), nil
}

func (f *fakeTUN) Write(bufs [][]byte, offset int) (int, error) { return len(bufs), nil }

type fakeBind struct{ conn.Bind }

func (fakeBind) Send(bufs [][]byte, ep conn.Endpoint) error { return nil }

func TestWrappersCount(t *testing.T) {
	s := stats.New(stats.Options{})
	dev := NewTUN(&fakeTUN{pkts: [][]byte{
		ipv4(6, "10.0.0.1", "10.0.0.2", 40000, 80, 100),
		ipv4(6, "10.0.0.1", "10.0.0.2", 40000, 80, 1400),
	}})
	bind := NewBind(fakeBind{})
	bufs := [][]byte{make([]byte, 1500), make([]byte, 1500)}
	sizes := make([]int, 2)

	// Off: nothing counted.
	dev.Read(bufs, sizes, 0)
	dev.SetStatistics(s)
	bind.SetStatistics(s)
	if n, err := dev.Read(bufs, sizes, 0); n != 2 || err != nil {
		t.Fatal(n, err)
	}
	dev.Write([][]byte{ipv4(6, "10.0.0.2", "10.0.0.1", 80, 40000, 52)}, 0)
	ep := &conn.StdNetEndpoint{AddrPort: netip.MustParseAddrPort("192.0.2.7:51820")}
	bind.Send([][]byte{make([]byte, 148), make([]byte, 1452), make([]byte, 32)}, ep)

	w := s.Cut()
	if len(w) != 1 || len(w[0].Virtual) != 1 || len(w[0].Physical) != 1 {
		t.Fatalf("windows %+v", w)
	}
	v, p := w[0].Virtual[0], w[0].Physical[0]
	if v.Key.String() != "6 10.0.0.1:40000 -> 10.0.0.2:80" || v.TxPackets != 2 || v.TxBytes != 1500 || v.RxPackets != 1 || v.RxBytes != 52 {
		t.Errorf("virtual %v %+v", v.Key, v)
	}
	if p.Key.Dst() != ep.AddrPort || p.Key.Proto() != 0 || p.TxPackets != 3 || p.TxBytes != 148+1452+32 {
		t.Errorf("physical %v %+v", p.Key, p)
	}
	sent, _ := bind.Messages()
	// A 148-byte message starting with 0 is not an initiation; mark them.
	if sent.Initiations != 0 || sent.Keepalives != 0 {
		t.Errorf("untyped messages counted as %+v", sent)
	}
	init := make([]byte, 148)
	init[0] = msgInitiation
	ka := make([]byte, 32)
	ka[0] = msgTransport
	bind.Send([][]byte{init, ka, ka}, ep)
	if sent, _ := bind.Messages(); sent.Initiations != 1 || sent.Keepalives != 2 {
		t.Errorf("messages sent %+v; want 1 initiation, 2 keepalives", sent)
	}
}

// Benchmarks: counting through the wrappers, per packet, in batches of
// 128 as wireguard-go hands them over.

// BenchmarkTUNRead reads batches of 128 packets of 4 known flows from a
// device that copies 1400 bytes per packet; "off" is the same without
// statistics, so the difference is the counting.
func BenchmarkTUNRead(b *testing.B) {
	for _, on := range []bool{true, false} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			pkts := make([][]byte, 128)
			for i := range pkts {
				pkts[i] = ipv4(6, "10.0.0.1", "10.0.0.2", uint16(40000+i%4), 80, 1400)
			}
			dev := NewTUN(&fakeTUN{pkts: pkts})
			if on {
				dev.SetStatistics(stats.New(stats.Options{}))
			}
			bufs := make([][]byte, 128)
			for i := range bufs {
				bufs[i] = make([]byte, 1500)
			}
			sizes := make([]int, 128)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += 128 {
				dev.Read(bufs, sizes, 0)
			}
		})
	}
}

// BenchmarkBindSendCounted counts batches of 128 datagrams to one
// endpoint (the inner Send does nothing): the physical layer's cost.
func BenchmarkBindSendCounted(b *testing.B) {
	bind := NewBind(fakeBind{})
	bind.SetStatistics(stats.New(stats.Options{}))
	ep := &conn.StdNetEndpoint{AddrPort: netip.MustParseAddrPort("192.0.2.7:51820")}
	bufs := make([][]byte, 128)
	for i := range bufs {
		bufs[i] = make([]byte, 1452)
		bufs[i][0] = msgTransport
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += 128 {
		bind.Send(bufs, ep)
	}
}

// fakeRecvBind hands one batch of datagrams from the given endpoints to
// its receive function.
type fakeRecvBind struct {
	conn.Bind
	eps []conn.Endpoint
}

func (f fakeRecvBind) Open(uint16) ([]conn.ReceiveFunc, uint16, error) {
	return []conn.ReceiveFunc{func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		for i, ep := range f.eps {
			packets[i][0] = msgTransport
			sizes[i] = 100 + i
			eps[i] = ep
		}
		return len(f.eps), nil
	}}, 51820, nil
}

// TestBindCountsReceivedPerEndpoint: a received batch from several
// endpoints, interleaved, is counted per endpoint.
func TestBindCountsReceivedPerEndpoint(t *testing.T) {
	a := &conn.StdNetEndpoint{AddrPort: netip.MustParseAddrPort("192.0.2.1:51820")}
	b := &conn.StdNetEndpoint{AddrPort: netip.MustParseAddrPort("[2001:db8::2]:51820")}
	bind := NewBind(fakeRecvBind{eps: []conn.Endpoint{a, a, b, a, b}})
	s := stats.New(stats.Options{})
	bind.SetStatistics(s)
	fns, _, err := bind.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	packets := make([][]byte, 5)
	for i := range packets {
		packets[i] = make([]byte, 200)
	}
	if n, err := fns[0](packets, make([]int, 5), make([]conn.Endpoint, 5)); n != 5 || err != nil {
		t.Fatal(n, err)
	}
	got := map[netip.AddrPort][2]uint64{}
	for _, w := range s.Cut() {
		for _, f := range w.Physical {
			got[f.Key.Dst()] = [2]uint64{f.RxPackets, f.RxBytes}
		}
	}
	want := map[netip.AddrPort][2]uint64{
		a.AddrPort: {3, 100 + 101 + 103},
		b.AddrPort: {2, 102 + 104},
	}
	if len(got) != 2 || got[a.AddrPort] != want[a.AddrPort] || got[b.AddrPort] != want[b.AddrPort] {
		t.Errorf("received counts %v; want %v", got, want)
	}
}

// TestOutboundCounts: packets pushed through Outbound are counted as sent
// like those Read returns, at their offset, and reach the send function
// unchanged.
func TestOutboundCounts(t *testing.T) {
	s := stats.New(stats.Options{})
	dev := NewTUN(&fakeTUN{})
	const offset = 16
	pkt := func(size int) []byte {
		return append(make([]byte, offset), ipv4(17, "10.0.0.1", "10.0.0.9", 5000, 53, size)...)
	}
	var got [][]byte
	send := dev.Outbound(func(bufs [][]byte, off int) error {
		if off != offset {
			t.Errorf("offset %d", off)
		}
		got = append(got, bufs...)
		return nil
	})
	send([][]byte{pkt(100)}, offset) // not counting yet
	dev.SetStatistics(s)
	if err := send([][]byte{pkt(100), pkt(300)}, offset); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || len(got[2]) != offset+300 {
		t.Fatalf("send saw %d packets", len(got))
	}
	w := s.Cut()
	if len(w) != 1 || len(w[0].Virtual) != 1 {
		t.Fatalf("windows %+v", w)
	}
	if v := w[0].Virtual[0]; v.Key.String() != "17 10.0.0.1:5000 -> 10.0.0.9:53" || v.TxPackets != 2 || v.TxBytes != 400 || v.RxPackets != 0 {
		t.Errorf("virtual %v %+v", v.Key, v)
	}
}
