package netlog

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"github.com/wgsidecar/sidecar/classify"
)

// The traffic kinds of a message, in the order of its fields.
const (
	kindVirtual = iota
	kindSubnet
	kindExit
	kindPhysical
	numKinds
)

// Build makes the messages of one window, from start to end (both
// inclusive, written in UTC), for the node nodeID.
//
// virtual are the flows of the virtual layer; each goes to the virtual,
// subnet or exit traffic by its Class (a flow of no known class counts as
// exit traffic, the class that reveals least). physical are the flows of the
// UDP socket; their Class is ignored. Build keeps neither slice, nor changes
// them.
//
// Unless logExit is set, exit traffic is anonymised. Each exit flow keeps
// only its tunnel node addresses, as isNode tells them apart (a nil isNode
// knows none), without port; the protocol and every other address are
// removed. Flows that become the same are summed, so there is one entry per
// tunnel node address on the tunnel side of exit traffic: Src = this node's
// address for traffic it sends through an exit node, Dst = a peer's address
// for traffic this node forwards as an exit node, and a single entry with
// neither address for traffic between two non-node addresses.
//
// Entries of each kind are sorted by Src, then Dst, then protocol; Src and
// Dst compare as addresses (IPv4 before IPv6, numerically), then ports, not
// as strings. Entries of the same kind with the same protocol, Src and Dst
// are summed.
//
// A window with no flows yields no message. A window whose message would
// exceed MaxMessageSize is split into several messages with the same
// NodeID, Start and End, filled in order (virtual, subnet, exit, physical
// traffic; sorted entries), each as full as fits; every entry appears in
// exactly one of them. An entry too large to fit in any message (a node ID
// near the limit) gets a message of its own. The messages' entries share
// backing arrays, each field's slice capped at its length, so appending to
// one message's field never changes another's.
func Build(nodeID string, start, end time.Time, virtual, physical []Flow, logExit bool, isNode func(netip.Addr) bool) []Message {
	return build(nodeID, start, end, virtual, physical, logExit, isNode, MaxMessageSize)
}

// build is Build with the size limit as a parameter, for tests.
func build(nodeID string, start, end time.Time, virtual, physical []Flow, logExit bool, isNode func(netip.Addr) bool, limit int) []Message {
	if len(virtual)+len(physical) == 0 {
		return nil
	}
	lists := sortFlows(virtual, physical, logExit, isNode)
	entries := formatEntries(lists)
	header := Message{NodeID: nodeID, Start: start.UTC(), End: end.UTC()}
	return split(header, entries, limit)
}

// kindOf is the kind of a virtual-layer flow of class c.
func kindOf(c classify.Class) int {
	switch c {
	case classify.Virtual:
		return kindVirtual
	case classify.Subnet:
		return kindSubnet
	}
	return kindExit
}

// sortFlows copies the flows into one list per kind, anonymising exit flows
// unless logExit, then sorts each list and sums its duplicates.
func sortFlows(virtual, physical []Flow, logExit bool, isNode func(netip.Addr) bool) [numKinds][]Flow {
	// One backing array for the kinds that are copied as they are.
	var n [numKinds]int
	for i := range virtual {
		n[kindOf(virtual[i].Class)]++
	}
	n[kindPhysical] = len(physical)
	if !logExit {
		n[kindExit] = 0
	}
	all := make([]Flow, 0, n[kindVirtual]+n[kindSubnet]+n[kindExit]+n[kindPhysical])
	var lists [numKinds][]Flow
	for k := range lists {
		lists[k] = all[len(all) : len(all) : len(all)+n[k]]
		all = all[:len(all)+n[k]]
	}

	var anon anonymiser
	for i := range virtual {
		f := &virtual[i]
		k := kindOf(f.Class)
		if k == kindExit && !logExit {
			anon.add(f, isNode)
			continue
		}
		lists[k] = append(lists[k], *f)
	}
	lists[kindPhysical] = append(lists[kindPhysical], physical...)
	if !logExit {
		lists[kindExit] = anon.flows
	}

	for k, l := range lists {
		slices.SortFunc(l, compareFlows)
		lists[k] = sumDuplicates(l)
	}
	return lists
}

