package clickhouse

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wgsidecar/sidecar/collector"
)

// keyExprs are the SQL expressions of the group keys, in GroupKey order
// of the columns a row carries: node, class, proto, src address and
// port, dst address and port, peer. A key not asked is a constant.
func keyExprs(q *collector.FlowQuery) []string {
	e := []string{"''", "toUInt8(0)", "toUInt8(0)", "toFixedString('', 16)", "toUInt16(0)", "toFixedString('', 16)", "toUInt16(0)", "toFixedString('', 16)"}
	for _, g := range q.Group {
		switch g {
		case collector.GroupNode:
			e[0] = "node"
		case collector.GroupClass:
			e[1] = "class"
		case collector.GroupProto:
			e[2] = "proto"
		case collector.GroupSrc:
			e[3], e[4] = "src_addr", "src_port"
		case collector.GroupSrcAddr:
			e[3] = "src_addr"
		case collector.GroupDst:
			e[5], e[6] = "dst_addr", "dst_port"
		case collector.GroupDstAddr:
			e[5] = "dst_addr"
		case collector.GroupDstPort:
			e[6] = "dst_port"
		case collector.GroupPeer:
			e[7] = "if(class = 4, src_addr, dst_addr)"
		}
	}
	return e
}

var keyAliases = []string{"k_node", "k_class", "k_proto", "k_src_addr", "k_src_port", "k_dst_addr", "k_dst_port", "k_peer"}

// filters is the WHERE clause of q's filters (after the collection and
// time) and its arguments.
func filters(q *collector.FlowQuery) (string, []any) {
	var b strings.Builder
	var args []any
	if q.Node != "" {
		b.WriteString(" AND node = ?")
		args = append(args, q.Node)
	}
	if q.Class != 0 {
		b.WriteString(" AND class = " + strconv.Itoa(int(q.Class)))
	}
	if q.Proto >= 0 {
		b.WriteString(" AND proto = " + strconv.Itoa(q.Proto))
	}
	if q.Port >= 0 {
		fmt.Fprintf(&b, " AND (src_port = %d OR dst_port = %d)", q.Port, q.Port)
	}
	if q.Addr.IsValid() {
		lo, hi := prefixRange(q.Addr)
		in := func(col string) string {
			return fmt.Sprintf("(%s >= unhex('%x') AND %s <= unhex('%x') AND %s != toFixedString('', 16))", col, lo, col, hi, col)
		}
		b.WriteString(" AND (" + in("src_addr") + " OR " + in("dst_addr") + ")")
	}
	return b.String(), args
}

// prefixRange is the first and last address of p as 16 bytes (IPv4 as
// mapped).
func prefixRange(p netip.Prefix) (lo, hi [16]byte) {
	lo = p.Masked().Addr().As16()
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	hi = lo
	for i := bits; i < 128; i++ {
		hi[i/8] |= 0x80 >> (i % 8)
	}
	return lo, hi
}

// spanSQL is the subquery of one span of q's plan: the rows of its level
// in [from, to), with their time t in ns and their flows; if neg, with
// every count negated (as UInt64: sum wraps, so the sum of a plan's
// spans is exact).
func (s *Storage) spanSQL(lvl string, from, to int64, neg bool, where string) string {
	counts := []string{"tx_pkts", "tx_bytes", "rx_pkts", "rx_bytes", "flows"}
	flows := "flows"
	if lvl == "window" {
		flows = "toUInt64(1)"
	}
	sel := []string{"node", "class", "proto", "src_addr", "src_port", "dst_addr", "dst_port"}
	for _, c := range counts {
		e := c
		if c == "flows" {
			e = flows
		}
		if neg {
			e = "bitNot(" + e + ") + 1"
		}
		sel = append(sel, e+" AS "+c)
	}
	cols := strings.Join(sel, ", ")
	if lvl == "window" {
		// The window_start bounds let the primary key (by hour) prune.
		return fmt.Sprintf(`SELECT %s, start_ns AS t FROM %s.flows
WHERE collection = ? AND window_start >= toDateTime(%d) AND window_start <= toDateTime(%d) AND start_ns >= %d AND start_ns < %d%s`,
			cols, s.db, from/1e9, (to-1)/1e9, from, to, where)
	}
	return fmt.Sprintf(`SELECT %s, toUInt64(period) * 1000000000 AS t FROM %s.%s
WHERE collection = ? AND period >= toDateTime(%d) AND period < toDateTime(%d)%s`, cols, s.db, lvl, from/1e9, to/1e9, where)
}

