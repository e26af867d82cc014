package collector

import (
	"encoding/binary"
	"net/netip"
	"time"
)

// aggKey is a group's key with its node and addresses interned (IDs in
// the aggregator's tables), so that a row's key is a few integers, cheap
// to build and to hash. Keys not grouped by are zero.
type aggKey struct {
	bucket         int64 // Unix ns; 0 without buckets
	node           uint32
	src, dst, peer uint32
	sport, dport   uint16
	class, proto   uint8
}

// aggregator sums stored rows into a FlowQuery's groups, adding a
// plan's spans and subtracting its Neg ones (counts wrap, so the sums
// are exact once every span is in). The zero value is not ready: use
// newAggregator.
type aggregator struct {
	q      *FlowQuery
	groups map[aggKey]int32 // index in counts
	keys   []aggKey
	counts []Counts

	// Interning: ID 0 is the zero address (or no node).
	addrIDs map[netip.Addr]uint32
	addrs   []netip.Addr
	nodes   []string

	// What the group and filters need, from q.
	gClass, gProto, gSrc, gSport, gDst, gDport, gPeer bool

	// A blob's address index → ID, and → in q.Addr.
	ids    []uint32
	inAddr []bool
}

func newAggregator(q *FlowQuery) *aggregator {
	a := &aggregator{q: q, groups: map[aggKey]int32{}, addrIDs: map[netip.Addr]uint32{{}: 0}, addrs: []netip.Addr{{}}, nodes: []string{""}}
	for _, g := range q.Group {
		switch g {
		case GroupClass:
			a.gClass = true
		case GroupProto:
			a.gProto = true
		case GroupSrc:
			a.gSrc, a.gSport = true, true
		case GroupSrcAddr:
			a.gSrc = true
		case GroupDst:
			a.gDst, a.gDport = true, true
		case GroupDstAddr:
			a.gDst = true
		case GroupDstPort:
			a.gDport = true
		case GroupPeer:
			a.gPeer = true
		}
	}
	return a
}

// node returns node's ID for addBlob (0 when not grouped by node); call
// it once per node.
func (a *aggregator) node(node string) uint32 {
	if !a.q.Has(GroupNode) {
		return 0
	}
	a.nodes = append(a.nodes, node)
	return uint32(len(a.nodes) - 1)
}

// addBlob sums the rows of blob, a period (or window) of node (from
// a.node) starting at t (Unix ns), that pass q's filters other than
// node and time; subtracted if neg. r is scratch space.
func (a *aggregator) addBlob(node uint32, t int64, neg bool, blob []byte, r *blobReader) error {
	m, err := r.header(blob)
	if err != nil {
		return err
	}
	q := a.q
	n := uint64(len(r.addrs))
	a.intern(r.addrs)
	filterAddr := q.Addr.IsValid()
	base := aggKey{node: node}
	if q.Bucket > 0 {
		base.bucket = t - t%int64(q.Bucket)
	}
	b := r.b
	for i := uint64(0); i < m; i++ {
		if len(b) < 2 {
			return errBadBlob
		}
		class, proto := Class(b[0]), b[1]
		var v [9]uint64
		if b, err = readUvarints(b[2:], v[:]); err != nil {
			return err
		}
		si, sp, di, dp := v[0], v[1], v[2], v[3]
		if si >= n || di >= n || sp > 0xffff || dp > 0xffff {
			return errBadBlob
		}
		if q.Class != 0 && class != q.Class ||
			q.Proto >= 0 && int(proto) != q.Proto ||
			q.Port >= 0 && int(sp) != q.Port && int(dp) != q.Port ||
			filterAddr && !a.inAddr[si] && !a.inAddr[di] {
			continue
		}
		a.addRow(base, class, proto, &v, neg)
	}
	if len(b) != 0 {
		return errBadBlob
	}
	return nil
}

// intern maps a blob's addresses to their IDs (a.ids), when the group
// needs them, and to whether q.Addr holds them (a.inAddr), when it
// filters by address.
func (a *aggregator) intern(addrs []netip.Addr) {
	a.ids = a.ids[:0]
	if a.gSrc || a.gDst || a.gPeer {
		for _, ad := range addrs {
			id, ok := a.addrIDs[ad]
			if !ok {
				id = uint32(len(a.addrs))
				a.addrIDs[ad] = id
				a.addrs = append(a.addrs, ad)
			}
			a.ids = append(a.ids, id)
		}
	}
	if a.q.Addr.IsValid() {
		a.inAddr = a.inAddr[:0]
		for _, ad := range addrs {
			a.inAddr = append(a.inAddr, a.q.Addr.Contains(ad))
		}
	}
}

// readUvarints reads len(v) varints from b into v and returns the rest.
func readUvarints(b []byte, v []uint64) ([]byte, error) {
	for j := range v {
		if len(b) > 0 && b[0] < 0x80 {
			v[j], b = uint64(b[0]), b[1:]
			continue
		}
		x, k := binary.Uvarint(b)
		if k <= 0 {
			return nil, errBadBlob
		}
		v[j], b = x, b[k:]
	}
	return b, nil
}

// addRow adds (or, if neg, subtracts) a row's counts to its group: v
// holds the source and destination address index and port, then the
// counts; the key is built on top of base.
func (a *aggregator) addRow(base aggKey, class Class, proto uint8, v *[9]uint64, neg bool) {
	k := base
	if a.gClass {
		k.class = uint8(class)
	}
	if a.gProto {
		k.proto = proto
	}
	if a.gSrc {
		k.src = a.ids[v[0]]
	}
	if a.gSport {
		k.sport = uint16(v[1])
	}
	if a.gDst {
		k.dst = a.ids[v[2]]
	}
	if a.gDport {
		k.dport = uint16(v[3])
	}
	if a.gPeer {
		if class == ClassPhysical {
			k.peer = a.ids[v[0]]
		} else {
			k.peer = a.ids[v[2]]
		}
	}
	g, ok := a.groups[k]
	if !ok {
		g = int32(len(a.counts))
		a.groups[k] = g
		a.keys = append(a.keys, k)
		a.counts = append(a.counts, Counts{})
	}
	c := &a.counts[g]
	if neg {
		c.TxPkts -= v[4]
		c.TxBytes -= v[5]
		c.RxPkts -= v[6]
		c.RxBytes -= v[7]
		c.Flows -= v[8]
	} else {
		c.TxPkts += v[4]
		c.TxBytes += v[5]
		c.RxPkts += v[6]
		c.RxBytes += v[7]
		c.Flows += v[8]
	}
}

// rows returns the sums as rows, unordered, leaving out groups that
// netted to no (flow, window) pair.
func (a *aggregator) rows() []FlowRow {
	rows := make([]FlowRow, 0, len(a.counts))
	for i, k := range a.keys {
		c := a.counts[i]
		if c.Flows == 0 {
			continue
		}
		r := FlowRow{Node: a.nodes[k.node], Class: Class(k.class), Proto: k.proto,
			Src: Endpoint{a.addrs[k.src], k.sport}, Dst: Endpoint{a.addrs[k.dst], k.dport}, Peer: a.addrs[k.peer], Counts: c}
		if a.q.Bucket > 0 {
			r.Bucket = time.Unix(0, k.bucket).UTC()
		}
		rows = append(rows, r)
	}
	return rows
}