// compareFlows orders flows by Src, then Dst (each as AddrPort.Compare
// does: address family, address, zone, port), then Proto.
func compareFlows(a, b Flow) int {
	if c := a.Src.Compare(b.Src); c != 0 {
		return c
	}
	if c := a.Dst.Compare(b.Dst); c != 0 {
		return c
	}
	return cmp.Compare(a.Proto, b.Proto)
}

// sumDuplicates sums runs of sorted flows with the same Proto, Src and Dst
// into one, in place.
func sumDuplicates(l []Flow) []Flow {
	if len(l) < 2 {
		return l
	}
	out := l[:1]
	for _, f := range l[1:] {
		last := &out[len(out)-1]
		if f.Proto == last.Proto && f.Src == last.Src && f.Dst == last.Dst {
			last.add(&f)
			continue
		}
		out = append(out, f)
	}
	return out
}

// add adds g's counts to f's.
func (f *Flow) add(g *Flow) {
	f.TxPackets += g.TxPackets
	f.TxBytes += g.TxBytes
	f.RxPackets += g.RxPackets
	f.RxBytes += g.RxBytes
}

// anonymiser sums exit flows by what is left of them once anonymised. The
// zero value is ready for use.
type anonymiser struct {
	index map[[2]netip.AddrPort]int // (Src, Dst) → index in flows
	flows []Flow
}

// add adds f, anonymised, to the sums.
func (a *anonymiser) add(f *Flow, isNode func(netip.Addr) bool) {
	keep := func(ap netip.AddrPort) netip.AddrPort {
		if isNode != nil && ap.Addr().IsValid() && isNode(ap.Addr()) {
			return netip.AddrPortFrom(ap.Addr(), 0)
		}
		return netip.AddrPort{}
	}
	k := [2]netip.AddrPort{keep(f.Src), keep(f.Dst)}
	i, ok := a.index[k]
	if !ok {
		if a.index == nil {
			a.index = make(map[[2]netip.AddrPort]int)
		}
		i = len(a.flows)
		a.index[k] = i
		a.flows = append(a.flows, Flow{Src: k[0], Dst: k[1], Class: classify.Exit})
	}
	a.flows[i].add(f)
}

// formatEntries turns the sorted flows into entries. All addresses are
// formatted into one string that the entries' Src and Dst slice, so that
// the window's text costs two allocations, not two per entry.
func formatEntries(lists [numKinds][]Flow) [numKinds][]ConnectionCounts {
	var total int
	for _, l := range lists {
		total += len(l)
	}
	// ends[2i] and ends[2i+1] are where entry i's Src and Dst end in text.
	ends := make([]int, 0, 2*total)
	text := make([]byte, 0, 2*total*len("255.255.255.255:65535"))
	for _, l := range lists {
		for i := range l {
			text = appendAddrPort(text, l[i].Src)
			ends = append(ends, len(text))
			text = appendAddrPort(text, l[i].Dst)
			ends = append(ends, len(text))
		}
	}
	s := string(text)

	all := make([]ConnectionCounts, total)
	var out [numKinds][]ConnectionCounts
	var j, from int // entry index over all kinds, offset in s
	for k, l := range lists {
		if len(l) > 0 {
			out[k] = all[j : j+len(l) : j+len(l)]
		}
		for i := range l {
			f := &l[i]
			srcEnd, dstEnd := ends[2*j], ends[2*j+1]
			all[j] = ConnectionCounts{
				Proto:     f.Proto,
				Src:       s[from:srcEnd],
				Dst:       s[srcEnd:dstEnd],
				TxPackets: f.TxPackets,
				TxBytes:   f.TxBytes,
				RxPackets: f.RxPackets,
				RxBytes:   f.RxBytes,
			}
			from = dstEnd
			j++
		}
	}
	return out
}

// appendAddrPort appends ap as "ip:port", or nothing for the zero AddrPort.
func appendAddrPort(b []byte, ap netip.AddrPort) []byte {
	if !ap.IsValid() {
		return b
	}
	return ap.AppendTo(b)
}
