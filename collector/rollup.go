package collector

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"time"
)

// A level is a resolution at which flows are stored: each window as it
// came, or summed per minute or per hour (rollups). A query over a long
// range reads the coarsest level that its range's whole periods allow and
// the finer levels only for the ragged ends.
type level uint8

const (
	levelWindow level = iota
	levelMinute
	levelHour
)

// levelPeriods are the rollups' periods (a window has none).
var levelPeriods = [...]time.Duration{levelMinute: time.Minute, levelHour: time.Hour}

// A span is a part of a query's range answered from one level: windows
// (or rollup periods) starting in [from, to), Unix ns.
type span struct {
	lvl      level
	from, to int64
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

// plan splits q's range into spans: whole hours from the hourly rollup,
// whole minutes around them from the minute rollup, and the windows of
// the ragged ends. Every window lies in exactly one span, by its start.
func (q *FlowQuery) plan() []span {
	return planSpans(clampNs(q.Start), clampNs(q.End), q.maxLevel(), nil)
}

func planSpans(from, to int64, max level, out []span) []span {
	if from >= to {
		return out
	}
	if max == levelWindow {
		return append(out, span{levelWindow, from, to})
	}
	p := int64(levelPeriods[max])
	a := (from + p - 1) / p * p
	b := to / p * p
	if a >= b {
		return planSpans(from, to, max-1, out)
	}
	out = planSpans(from, a, max-1, out)
	out = append(out, span{max, a, b})
	return planSpans(b, to, max-1, out)
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

// decode calls fn with each row of blob; fn must not keep the row.
func (r *blobReader) decode(blob []byte, fn func(*rollupRow)) error {
	r.b, r.err = blob, nil
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		return errBadBlob
	}
	r.addrs = r.addrs[:0]
	for range n {
		if len(r.b) < 1 || len(r.b) < 1+int(r.b[0]) {
			return errBadBlob
		}
		var a netip.Addr
		if l := int(r.b[0]); l > 0 {
			var ok bool
			if a, ok = netip.AddrFromSlice(r.b[1 : 1+l]); !ok {
				return errBadBlob
			}
		}
		r.addrs = append(r.addrs, a)
		r.b = r.b[1+int(r.b[0]):]
	}
	m := r.uvarint()
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

// A Span is a part of a FlowQuery's range and the level of storage that
// answers it, for a Storage that plans in its own query language: Level
// is "window" (each window as stored), "minute" or "hour" (sums per
// period); From and To bound the windows' (or periods') starts in Unix
// ns, [From, To).
type Span struct {
	Level    string
	From, To int64
}

var levelNames = [...]string{levelWindow: "window", levelMinute: "minute", levelHour: "hour"}

// Plan is q's range split as the embedded store reads it: whole hours
// from hourly sums, whole minutes around them from minute sums, and the
// ragged ends window by window. A rollup's period starts where its first
// window does, floored, so every window lies in exactly one span.
func Plan(q *FlowQuery) []Span {
	var out []Span
	for _, sp := range q.plan() {
		out = append(out, Span{levelNames[sp.lvl], sp.from, sp.to})
	}
	return out
}
