package netstack

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// captureDispatcher keeps a copy of every packet delivered to it.
type captureDispatcher struct{ pkts [][]byte }

func (c *captureDispatcher) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	v := pkt.ToView()
	c.pkts = append(c.pkts, bytes.Clone(v.AsSlice()))
	v.Release()
}
func (c *captureDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// segSpec describes one test TCP packet; zero fields take the defaults of
// a bulk transfer's data segment.
type segSpec struct {
	v6      bool
	seq     uint32
	ack     uint32
	flags   header.TCPFlags
	window  uint16
	srcPort uint16
	tsval   uint32 // timestamp option value
	ttl     uint8
	payload int
}

// tcpPacket builds an IPv4 or IPv6 TCP packet with a timestamp option and
// a payload whose bytes follow from its sequence number.
func tcpPacket(s segSpec) []byte {
	if s.flags == 0 {
		s.flags = header.TCPFlagAck
	}
	if s.window == 0 {
		s.window = 4096
	}
	if s.srcPort == 0 {
		s.srcPort = 40000
	}
	if s.ttl == 0 {
		s.ttl = 64
	}
	const optLen = 12 // NOP, NOP, timestamps
	tcpLen := header.TCPMinimumSize + optLen
	ipLen := header.IPv4MinimumSize
	if s.v6 {
		ipLen = header.IPv6MinimumSize
	}
	pkt := make([]byte, ipLen+tcpLen+s.payload)
	for i := range s.payload {
		pkt[ipLen+tcpLen+i] = byte(s.seq + uint32(i))
	}
	if s.v6 {
		header.IPv6(pkt).Encode(&header.IPv6Fields{
			PayloadLength:     uint16(tcpLen + s.payload),
			TransportProtocol: header.TCPProtocolNumber,
			HopLimit:          s.ttl,
			SrcAddr:           tcpip.AddrFrom16([16]byte{0xfd, 15: 1}),
			DstAddr:           tcpip.AddrFrom16([16]byte{0xfd, 15: 2}),
		})
	} else {
		h := header.IPv4(pkt)
		h.Encode(&header.IPv4Fields{
			TotalLength: uint16(len(pkt)),
			TTL:         s.ttl,
			Protocol:    uint8(header.TCPProtocolNumber),
			SrcAddr:     tcpip.AddrFrom4([4]byte{10, 0, 0, 1}),
			DstAddr:     tcpip.AddrFrom4([4]byte{10, 0, 0, 2}),
			Flags:       header.IPv4FlagDontFragment,
		})
		h.SetChecksum(^h.CalculateChecksum())
	}
	t := header.TCP(pkt[ipLen:])
	t.Encode(&header.TCPFields{
		SrcPort: s.srcPort, DstPort: 5300, SeqNum: s.seq, AckNum: s.ack,
		DataOffset: uint8(tcpLen), Flags: s.flags, WindowSize: s.window,
	})
	opt := t[header.TCPMinimumSize:]
	opt[0], opt[1], opt[2], opt[3] = 1, 1, 8, 10
	binary.BigEndian.PutUint32(opt[4:], s.tsval)
	return pkt
}

// run builds n MSS-sized segments from seq 1000 on, the last with PSH.
func run(n, mss int, v6 bool) [][]byte {
	var pkts [][]byte
	for i := range n {
		s := segSpec{v6: v6, seq: 1000 + uint32(i*mss), payload: mss}
		if i == n-1 {
			s.flags = header.TCPFlagAck | header.TCPFlagPsh
		}
		pkts = append(pkts, tcpPacket(s))
	}
	return pkts
}

// payloads concatenates what each packet carries beyond its headers (the
// whole packet if it is no TCP).
func payloads(pkts [][]byte) []byte {
	var out []byte
	for _, p := range pkts {
		if s, ok := parseTCPSegment(p); ok {
			out = append(out, p[s.hdrLen:]...)
		} else {
			out = append(out, p...)
		}
	}
	return out
}

func deliver(t *testing.T, pkts [][]byte) [][]byte {
	t.Helper()
	var d captureDispatcher
	const offset = 16 // as wireguard-go writes: packets after a header
	bufs := make([][]byte, len(pkts))
	for i, p := range pkts {
		bufs[i] = append(make([]byte, offset), p...)
	}
	if n := deliverBatch(&d, bufs, offset); n != len(bufs) {
		t.Fatalf("deliverBatch stopped at %d of %d", n, len(bufs))
	}
	return d.pkts
}

func TestCoalesceRun(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		in := run(46, 1368, v6)
		out := deliver(t, in)
		if len(out) != 1 {
			t.Fatalf("v6=%v: %d packets delivered; want one merged", v6, len(out))
		}
		m := out[0]
		s, ok := parseTCPSegment(m)
		if !ok {
			t.Fatalf("v6=%v: merged packet does not parse", v6)
		}
		if !bytes.Equal(m[s.hdrLen:], payloads(in)) {
			t.Fatalf("v6=%v: merged payload differs", v6)
		}
		if s.tcp().SequenceNumber() != 1000 || s.tcp().Flags() != header.TCPFlagAck|header.TCPFlagPsh {
			t.Fatalf("v6=%v: seq %d flags %v; want the first's seq and the last's PSH", v6, s.tcp().SequenceNumber(), s.tcp().Flags())
		}
		if !v6 && !header.IPv4(m).IsChecksumValid() {
			t.Fatal("merged IPv4 header checksum invalid")
		}
	}
}

