package collector

import (
	"cmp"
	"fmt"
	"math"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A FlowQuery asks for the flows of one collection's windows whose start
// lies in [Start, End), filtered, summed per group and optionally per
// time bucket (GET /api/v1/flows, SPEC §11).
type FlowQuery struct {
	Collection string
	Start, End time.Time
	// Filters; the zero value of each takes everything.
	Node  string
	Class Class
	Proto int          // -1: any
	Addr  netip.Prefix // either end's address in it; invalid: any
	Port  int          // either end's port; -1: any
	// Group lists the keys rows are summed by, in GroupKey order, each
	// once; none sums everything into one row.
	Group []GroupKey
	// Top keeps the Top groups with the most bytes (tx + rx over the
	// whole range); 0 keeps all.
	Top int
	// Bucket, if not 0, sums each group per bucket of this length
	// (a minute, 5 minutes or an hour), aligned to the Unix epoch.
	Bucket time.Duration
}

// A GroupKey is a key that FlowQuery rows can be grouped by.
type GroupKey uint8

// The group keys, in the order rows carry them.
const (
	GroupNode    GroupKey = iota // the node's ID
	GroupClass                   // virtual, subnet, exit, physical
	GroupProto                   // the IP protocol number
	GroupSrc                     // source address and port
	GroupDst                     // destination address and port
	GroupSrcAddr                 // source address
	GroupDstAddr                 // destination address
	GroupDstPort                 // destination port
	GroupPeer                    // Flow.Peer
	numGroupKeys
)

var groupNames = [numGroupKeys]string{"node", "class", "proto", "src", "dst", "srcAddr", "dstAddr", "dstPort", "peer"}

func (k GroupKey) String() string { return groupNames[k] }

// Buckets are the bucket lengths a FlowQuery takes.
var Buckets = map[string]time.Duration{"1m": time.Minute, "5m": 5 * time.Minute, "1h": time.Hour}

// Has reports whether q groups by k.
func (q *FlowQuery) Has(k GroupKey) bool { return slices.Contains(q.Group, k) }

// A FlowRow is one row of a FlowQuery's answer: the group's keys (those
// not asked are zero), its bucket (zero without one) and its sums.
type FlowRow struct {
	Node   string
	Class  Class
	Proto  uint8
	Src    Endpoint // GroupSrc: address and port; GroupSrcAddr: address
	Dst    Endpoint // GroupDst: address and port; GroupDstAddr, GroupDstPort: either
	Peer   netip.Addr
	Bucket time.Time
	Counts
}

// Counts are the sums of a row.
type Counts struct {
	TxPkts, TxBytes, RxPkts, RxBytes uint64
	// Flows is how many (flow, window) pairs were summed.
	Flows uint64
}

func (c *Counts) add(o *Counts) {
	c.TxPkts += o.TxPkts
	c.TxBytes += o.TxBytes
	c.RxPkts += o.RxPkts
	c.RxBytes += o.RxBytes
	c.Flows += o.Flows
}

// Bytes is TxBytes + RxBytes, what Top ranks by.
func (c *Counts) Bytes() uint64 { return c.TxBytes + c.RxBytes }

// A ParamError is a query parameter that was refused; the API answers
// 400 with it.
type ParamError struct {
	Param string
	Msg   string
}

func (e *ParamError) Error() string { return e.Param + ": " + e.Msg }

func paramErr(param, format string, args ...any) *ParamError {
	return &ParamError{param, fmt.Sprintf(format, args...)}
}

// defaultSince is the range a FlowQuery covers when none is given.
const defaultSince = time.Hour

// ParseFlowQuery reads the parameters of GET /api/v1/flows. Times are
// RFC 3339; since is a duration before now (Go syntax, or whole days as
// "30d"); end defaults to now, and without start or since the range is
// the last hour. It refuses unknown parameters. The collection is not
// checked here.
func ParseFlowQuery(v url.Values, now time.Time) (FlowQuery, error) {
	q := FlowQuery{Collection: v.Get("collection"), Proto: -1, Port: -1}
	for name, vals := range v {
		switch name {
		case "collection", "since", "start", "end", "node", "class", "proto", "addr", "port", "group", "top", "bucket":
			if len(vals) > 1 {
				return q, paramErr(name, "given %d times", len(vals))
			}
		default:
			return q, paramErr(name, "unknown parameter (want collection, since, start, end, node, class, proto, addr, port, group, top, bucket)")
		}
	}
	var err error
	if q.Start, q.End, err = parseRange(v, now); err != nil {
		return q, err
	}
	q.Node = v.Get("node")
	if s := v.Get("class"); s != "" {
		c, ok := ParseClass(s)
		if !ok {
			return q, paramErr("class", "%q: want virtual, subnet, exit or physical", s)
		}
		q.Class = c
	}
	if s := v.Get("proto"); s != "" {
		if q.Proto, err = parseProto(s); err != nil {
			return q, paramErr("proto", "%v", err)
		}
	}
	if s := v.Get("addr"); s != "" {
		if q.Addr, err = parsePrefix(s); err != nil {
			return q, paramErr("addr", "%q: want an IP address or prefix", s)
		}
	}
	if s := v.Get("port"); s != "" {
		p, err := strconv.ParseUint(s, 10, 16)
		if err != nil {
			return q, paramErr("port", "%q: want a port number, 0 to 65535", s)
		}
		q.Port = int(p)
	}
	if s := v.Get("group"); s != "" {
		if q.Group, err = ParseGroup(s); err != nil {
			return q, err
		}
	}
	if s := v.Get("top"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return q, paramErr("top", "%q: want a whole number of at least 1", s)
		}
		q.Top = n
	}
	if s := v.Get("bucket"); s != "" {
		d, ok := Buckets[s]
		if !ok {
			return q, paramErr("bucket", "%q: want 1m, 5m or 1h", s)
		}
		q.Bucket = d
	}
	return q, nil
}

