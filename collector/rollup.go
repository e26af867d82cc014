package collector

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"math"
	"net/netip"
	"slices"
	"time"
)

// A level is a resolution at which flows are stored: each window as it
// came, or summed per minute, per 10 minutes or per hour (rollups). A
// query reads each part of its range from the level that costs least:
// whole periods of the coarsest level its buckets allow, and the ragged
// ends from finer levels, or from one more period minus the finer parts
// of it that lie outside the range (see planSpans).
type level uint8

const (
	levelWindow level = iota
	levelMinute
	level10m
	levelHour
)

// levelPeriods are the rollups' periods (a window has none).
var levelPeriods = [...]time.Duration{levelMinute: time.Minute, level10m: 10 * time.Minute, levelHour: time.Hour}

// planWindow is the window length planning assumes when it weighs reading
// windows against reading a rollup: nodes' default, 5 s. It only steers
// the choice; every plan is exact whatever the windows' lengths.
const planWindow = 5 * time.Second

// A span is a part of a query's plan answered from one level: windows
// (or rollup periods) starting in [from, to), Unix ns, added to the
// answer, or subtracted from it if neg.
type span struct {
	lvl      level
	from, to int64
	neg      bool
}

// maxLevel is the coarsest level q can read: a rollup's period must
// divide the buckets asked for.
func (q *FlowQuery) maxLevel() level {
	switch q.Bucket {
	case 0, time.Hour:
		return levelHour
	}
	return levelMinute
}

// plan is q's range as signed spans: every window starting in the range
// is counted once, by the spans that hold it added minus those
// subtracted, and every window outside the range zero times.
func (q *FlowQuery) plan() []span {
	spans, _ := planSpans(clampNs(q.Start), clampNs(q.End), q.maxLevel(), nil)
	return spans
}

// spanCost is what reading [from, to) at lvl costs, in blobs per node.
func spanCost(lvl level, from, to int64) int64 {
	p := int64(planWindow)
	if lvl > levelWindow {
		p = int64(levelPeriods[lvl])
	}
	return (to - from + p - 1) / p
}

// planSpans plans [from, to) with levels up to top, at least cost: whole
// periods of top (the inner ones, or also the one around a ragged end,
// then subtracting that period's part outside the range), the rest from
// finer levels; or nothing of top at all. Ties go to the plan without
// subtraction. A level whose since (if not nil) is set holds only the
// periods starting at or after it (a multiple of its period). It returns
// the spans and their cost.
func planSpans(from, to int64, top level, since *[levelHour + 1]int64) ([]span, int64) {
	if from >= to {
		return nil, 0
	}
	if top == levelWindow {
		return []span{{levelWindow, from, to, false}}, spanCost(levelWindow, from, to)
	}
	if since != nil && since[top] > from {
		if since[top] >= to {
			return planSpans(from, to, top-1, since)
		}
		head, hc := planSpans(from, since[top], top-1, since)
		tail, tc := planSpans(since[top], to, top, since)
		return append(head, tail...), hc + tc
	}
	best, cost := planSpans(from, to, top-1, since)
	p := int64(levelPeriods[top])
	fl := func(t int64) int64 { return t - t%p }
	starts := []int64{fl(from)}
	if fl(from) != from && fl(from) <= math.MaxInt64-p {
		starts = []int64{fl(from) + p, fl(from)}
	}
	ends := []int64{fl(to)}
	if fl(to) != to && fl(to) <= math.MaxInt64-p {
		ends = append(ends, fl(to)+p)
	}
	for _, a := range starts {
		for _, b := range ends {
			if a >= b {
				continue
			}
			spans := []span{{top, a, b, false}}
			c := spanCost(top, a, b)
			head, hc := planSpans(min(from, a), max(from, a), top-1, since)
			tail, tc := planSpans(min(to, b), max(to, b), top-1, since)
			if c += hc + tc; c >= cost {
				continue
			}
			spans = append(signed(head, a < from), spans...)
			best, cost = append(spans, signed(tail, b > to)...), c
		}
	}
	return best, cost
}

// signed returns spans, their signs flipped if neg.
func signed(spans []span, neg bool) []span {
	if neg {
		for i := range spans {
			spans[i].neg = !spans[i].neg
		}
	}
	return spans
}

// clampNs is t in Unix ns, clamped to [0, MaxInt64].
func clampNs(t time.Time) int64 { return int64(timeKey(t)) }

// floorNs is the start of the period of length d holding t (Unix ns).
func floorNs(t int64, d time.Duration) int64 { return t - t%int64(d) }

// A rollupRow is a flow summed over a period: the flow's keys, its counts
// and how many (flow, window) pairs it sums.
type rollupRow struct {
	Flow
	Flows uint64
}

