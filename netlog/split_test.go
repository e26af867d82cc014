package netlog

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/wgsidecar/sidecar/classify"
)

// manyFlows returns n distinct flows of every kind, IPv4 and IPv6, with
// counts of varying length.
func manyFlows(n int) (virtual, physical []Flow) {
	for i := range n {
		v4 := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		v6 := netip.AddrFrom16([16]byte{0xfd, 0, 12: byte(i >> 24), 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)})
		f := Flow{Proto: protoUDP, TxPackets: uint64(i), TxBytes: uint64(i) * 1337, RxPackets: 1, RxBytes: uint64(i) << 20}
		switch i % 5 {
		case 0:
			f.Class, f.Src, f.Dst = classify.Virtual, netip.AddrPortFrom(v4, 1), netip.AddrPortFrom(v4.Next(), uint16(i))
		case 1:
			f.Class, f.Src, f.Dst = classify.Subnet, netip.AddrPortFrom(v6, uint16(i)), netip.AddrPortFrom(v6.Next(), 22)
		case 2:
			f.Class, f.Src, f.Dst = classify.Exit, netip.AddrPortFrom(v4, uint16(i)), netip.AddrPortFrom(v6, 443)
		default:
			f.Src, f.Dst = netip.AddrPortFrom(v4, 0), netip.AddrPortFrom(v6, 51820)
			physical = append(physical, f)
			continue
		}
		virtual = append(virtual, f)
	}
	return virtual, physical
}

// entryOf is the entry of a flow logged in detail.
func entryOf(f Flow) ConnectionCounts {
	return ConnectionCounts{f.Proto, f.Src.String(), f.Dst.String(), f.TxPackets, f.TxBytes, f.RxPackets, f.RxBytes}
}

// kindedEntry is an entry and the field it is in.
type kindedEntry struct {
	kind int
	e    ConnectionCounts
}

// checkSplit checks msgs, the messages of one window: each within limit
// (unless it holds a single entry), the same header, the entries of want
// exactly once and in order, and each message as full as the limit allows.
func checkSplit(t *testing.T, msgs []Message, header Message, want []kindedEntry, limit int) {
	t.Helper()
	var got []kindedEntry
	sizes := make([]int, len(msgs))
	for i := range msgs {
		m := &msgs[i]
		if m.NodeID != header.NodeID || !m.Start.Equal(header.Start) || !m.End.Equal(header.End) || m.Logged != nil {
			t.Errorf("message %d: header %q %v %v %v, want %q %v %v nil", i,
				m.NodeID, m.Start, m.End, m.Logged, header.NodeID, header.Start, header.End)
		}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		sizes[i] = len(b)
		n := 0
		for k, es := range kinds(m) {
			if es != nil && len(es) == 0 {
				t.Errorf("message %d: empty non-nil %s field", i, kindNames[k])
			}
			for _, e := range es {
				got = append(got, kindedEntry{k, e})
			}
			n += len(es)
		}
		if n == 0 {
			t.Errorf("message %d has no entries", i)
		}
		if sizes[i] > limit && n > 1 {
			t.Errorf("message %d: %d bytes, over the limit %d", i, sizes[i], limit)
		}
	}
	if d := diff(renderKinded(got), renderKinded(want)); d != "" {
		t.Fatalf("entries differ (-got +want):\n%s", d)
	}
	// Greedy and tight: the first entry of the next message would not have
	// fitted into this one.
	for i := 0; i+1 < len(msgs); i++ {
		next := firstEntry(&msgs[i+1])
		grown := msgs[i]
		es := kinds(&grown)
		setKind(&grown, next.kind, append(es[next.kind][:len(es[next.kind]):len(es[next.kind])], next.e))
		b, err := json.Marshal(&grown)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) <= limit {
			t.Errorf("message %d (%d bytes) had room for the next entry (%d bytes with it, limit %d)", i, sizes[i], len(b), limit)
		}
	}
}

func firstEntry(m *Message) kindedEntry {
	for k, es := range kinds(m) {
		if len(es) > 0 {
			return kindedEntry{k, es[0]}
		}
	}
	panic("no entry")
}

func renderKinded(es []kindedEntry) string {
	var s []byte
	for _, e := range es {
		s = fmt.Appendf(s, "%s %s\n", kindNames[e.kind], renderEntry(e.e))
	}
	return string(s)
}