// TestCoalesceBoundaries: a run ends wherever merging would change what the
// stack sees, and the bytes delivered are always those sent.
func TestCoalesceBoundaries(t *testing.T) {
	base := func(i int) segSpec { return segSpec{seq: 1000 + uint32(i*100), payload: 100} }
	pkt := func(i int, f func(*segSpec)) []byte {
		s := base(i)
		if f != nil {
			f(&s)
		}
		return tcpPacket(s)
	}
	udp := append([]byte(nil), pkt(0, nil)...)
	header.IPv4(udp).SetChecksum(0)
	udp[9] = uint8(header.UDPProtocolNumber)
	ipOpts := func() []byte { // IHL 6: one word of IPv4 options
		p := pkt(1, nil)
		q := append(append(append([]byte(nil), p[:20]...), 1, 1, 1, 1), p[20:]...)
		h := header.IPv4(q)
		h.SetHeaderLength(24)
		h.SetTotalLength(uint16(len(q)))
		return q
	}()
	frag := pkt(1, nil)
	header.IPv4(frag).SetFlagsFragmentOffset(header.IPv4FlagMoreFragments, 0)

	for _, tc := range []struct {
		name string
		pkts [][]byte
		want []int // run lengths delivered
	}{
		{"contiguous", [][]byte{pkt(0, nil), pkt(1, nil), pkt(2, nil)}, []int{3}},
		{"gap in sequence", [][]byte{pkt(0, nil), pkt(2, nil), pkt(3, nil)}, []int{1, 2}},
		{"PSH ends a run", [][]byte{pkt(0, func(s *segSpec) { s.flags |= header.TCPFlagPsh }), pkt(1, nil)}, []int{1, 1}},
		{"FIN not merged", [][]byte{pkt(0, nil), pkt(1, func(s *segSpec) { s.flags |= header.TCPFlagFin })}, []int{1, 1}},
		{"SYN not merged", [][]byte{pkt(0, func(s *segSpec) { s.flags = header.TCPFlagSyn }), pkt(1, nil)}, []int{1, 1}},
		{"other ack", [][]byte{pkt(0, nil), pkt(1, func(s *segSpec) { s.ack = 9 })}, []int{1, 1}},
		{"other window", [][]byte{pkt(0, nil), pkt(1, func(s *segSpec) { s.window = 8 })}, []int{1, 1}},
		{"other timestamp", [][]byte{pkt(0, nil), pkt(1, func(s *segSpec) { s.tsval = 7 })}, []int{1, 1}},
		{"other flow", [][]byte{pkt(0, nil), pkt(1, func(s *segSpec) { s.srcPort = 1 })}, []int{1, 1}},
		{"other TTL", [][]byte{pkt(0, nil), pkt(1, func(s *segSpec) { s.ttl = 3 })}, []int{1, 1}},
		{"other family", [][]byte{pkt(0, nil), pkt(1, func(s *segSpec) { s.v6 = true })}, []int{1, 1}},
		{"shorter then longer", [][]byte{pkt(0, nil), pkt(1, func(s *segSpec) { s.payload = 50 }), pkt(2, nil)}, []int{2, 1}},
		{"longer second", [][]byte{pkt(0, nil), pkt(1, func(s *segSpec) { s.payload = 150 })}, []int{1, 1}},
		{"pure ACK between", [][]byte{pkt(0, nil), pkt(1, func(s *segSpec) { s.payload = 0 }), pkt(1, nil)}, []int{1, 1, 1}},
		{"UDP", [][]byte{pkt(0, nil), udp, pkt(1, nil)}, []int{1, 1, 1}},
		{"IPv4 options", [][]byte{pkt(0, nil), ipOpts}, []int{1, 1}},
		{"fragment", [][]byte{pkt(0, nil), frag}, []int{1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := deliver(t, tc.pkts)
			if got := runLengths(tc.pkts, out); !slices.Equal(got, tc.want) {
				t.Errorf("runs %v; want %v", got, tc.want)
			}
			if !bytes.Equal(payloads(out), payloads(tc.pkts)) {
				t.Error("bytes delivered differ from those sent")
			}
		})
	}
}

