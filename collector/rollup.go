package collector

import (
	"encoding/binary"
	"errors"
	"net/netip"
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

// flowIdent is what rows are summed by in a rollup: every key of a flow.
type flowIdent struct {
	class    Class
	proto    uint8
	src, dst Endpoint
}

// sumRows adds rows to sums, keyed by flowIdent, keeping first-seen order
// in order.
func sumRows(sums map[flowIdent]int, rows []rollupRow, add []rollupRow) []rollupRow {
	for i := range add {
		r := &add[i]
		id := flowIdent{r.Class, r.Proto, r.Src, r.Dst}
		if j, ok := sums[id]; ok {
			s := &rows[j]
			s.TxPkts += r.TxPkts
			s.TxBytes += r.TxBytes
			s.RxPkts += r.RxPkts
			s.RxBytes += r.RxBytes
			s.Flows += r.Flows
			continue
		}
		sums[id] = len(rows)
		rows = append(rows, *r)
	}
	return rows
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

// encodeRows appends the blob of rows to dst.
func encodeRows(dst []byte, rows []rollupRow) []byte {
	index := map[netip.Addr]uint64{}
	var addrs []netip.Addr
	idx := func(a netip.Addr) uint64 {
		i, ok := index[a]
		if !ok {
			i = uint64(len(addrs))
			index[a] = i
			addrs = append(addrs, a)
		}
		return i
	}
	for i := range rows {
		idx(rows[i].Src.Addr)
		idx(rows[i].Dst.Addr)
	}
	dst = binary.AppendUvarint(dst, uint64(len(addrs)))
	for _, a := range addrs {
		b := a.AsSlice()
		dst = append(dst, byte(len(b)))
		dst = append(dst, b...)
	}
	dst = binary.AppendUvarint(dst, uint64(len(rows)))
	for i := range rows {
		r := &rows[i]
		dst = append(dst, byte(r.Class), r.Proto)
		dst = binary.AppendUvarint(dst, index[r.Src.Addr])
		dst = binary.AppendUvarint(dst, uint64(r.Src.Port))
		dst = binary.AppendUvarint(dst, index[r.Dst.Addr])
		dst = binary.AppendUvarint(dst, uint64(r.Dst.Port))
		dst = binary.AppendUvarint(dst, r.TxPkts)
		dst = binary.AppendUvarint(dst, r.TxBytes)
		dst = binary.AppendUvarint(dst, r.RxPkts)
		dst = binary.AppendUvarint(dst, r.RxBytes)
		dst = binary.AppendUvarint(dst, r.Flows)
	}
	return dst
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