// compareIdent orders flows by every key a rollup sums them by: class,
// proto, source, destination.
func compareIdent(a, b *Flow) int {
	if c := cmp.Compare(a.Class, b.Class); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Proto, b.Proto); c != 0 {
		return c
	}
	if c := a.Src.Addr.Compare(b.Src.Addr); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Src.Port, b.Src.Port); c != 0 {
		return c
	}
	if c := a.Dst.Addr.Compare(b.Dst.Addr); c != 0 {
		return c
	}
	return cmp.Compare(a.Dst.Port, b.Dst.Port)
}

func compareRows(a, b rollupRow) int { return compareIdent(&a.Flow, &b.Flow) }

// addCounts adds r's counts to s.
func (s *rollupRow) addCounts(r *rollupRow) {
	s.TxPkts += r.TxPkts
	s.TxBytes += r.TxBytes
	s.RxPkts += r.RxPkts
	s.RxBytes += r.RxBytes
	s.Flows += r.Flows
}

// normRows sorts rows by compareIdent, if they are not yet, and sums
// the rows of one ident into one, in place. A window's flows come sorted
// from netlog, and stored rollups are kept sorted, so it mostly only
// checks.
func normRows(rows []rollupRow) []rollupRow {
	sorted := true
	for i := 1; i < len(rows); i++ {
		if compareIdent(&rows[i-1].Flow, &rows[i].Flow) >= 0 {
			sorted = false
			break
		}
	}
	if sorted {
		return rows
	}
	slices.SortStableFunc(rows, compareRows)
	out := rows[:0]
	for i := range rows {
		if n := len(out); n > 0 && compareIdent(&out[n-1].Flow, &rows[i].Flow) == 0 {
			out[n-1].addCounts(&rows[i])
			continue
		}
		out = append(out, rows[i])
	}
	return out
}

// mergeRows appends to dst the sum of a and b, both normalised
// (normRows): one row per ident, in order.
func mergeRows(dst, a, b []rollupRow) []rollupRow {
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch c := compareIdent(&a[i].Flow, &b[j].Flow); {
		case c < 0:
			dst = append(dst, a[i])
			i++
		case c > 0:
			dst = append(dst, b[j])
			j++
		default:
			s := a[i]
			s.addCounts(&b[j])
			dst = append(dst, s)
			i++
			j++
		}
	}
	dst = append(dst, a[i:]...)
	return append(dst, b[j:]...)
}

// Rows are stored as blobs: the addresses they use, once each, then the
// rows, each referring to its addresses by index:
//
//	uvarint n, n × (1-byte length 0, 4 or 16 ‖ address bytes)
//	uvarint m, m × (class ‖ proto ‖ uvarint src index, src port,
//	               dst index, dst port, txPkts, txBytes, rxPkts,
//	               rxBytes, flows)
//
// A window's rows have flows = 1 each.

// A rowEncoder encodes blobs, reusing its scratch space.
type rowEncoder struct {
	index map[netip.Addr]uint64
	addrs []netip.Addr
	buf   []byte
}

// encode returns the blob of rows, in a new slice of its own.
func (en *rowEncoder) encode(rows []rollupRow) []byte {
	if en.index == nil {
		en.index = map[netip.Addr]uint64{}
	}
	clear(en.index)
	en.addrs = en.addrs[:0]
	idx := func(a netip.Addr) uint64 {
		i, ok := en.index[a]
		if !ok {
			i = uint64(len(en.addrs))
			en.index[a] = i
			en.addrs = append(en.addrs, a)
		}
		return i
	}
	dst := en.buf[:0]
	for i := range rows {
		idx(rows[i].Src.Addr)
		idx(rows[i].Dst.Addr)
	}
	dst = binary.AppendUvarint(dst, uint64(len(en.addrs)))
	for _, a := range en.addrs {
		switch {
		case a.Is4():
			b := a.As4()
			dst = append(append(dst, 4), b[:]...)
		case a.IsValid():
			b := a.As16()
			dst = append(append(dst, 16), b[:]...)
		default:
			dst = append(dst, 0)
		}
	}
	dst = binary.AppendUvarint(dst, uint64(len(rows)))
	for i := range rows {
		r := &rows[i]
		dst = append(dst, byte(r.Class), r.Proto)
		dst = binary.AppendUvarint(dst, en.index[r.Src.Addr])
		dst = binary.AppendUvarint(dst, uint64(r.Src.Port))
		dst = binary.AppendUvarint(dst, en.index[r.Dst.Addr])
		dst = binary.AppendUvarint(dst, uint64(r.Dst.Port))
		dst = binary.AppendUvarint(dst, r.TxPkts)
		dst = binary.AppendUvarint(dst, r.TxBytes)
		dst = binary.AppendUvarint(dst, r.RxPkts)
		dst = binary.AppendUvarint(dst, r.RxBytes)
		dst = binary.AppendUvarint(dst, r.Flows)
	}
	en.buf = dst
	return bytes.Clone(dst)
}