// runLengths says how many of the packets in each delivered packet
// covers, in order: the inputs whose payloads (payloads) make up its own.
func runLengths(in, out [][]byte) []int {
	var runs []int
	i := 0
	for _, p := range out {
		want, n := len(payloads([][]byte{p})), 0
		for covered := 0; covered < want && i < len(in); i, n = i+1, n+1 {
			covered += len(payloads(in[i : i+1]))
		}
		runs = append(runs, n)
	}
	return runs
}

// TestCoalesceLimit: a run never grows past the 16-bit IP length.
func TestCoalesceLimit(t *testing.T) {
	in := run(100, 1400, false)
	out := deliver(t, in)
	if len(out) < 3 {
		t.Fatalf("%d packets delivered for 140,000 bytes", len(out))
	}
	for _, p := range out {
		if len(p) > maxCoalesced || int(header.IPv4(p).TotalLength()) != len(p) {
			t.Fatalf("delivered packet of %d bytes, IP length %d", len(p), header.IPv4(p).TotalLength())
		}
	}
	if !bytes.Equal(payloads(out), payloads(in)) {
		t.Fatal("bytes delivered differ from those sent")
	}
}

// FuzzCoalesce feeds arbitrary batches (the input split at 0xff 0xfe into
// packets) through the link's inbound path: nothing may panic, every byte
// is delivered in order, and every merged packet is a well-formed segment.
func FuzzCoalesce(f *testing.F) {
	join := func(pkts [][]byte) []byte { return bytes.Join(pkts, []byte{0xff, 0xfe}) }
	f.Add(join(run(3, 100, false)))
	f.Add(join(run(3, 100, true)))
	f.Add(join([][]byte{tcpPacket(segSpec{seq: 1, payload: 10}), tcpPacket(segSpec{seq: 11, payload: 10, v6: true})}))
	f.Add([]byte{0x45, 0, 0, 20})
	f.Fuzz(func(t *testing.T, data []byte) {
		var pkts [][]byte
		for _, p := range bytes.Split(data, []byte{0xff, 0xfe}) {
			if len(p) > 0 && (p[0]>>4 == 4 || p[0]>>4 == 6) {
				pkts = append(pkts, p)
			}
		}
		if len(pkts) > batchSize {
			pkts = pkts[:batchSize]
		}
		out := deliver(t, pkts)
		if !bytes.Equal(payloads(out), payloads(pkts)) {
			t.Fatal("bytes delivered differ from those sent")
		}
		for _, p := range out {
			if inputHas(pkts, p) {
				continue
			}
			// Not an input: a merged segment, which must be well formed.
			if _, ok := parseTCPSegment(p); !ok {
				t.Fatalf("merged packet does not parse: % x", p)
			}
			if p[0]>>4 == 4 && !header.IPv4(p).IsChecksumValid() {
				t.Fatal("merged packet with a bad IPv4 checksum")
			}
		}
	})
}

func inputHas(pkts [][]byte, p []byte) bool {
	for _, q := range pkts {
		if bytes.Equal(p, q) {
			return true
		}
	}
	return false
}

// viewDispatcher records the size of the first view of each packet
// delivered to it.
type viewDispatcher struct{ first []int }

func (d *viewDispatcher) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	views, _ := pkt.AsViewList()
	d.first = append(d.first, views.Front().Size())
}
func (d *viewDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// TestDeliveredHeadersOwnChunk checks that a TCP segment reaches the
// stack with its headers in a small view (and chunk) of their own, so that
// gVisor's copy-on-write of a shared header chunk copies the headers, not
// the payload (see withHeaders).
func TestDeliveredHeadersOwnChunk(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		merged := run(4, 1368, v6)
		single := run(1, 1368, v6)
		hdrLen := len(single[0]) - 1368
		const offset = 16
		var bufs [][]byte
		for _, p := range append(merged, tcpPacket(segSpec{v6: v6, seq: 90000, payload: 700, srcPort: 40001})) {
			bufs = append(bufs, append(make([]byte, offset), p...))
		}
		var d viewDispatcher
		if n := deliverBatch(&d, bufs, offset); n != len(bufs) {
			t.Fatalf("v6=%v: deliverBatch = %d", v6, n)
		}
		// The first view holds the headers and at most what fills its
		// small chunk (gVisor's Append tops it up).
		for _, n := range d.first {
			if n < hdrLen || n > 2*hdrLen {
				t.Fatalf("v6=%v: first views %v; want each to hold the %d header bytes in a small chunk, not the payload's", v6, d.first, hdrLen)
			}
		}
		if len(d.first) != 2 {
			t.Fatalf("v6=%v: %d packets delivered; want 2 (a merged run and a single segment)", v6, len(d.first))
		}
	}
}