// wantEntries lists the entries of flows logged in detail, in the order
// Build sorts them.
func wantEntries(virtual, physical []Flow) []kindedEntry {
	var lists [numKinds][]Flow
	for _, f := range virtual {
		lists[kindOf(f.Class)] = append(lists[kindOf(f.Class)], f)
	}
	lists[kindPhysical] = physical
	var out []kindedEntry
	for k, l := range lists {
		l = append([]Flow(nil), l...)
		// An insertion sort on an independent ordering: addresses by
		// family then value, then ports, then protocol.
		less := func(a, b Flow) bool {
			if c := a.Src.Compare(b.Src); c != 0 {
				return c < 0
			}
			if c := a.Dst.Compare(b.Dst); c != 0 {
				return c < 0
			}
			return a.Proto < b.Proto
		}
		sortBy(l, less)
		for _, f := range l {
			out = append(out, kindedEntry{k, entryOf(f)})
		}
	}
	return out
}

func sortBy(l []Flow, less func(a, b Flow) bool) {
	// A merge sort, not the package's slices.SortFunc call.
	if len(l) < 2 {
		return
	}
	mid := len(l) / 2
	a, b := append([]Flow(nil), l[:mid]...), append([]Flow(nil), l[mid:]...)
	sortBy(a, less)
	sortBy(b, less)
	i, j := 0, 0
	for k := range l {
		if j == len(b) || i < len(a) && !less(b[j], a[i]) {
			l[k], i = a[i], i+1
		} else {
			l[k], j = b[j], j+1
		}
	}
}

func TestSplitLargeWindow(t *testing.T) {
	virtual, physical := manyFlows(12_000)
	msgs := Build("nSplit", windowStart, windowEnd, virtual, physical, true, nil)
	if len(msgs) < 3 {
		t.Fatalf("got %d messages, want at least 3", len(msgs))
	}
	header := Message{NodeID: "nSplit", Start: windowStart, End: windowEnd}
	checkSplit(t, msgs, header, wantEntries(virtual, physical), MaxMessageSize)
}

// TestSplitAtLimit builds a window whose message is exactly MaxMessageSize
// bytes (not split), then one byte more (split in two).
func TestSplitAtLimit(t *testing.T) {
	std := func(i int) Flow {
		return flow(classify.Virtual, protoTCP, fmt.Sprintf("10.0.0.1:%d", 10000+i), "10.0.0.2:80", 1, 1, 1, 1)
	}
	size := func(virtual []Flow) int {
		msgs := Build("n", windowStart, windowEnd, virtual, nil, false, nil)
		b, err := json.Marshal(msgs[0])
		if err != nil {
			t.Fatal(err)
		}
		return len(b)
	}
	// Two tuned flows absorb the remainder: each can grow by 2 digits of
	// protocol and 19 digits of each of its four counters.
	const growth = 2 + 4*19
	tuned := func(i, extra int) Flow {
		f := flow(classify.Virtual, 1, fmt.Sprintf("10.0.0.1:%d", 1000+i), "10.0.0.2:80", 1, 1, 1, 1)
		if extra >= 2 {
			f.Proto, extra = 100, extra-2
		}
		for _, c := range []*uint64{&f.TxPackets, &f.TxBytes, &f.RxPackets, &f.RxBytes} {
			d := min(extra, 19)
			*c, extra = pow10(d), extra-d
		}
		if extra != 0 {
			t.Fatalf("cannot grow a flow by %d more bytes", extra)
		}
		return f
	}
	base := size([]Flow{tuned(0, 0), tuned(1, 0)})
	per := size([]Flow{tuned(0, 0), tuned(1, 0), std(0)}) - base // one entry and its comma
	n := (MaxMessageSize - base) / per
	flows := []Flow{tuned(0, 0), tuned(1, 0)}
	for i := range n {
		flows = append(flows, std(i))
	}
	gap := MaxMessageSize - size(flows)
	if gap < 0 || gap >= 2*growth {
		t.Fatalf("gap %d out of reach", gap)
	}
	flows[0], flows[1] = tuned(0, min(gap, growth)), tuned(1, gap-min(gap, growth))

	header := Message{NodeID: "n", Start: windowStart, End: windowEnd}
	msgs := Build("n", windowStart, windowEnd, flows, nil, false, nil)
	if len(msgs) != 1 {
		t.Fatalf("at the limit: got %d messages, want 1", len(msgs))
	}
	if got := size(flows); got != MaxMessageSize {
		t.Fatalf("message is %d bytes, want exactly %d", got, MaxMessageSize)
	}
	checkSplit(t, msgs, header, wantEntries(flows, nil), MaxMessageSize)

	// One more digit.
	if flows[1].RxBytes >= 1e19 {
		t.Fatal("cannot add a digit")
	}
	flows[1].RxBytes *= 10
	msgs = Build("n", windowStart, windowEnd, flows, nil, false, nil)
	if len(msgs) != 2 {
		t.Fatalf("one byte over the limit: got %d messages, want 2", len(msgs))
	}
	checkSplit(t, msgs, header, wantEntries(flows, nil), MaxMessageSize)
}