var errBadBlob = errors.New("malformed stored flows")

// blobReader decodes a blob, reusing its address table between blobs.
type blobReader struct {
	addrs []netip.Addr
	b     []byte
	err   error
}

func (r *blobReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errBadBlob
		r.b = nil
		return 0
	}
	r.b = r.b[n:]
	return v
}

// header reads blob's address table into r.addrs and returns how many
// rows follow, in r.b.
func (r *blobReader) header(blob []byte) (uint64, error) {
	r.b, r.err = blob, nil
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		return 0, errBadBlob
	}
	r.addrs = r.addrs[:0]
	for range n {
		if len(r.b) < 1 || len(r.b) < 1+int(r.b[0]) {
			return 0, errBadBlob
		}
		var a netip.Addr
		if l := int(r.b[0]); l > 0 {
			var ok bool
			if a, ok = netip.AddrFromSlice(r.b[1 : 1+l]); !ok {
				return 0, errBadBlob
			}
		}
		r.addrs = append(r.addrs, a)
		r.b = r.b[1+int(r.b[0]):]
	}
	m := r.uvarint()
	if r.err != nil || m > uint64(len(r.b)) {
		return 0, errBadBlob
	}
	return m, nil
}

// decode calls fn with each row of blob; fn must not keep the row.
func (r *blobReader) decode(blob []byte, fn func(*rollupRow)) error {
	m, err := r.header(blob)
	if err != nil {
		return err
	}
	n := uint64(len(r.addrs))
	var row rollupRow
	for i := uint64(0); i < m && r.err == nil; i++ {
		if len(r.b) < 2 {
			return errBadBlob
		}
		row.Class, row.Proto = Class(r.b[0]), r.b[1]
		r.b = r.b[2:]
		si, sp, di, dp := r.uvarint(), r.uvarint(), r.uvarint(), r.uvarint()
		row.TxPkts, row.TxBytes, row.RxPkts, row.RxBytes, row.Flows = r.uvarint(), r.uvarint(), r.uvarint(), r.uvarint(), r.uvarint()
		if r.err != nil || si >= n || di >= n || sp > 0xffff || dp > 0xffff {
			return errBadBlob
		}
		row.Src = Endpoint{r.addrs[si], uint16(sp)}
		row.Dst = Endpoint{r.addrs[di], uint16(dp)}
		fn(&row)
	}
	if r.err != nil || len(r.b) != 0 {
		return errBadBlob
	}
	return nil
}

// A Span is a part of a FlowQuery's plan and the level of storage that
// answers it, for a Storage that plans in its own query language: Level
// is "window" (each window as stored), "minute", "10m" or "hour" (sums
// per period); From and To bound the windows' (or periods') starts in
// Unix ns, [From, To). A Neg span is subtracted from the answer.
type Span struct {
	Level    string
	From, To int64
	Neg      bool
}

var levelNames = [...]string{levelWindow: "window", levelMinute: "minute", level10m: "10m", levelHour: "hour"}

// Plan is q's plan as the embedded store reads it (see planSpans): whole
// periods from rollups, ragged ends window by window or as one more
// period minus its part outside the range. A rollup's period starts where
// its first window does, floored, so adding the spans that hold a window
// and subtracting the Neg ones counts it once if it starts in q's range
// and zero times if not. A group whose (flow, window) pairs net to zero
// is not in the answer.
func Plan(q *FlowQuery) []Span { return PlanSince(q, nil) }

// PlanSince is Plan for a store whose rollup levels (by Span.Level name)
// hold only the periods starting at or after since[level], Unix ns (a
// level added to a store that had data before it, and not backfilled).
func PlanSince(q *FlowQuery, since map[string]int64) []Span {
	var lim *[levelHour + 1]int64
	if len(since) > 0 {
		lim = new([levelHour + 1]int64)
		for l := levelMinute; l <= levelHour; l++ {
			p := int64(levelPeriods[l])
			if t := since[levelNames[l]]; t > 0 {
				lim[l] = (t + p - 1) / p * p
			}
		}
	}
	spans, _ := planSpans(clampNs(q.Start), clampNs(q.End), q.maxLevel(), lim)
	var out []Span
	for _, sp := range spans {
		out = append(out, Span{levelNames[sp.lvl], sp.from, sp.to, sp.neg})
	}
	return out
}