// Flows answers q with one statement: a UNION ALL of q's plan (whole
// hours from flows_1h, whole 10 minutes and minutes from flows_10m and
// flows_1m, ragged ends from flows, some of them subtracted), summed per
// group and bucket, leaving out the groups that net to no flows. Without
// buckets, q.Top is applied in SQL, ranked as collector.FinishRows ranks.
func (s *Storage) Flows(ctx context.Context, q collector.FlowQuery) ([]collector.FlowRow, error) {
	spans := collector.PlanSince(&q, map[string]int64{"10m": s.since10m})
	if len(spans) == 0 {
		return []collector.FlowRow{}, nil
	}
	where, fargs := filters(&q)
	var parts []string
	var args []any
	for _, sp := range spans {
		table := map[string]string{"window": "window", "minute": "flows_1m", "10m": "flows_10m", "hour": "flows_1h"}[sp.Level]
		parts = append(parts, s.spanSQL(table, sp.From, sp.To, sp.Neg, where))
		args = append(append(args, q.Collection), fargs...)
	}
	exprs := keyExprs(&q)
	sel := make([]string, len(exprs))
	for i, e := range exprs {
		sel[i] = e + " AS " + keyAliases[i]
	}
	bucket := "toUInt64(0)"
	if q.Bucket > 0 {
		bucket = fmt.Sprintf("intDiv(t, %d) * %d", int64(q.Bucket), int64(q.Bucket))
	}
	sql := fmt.Sprintf(`SELECT %s, %s AS k_bucket, sum(tx_pkts), sum(tx_bytes), sum(rx_pkts), sum(rx_bytes), sum(flows)
FROM (%s)
GROUP BY %s, k_bucket
HAVING sum(flows) != 0`, strings.Join(sel, ", "), bucket, strings.Join(parts, "\nUNION ALL\n"), strings.Join(keyAliases, ", "))
	if q.Top > 0 && q.Bucket == 0 {
		sql += fmt.Sprintf("\nORDER BY sum(tx_bytes) + sum(rx_bytes) DESC, %s\nLIMIT %d", strings.Join(keyAliases, ", "), q.Top)
	}
	rows, err := s.conn.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("clickhouse: flows: %w", err)
	}
	defer rows.Close()
	out := []collector.FlowRow{}
	for rows.Next() {
		var (
			r                collector.FlowRow
			src, dst, peer   string
			srcPort, dstPort uint16
			class            uint8
			bucketNs         uint64
		)
		if err := rows.Scan(&r.Node, &class, &r.Proto, &src, &srcPort, &dst, &dstPort, &peer, &bucketNs,
			&r.TxPkts, &r.TxBytes, &r.RxPkts, &r.RxBytes, &r.Flows); err != nil {
			return nil, fmt.Errorf("clickhouse: flows: %w", err)
		}
		r.Class = collector.Class(class)
		r.Src = collector.Endpoint{Addr: addrOf(src), Port: srcPort}
		r.Dst = collector.Endpoint{Addr: addrOf(dst), Port: dstPort}
		r.Peer = addrOf(peer)
		if q.Bucket > 0 {
			r.Bucket = time.Unix(0, int64(bucketNs)).UTC()
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("clickhouse: flows: %w", err)
	}
	return collector.FinishRows(&q, out), nil
}

// Nodes lists the nodes' first and last windows (from messages) and
// their tunnel bytes (from the hourly rollup).
func (s *Storage) Nodes(ctx context.Context, collection string) ([]collector.NodeRow, error) {
	byNode := map[string]*collector.NodeRow{}
	rows, err := s.conn.Query(ctx, "SELECT node, min(start_ns), max(end_ns) FROM "+s.db+".messages WHERE collection = ? AND has_window = 1 GROUP BY node", collection)
	if err != nil {
		return nil, fmt.Errorf("clickhouse: nodes: %w", err)
	}
	for rows.Next() {
		var node string
		var first, last uint64
		if err := rows.Scan(&node, &first, &last); err != nil {
			rows.Close()
			return nil, fmt.Errorf("clickhouse: nodes: %w", err)
		}
		byNode[node] = &collector.NodeRow{Node: node, FirstWindow: time.Unix(0, int64(first)).UTC(), LastWindow: time.Unix(0, int64(last)).UTC()}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("clickhouse: nodes: %w", err)
	}
	rows, err = s.conn.Query(ctx, "SELECT node, sum(tx_bytes), sum(rx_bytes) FROM "+s.db+".flows_1h WHERE collection = ? AND class != 4 GROUP BY node", collection)
	if err != nil {
		return nil, fmt.Errorf("clickhouse: nodes: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var node string
		var tx, rx uint64
		if err := rows.Scan(&node, &tx, &rx); err != nil {
			return nil, fmt.Errorf("clickhouse: nodes: %w", err)
		}
		if n := byNode[node]; n != nil {
			n.TxBytes, n.RxBytes = tx, rx
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("clickhouse: nodes: %w", err)
	}
	out := []collector.NodeRow{}
	for _, n := range byNode {
		out = append(out, *n)
	}
	slices.SortFunc(out, func(a, b collector.NodeRow) int { return strings.Compare(a.Node, b.Node) })
	return out, nil
}