// ParseGroup parses a comma-separated list of group keys.
func ParseGroup(s string) ([]GroupKey, error) {
	var keys []GroupKey
	for name := range strings.SplitSeq(s, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		i := slices.Index(groupNames[:], name)
		if i < 0 {
			return nil, paramErr("group", "unknown key %q (want %s)", name, strings.Join(groupNames[:], ", "))
		}
		if !slices.Contains(keys, GroupKey(i)) {
			keys = append(keys, GroupKey(i))
		}
	}
	slices.Sort(keys)
	return keys, nil
}

// parseRange reads since, start and end.
func parseRange(v url.Values, now time.Time) (start, end time.Time, err error) {
	since, s, e := v.Get("since"), v.Get("start"), v.Get("end")
	end = now
	switch {
	case since != "" && (s != "" || e != ""):
		return start, end, paramErr("since", "give since or start and end, not both")
	case since != "":
		d, err := ParseDuration(since)
		if err != nil {
			return start, end, paramErr("since", "%q: want a duration such as 10m, 2h or 30d", since)
		}
		return now.Add(-d), now, nil
	case s == "" && e != "":
		return start, end, paramErr("start", "required with end")
	case s == "":
		return now.Add(-defaultSince), now, nil
	}
	if start, err = time.Parse(time.RFC3339Nano, s); err != nil {
		return start, end, paramErr("start", "%q: want an RFC 3339 time", s)
	}
	if e != "" {
		if end, err = time.Parse(time.RFC3339Nano, e); err != nil {
			return start, end, paramErr("end", "%q: want an RFC 3339 time", e)
		}
	}
	if !end.After(start) {
		return start, end, paramErr("end", "must be after start")
	}
	return start, end, nil
}

// ParseDuration parses a positive duration: Go's syntax (90s, 10m, 1h30m)
// or a whole number of days (30d).
func ParseDuration(s string) (time.Duration, error) {
	var d time.Duration
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.ParseUint(n, 10, 32)
		if err != nil || days > math.MaxInt64/uint64(24*time.Hour) {
			return 0, fmt.Errorf("bad duration %q", s)
		}
		d = time.Duration(days) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, err
		}
	}
	if d <= 0 {
		return 0, fmt.Errorf("duration %q is not positive", s)
	}
	return d, nil
}