func pow10(d int) uint64 {
	v := uint64(1)
	for range d {
		v *= 10
	}
	return v
}

// TestSplitSmallLimits runs the splitter over every limit in a range, on
// entries whose strings need escaping (IPv6 zones with quotes, HTML
// characters, control characters, invalid UTF-8, U+2028) and a node ID that
// does too, so that every computed size is checked against encoding/json.
func TestSplitSmallLimits(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	zones := []string{"", "eth0", `a"b`, `<&>`, "t\x01b", "\xff", "x\u2028y", `back\slash`, "é"}
	var virtual, physical []Flow
	for i := range 60 {
		a := netip.MustParseAddr("fe80::1").WithZone(zones[rng.IntN(len(zones))])
		if rng.IntN(3) == 0 {
			a = netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})
		}
		f := Flow{
			Proto: uint8(rng.IntN(256)),
			Src:   netip.AddrPortFrom(a, uint16(rng.IntN(65536))),
			Dst:   netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 168, 0, byte(i)}), uint16(i)),
			Class: classify.Class(1 + rng.IntN(3)),
		}
		for _, c := range []*uint64{&f.TxPackets, &f.TxBytes, &f.RxPackets, &f.RxBytes} {
			*c = rng.Uint64() >> rng.IntN(64)
		}
		if i%4 == 0 {
			physical = append(physical, f)
		} else {
			virtual = append(virtual, f)
		}
	}
	const nodeID = "n<\"é\u2028\x00>"
	header := Message{NodeID: nodeID, Start: windowStart, End: windowEnd}
	want := wantEntries(virtual, physical)
	for limit := 200; limit < 3000; limit += 7 {
		msgs := build(nodeID, windowStart, windowEnd, virtual, physical, true, nil, limit)
		checkSplit(t, msgs, header, want, limit)
		if t.Failed() {
			t.Fatalf("limit %d", limit)
		}
	}
}

// TestSplitOversizeEntry: an entry larger than the limit on its own gets a
// message of its own rather than being lost.
func TestSplitOversizeEntry(t *testing.T) {
	virtual := []Flow{
		flow(classify.Virtual, protoTCP, "10.0.0.1:1", "10.0.0.2:2", 1, 1, 1, 1),
		flow(classify.Virtual, protoTCP, "10.0.0.1:3", "10.0.0.2:4", 1, 1, 1, 1),
	}
	msgs := build("n", windowStart, windowEnd, virtual, nil, true, nil, 10)
	if len(msgs) != 2 {
		t.Fatalf("got %d messages, want 2", len(msgs))
	}
	header := Message{NodeID: "n", Start: windowStart, End: windowEnd}
	checkSplit(t, msgs, header, wantEntries(virtual, nil), 10)
}

// TestSplitSlicesCapped: appending to one message's field does not change
// the next message.
func TestSplitSlicesCapped(t *testing.T) {
	virtual, _ := manyFlows(100)
	msgs := build("n", windowStart, windowEnd, virtual, nil, true, nil, 1000)
	if len(msgs) < 2 {
		t.Fatalf("got %d messages, want several", len(msgs))
	}
	before := render(msgs[1:])
	for i := range msgs {
		m := &msgs[i]
		m.VirtualTraffic = append(m.VirtualTraffic, ConnectionCounts{Src: "clobbered"})
		m.SubnetTraffic = append(m.SubnetTraffic, ConnectionCounts{Src: "clobbered"})
		m.ExitTraffic = append(m.ExitTraffic, ConnectionCounts{Src: "clobbered"})
		m.PhysicalTraffic = append(m.PhysicalTraffic, ConnectionCounts{Src: "clobbered"})
		if i == 0 {
			if d := diff(render(msgs[1:]), before); d != "" {
				t.Fatalf("appending to message 0 changed the others (-got +want):\n%s", d)
			}
		}
	}
}

func TestUintLen(t *testing.T) {
	for _, v := range []uint64{0, 9, 10, 99, 100, 1<<64 - 1, 1e19 - 1, 1e19} {
		if got, want := uintLen(v), len(fmt.Sprint(v)); got != want {
			t.Errorf("uintLen(%d) = %d, want %d", v, got, want)
		}
	}
}