var protoNames = map[string]int{"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}

func parseProto(s string) (int, error) {
	if p, ok := protoNames[strings.ToLower(s)]; ok {
		return p, nil
	}
	p, err := strconv.ParseUint(s, 10, 8)
	if err != nil {
		return 0, fmt.Errorf("%q: want a protocol number (0 to 255) or tcp, udp, icmp, icmpv6", s)
	}
	return int(p), nil
}

// parsePrefix parses an address (a prefix of its full length) or a
// prefix, unmapping IPv4-mapped ones.
func parsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		a = normAddr(a)
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// Match reports whether flow f of node's window passes q's filters other
// than time.
func (q *FlowQuery) Match(node string, f *Flow) bool {
	if q.Node != "" && node != q.Node ||
		q.Class != 0 && f.Class != q.Class ||
		q.Proto >= 0 && int(f.Proto) != q.Proto ||
		q.Port >= 0 && int(f.Src.Port) != q.Port && int(f.Dst.Port) != q.Port {
		return false
	}
	if q.Addr.IsValid() && !q.Addr.Contains(f.Src.Addr) && !q.Addr.Contains(f.Dst.Addr) {
		return false
	}
	return true
}

// rowKey is a FlowRow's keys in comparable form: the map key of sums.
type rowKey struct {
	node   string
	class  Class
	proto  uint8
	src    Endpoint
	dst    Endpoint
	peer   netip.Addr
	bucket int64 // Unix ns; 0 without buckets
}

// compareKeys orders rows by their keys other than the bucket: node,
// class, proto, src, dst (address as 16 bytes, then port), peer. A
// storage that ranks in its own query language must rank ties the same
// way.
func compareKeys(a, b *FlowRow) int {
	if c := cmp.Compare(a.Node, b.Node); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Class, b.Class); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Proto, b.Proto); c != 0 {
		return c
	}
	if c := compareEndpoints(a.Src, b.Src); c != 0 {
		return c
	}
	if c := compareEndpoints(a.Dst, b.Dst); c != 0 {
		return c
	}
	pa, pb := a.Peer.As16(), b.Peer.As16()
	return slices.Compare(pa[:], pb[:])
}

func compareEndpoints(a, b Endpoint) int {
	x, y := a.Addr.As16(), b.Addr.As16()
	if c := slices.Compare(x[:], y[:]); c != 0 {
		return c
	}
	return cmp.Compare(a.Port, b.Port)
}

// byRank orders groups by bytes, most first, then by keys.
func byRank(a, b *FlowRow) int {
	if c := cmp.Compare(b.Bytes(), a.Bytes()); c != 0 {
		return c
	}
	return compareKeys(a, b)
}

// FinishRows applies q.Top to rows summed per group (and bucket) and puts
// them in the answer's order: without buckets, most bytes first; with
// buckets, by bucket, and within one by the group's rank over the whole
// range. Top keeps the q.Top groups with the most bytes over the whole
// range (ties broken by keys), with all their buckets. Every Storage
// answers through it, so that all answer alike.
func FinishRows(q *FlowQuery, rows []FlowRow) []FlowRow {
	if q.Bucket == 0 {
		slices.SortFunc(rows, func(a, b FlowRow) int { return byRank(&a, &b) })
		if q.Top > 0 && len(rows) > q.Top {
			rows = rows[:q.Top]
		}
		return rows
	}
	// Rank the groups by their sums over every bucket.
	type group struct {
		row  FlowRow
		rank int
	}
	groups := map[rowKey]*group{}
	for i := range rows {
		k := rows[i].groupKey()
		g := groups[k]
		if g == nil {
			g = &group{row: rows[i]}
			g.row.Counts = Counts{}
			groups[k] = g
		}
		g.row.add(&rows[i].Counts)
	}
	ranked := make([]*group, 0, len(groups))
	for _, g := range groups {
		ranked = append(ranked, g)
	}
	slices.SortFunc(ranked, func(a, b *group) int { return byRank(&a.row, &b.row) })
	for i, g := range ranked {
		g.rank = i
	}
	rows = slices.DeleteFunc(rows, func(r FlowRow) bool {
		return q.Top > 0 && groups[r.groupKey()].rank >= q.Top
	})
	slices.SortFunc(rows, func(a, b FlowRow) int {
		if c := a.Bucket.Compare(b.Bucket); c != 0 {
			return c
		}
		return cmp.Compare(groups[a.groupKey()].rank, groups[b.groupKey()].rank)
	})
	return rows
}

// groupKey is r's key without its bucket.
func (r *FlowRow) groupKey() rowKey {
	return rowKey{node: r.Node, class: r.Class, proto: r.Proto, src: r.Src, dst: r.Dst, peer: r.Peer}
}

// A NodeRow is one node of GET /api/v1/nodes.
type NodeRow struct {
	Node string
	// FirstWindow is the start of the node's earliest stored window,
	// LastWindow the end of its latest.
	FirstWindow, LastWindow time.Time
	// TxBytes and RxBytes sum the node's tunnel traffic (the virtual,
	// subnet and exit classes); the physical layer, which carries the
	// same traffic again, is left out.
	TxBytes, RxBytes uint64
}
