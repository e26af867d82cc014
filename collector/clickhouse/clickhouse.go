// Package clickhouse is a collector.Storage in ClickHouse, the shared
// store of a fleet: several `sidecar collect` processes on one database
// are interchangeable front ends (SPEC §11). It speaks the native
// protocol through github.com/ClickHouse/clickhouse-go/v2.
//
// Schema (created at Open if missing, in the DSN's database):
//
//	messages   two rows per stored entry, each with its keys, logged
//	           time, node and window: one with its JSON, one (for a
//	           window) with json '' and its flows as a Nested column f
//	           (see appendEntry); MergeTree, a partition per UTC day of
//	           logged, ordered by (collection, logged_ns)
//	flows      one row per flow per window; a materialized view of
//	           messages ARRAY JOIN f; a partition per UTC day of the
//	           window start, ordered by (collection, hour, node, start)
//	flows_1m,  every flow key summed per minute, per 10 minutes and
//	flows_10m, per hour: SummingMergeTree fed by materialized views of
//	flows_1h   messages
//	levels     (level, since): a rollup level added to a database that
//	           had data before it is used only from since on (see init)
//	seen       (collection, stream, proc_id, proc_seq) of every entry,
//	           ordered by that key: the deduplication index
//
// An upload is part of one INSERT into messages, shared with the uploads
// that arrive meanwhile (collector.GroupCommit); the views fill the rest
// from the same block, so a retry finds either all of an upload or none
// of it. Duplicates are refused before the INSERT by looking their keys
// up in seen, one statement per INSERT (see commit). Queries sum with GROUP BY, so the lazy merging of the
// SummingMergeTree tables never shows. Retention drops whole day
// partitions.
//
// The SQL is the subset that ClickHouse 18.16 (Debian's package) and
// current releases (22.4 on) both accept: DateTime (seconds) plus
// nanoseconds in UInt64 columns rather than DateTime64, addresses as
// FixedString(16) rather than IPv6, no TTL, no codecs; see Features for
// what is detected.
package clickhouse

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/wgsidecar/sidecar/collector"
)

// Features are what Open found the server to offer beyond the common
// subset.
type Features struct {
	// Version is the server's version, as it reports it.
	Version string
	// LowCardinality (19.x on) stores collection, node and proc_id as
	// LowCardinality(String) in new tables; older servers get String.
	LowCardinality bool
}

// Storage is a collector.Storage in ClickHouse. It is safe for
// concurrent use.
type Storage struct {
	conn     driver.Conn
	db       string // quoted
	features Features
	log      *slog.Logger
	gc       collector.GroupCommit
	// since10m is where flows_10m starts (Unix ns): 0, or in a database
	// it was added to, the first period after it was (see init).
	since10m int64
}

var _ collector.Storage = (*Storage)(nil)

var dbName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// Open connects to dsn (clickhouse://[USER[:PASSWORD]@]HOST:PORT/DATABASE,
// the native protocol), creates the database and schema if missing and
// returns the Storage. Its errors never include the password.
func Open(ctx context.Context, dsn string, log *slog.Logger) (*Storage, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opt, err := ch.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("clickhouse: the storage URL: want clickhouse://HOST:PORT/DATABASE (%s)", redactErr(err, dsn))
	}
	db := opt.Auth.Database
	if db == "" {
		db = "default"
	}
	if !dbName.MatchString(db) {
		return nil, fmt.Errorf("clickhouse: database name %q: want letters, digits and _", db)
	}
	opt.Auth.Database = "default"
	opt.DialTimeout = 10 * time.Second
	conn, err := ch.Open(opt)
	if err != nil {
		return nil, fmt.Errorf("clickhouse: %s", redactErr(err, dsn))
	}
	s := &Storage{conn: conn, db: "`" + db + "`", log: log}
	s.gc = collector.GroupCommit{Commit: s.commit, Delay: groupDelay, MaxDelay: groupMaxDelay, Timeout: 2 * time.Minute}
	if err := s.init(ctx); err != nil {
		conn.Close()
		var nerr *net.OpError
		if errors.As(err, &nerr) && nerr.Op == "dial" {
			return nil, fmt.Errorf("clickhouse: cannot connect to %s (is the server running, and is that its native port, 9000 by default?): %s", strings.Join(opt.Addr, ", "), redactErr(err, dsn))
		}
		return nil, fmt.Errorf("clickhouse: %s", redactErr(err, dsn))
	}
	log.Info("clickhouse storage", "version", s.features.Version, "lowCardinality", s.features.LowCardinality, "database", db)
	return s, nil
}

// redactErr is err's text with dsn's password removed.
func redactErr(err error, dsn string) string {
	msg := err.Error()
	if i := strings.Index(dsn, "://"); i >= 0 {
		if at := strings.LastIndex(dsn, "@"); at > i {
			if _, pass, ok := strings.Cut(dsn[i+3:at], ":"); ok && pass != "" {
				msg = strings.ReplaceAll(msg, pass, "REDACTED")
			}
		}
	}
	return msg
}

// Features reports what Open detected.
func (s *Storage) Features() Features { return s.features }

// init detects features and creates the schema.
func (s *Storage) init(ctx context.Context) error {
	if err := s.conn.QueryRow(ctx, "SELECT version()").Scan(&s.features.Version); err != nil {
		return err
	}
	major, _ := strconv.Atoi(strings.SplitN(s.features.Version, ".", 2)[0])
	s.features.LowCardinality = major >= 19
	// A database from before flows_10m (it has flows_1m, not flows_10m)
	// gets it with no backfill: the view fills it from now on, and
	// queries use it only for periods from since10m on (see levelSince).
	var had []string
	rows, err := s.conn.Query(ctx, "SELECT name FROM system.tables WHERE database = ? AND name IN ('flows_1m', 'flows_10m')", strings.Trim(s.db, "`"))
	if err != nil {
		return err
	}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			rows.Close()
			return err
		}
		had = append(had, name)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, stmt := range s.schema() {
		if err := s.conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("creating the schema: %w", err)
		}
		if strings.Contains(stmt, ".levels ") && slices.Contains(had, "flows_1m") && !slices.Contains(had, "flows_10m") {
			// Before flows_10m and its view exist: their first period
			// is one that starts well after them.
			err := s.conn.Exec(ctx, fmt.Sprintf("INSERT INTO %s.levels SELECT '10m', toDateTime((intDiv(toUInt32(now()), 600) + 1) * 600 + %d)", s.db, int(levelMargin.Seconds())))
			if err != nil {
				return fmt.Errorf("recording when flows_10m starts: %w", err)
			}
		}
	}
	var since time.Time
	if err := s.conn.QueryRow(ctx, "SELECT max(since) FROM "+s.db+".levels WHERE level = '10m'").Scan(&since); err != nil {
		return fmt.Errorf("reading when flows_10m starts: %w", err)
	}
	if since.Unix() > 0 {
		s.since10m = since.UnixNano()
	}
	return nil
}

// levelMargin is how long after it is added to a database a rollup
// level starts to be used: windows from before it was added may still
// arrive (nodes' clocks being late, or a stamped upload in flight while
// it was created) and would be missing from it.
const levelMargin = 10 * time.Minute

// schema is the statements that create the database and tables.
func (s *Storage) schema() []string {
	str := "String"
	if s.features.LowCardinality {
		str = "LowCardinality(String)"
	}
	db := s.db
	keys := "class UInt8, proto UInt8, src_addr FixedString(16), src_port UInt16, dst_addr FixedString(16), dst_port UInt16"
	sums := "tx_pkts UInt64, tx_bytes UInt64, rx_pkts UInt64, rx_bytes UInt64"
	keyNames := "class, proto, src_addr, src_port, dst_addr, dst_port"
	// The rollup views copy each flow with its period, not GROUP BY: the
	// flows of one INSERT rarely share a period and key (a node's
	// window holds each flow once), so grouping cost the server ~3 µs a
	// flow for nothing; SummingMergeTree sums them when it merges, and
	// queries GROUP BY anyway. (Views created with a GROUP BY by earlier
	// versions stay as they are: they sum the same.)
	rollup := func(table, period string) []string {
		return []string{
			fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.%s (collection %s, node %s, period DateTime, %s, %s, flows UInt64)
ENGINE = SummingMergeTree() PARTITION BY toYYYYMMDD(period) ORDER BY (collection, period, node, %s)`, db, table, str, str, keys, sums, keyNames),
			fmt.Sprintf(`CREATE MATERIALIZED VIEW IF NOT EXISTS %s.%s_mv TO %s.%s AS
SELECT collection, node, %s AS period, f.class AS class, f.proto AS proto, f.src_addr AS src_addr, f.src_port AS src_port,
  f.dst_addr AS dst_addr, f.dst_port AS dst_port, f.tx_pkts AS tx_pkts, f.tx_bytes AS tx_bytes,
  f.rx_pkts AS rx_pkts, f.rx_bytes AS rx_bytes, toUInt64(1) AS flows
FROM %s.messages ARRAY JOIN f`, db, table, db, table, periodExpr(period), db),
		}
	}
	out := []string{
		"CREATE DATABASE IF NOT EXISTS " + db,
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.messages (
  collection %s, stream FixedString(32), proc_id %s, proc_seq UInt64, logged DateTime, logged_ns UInt64, seq UInt32,
  node %s, has_window UInt8, window_start DateTime, start_ns UInt64, end_ns UInt64, json String,
  f Nested(%s, %s))
ENGINE = MergeTree() PARTITION BY toYYYYMMDD(logged) ORDER BY (collection, logged_ns, seq)`, db, str, str, str, keys, sums),
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.flows (collection %s, node %s, window_start DateTime, start_ns UInt64, end_ns UInt64,
  %s, %s, stream FixedString(32), proc_id %s, proc_seq UInt64)
ENGINE = MergeTree() PARTITION BY toYYYYMMDD(window_start) ORDER BY (collection, toStartOfHour(window_start), node, start_ns)`, db, str, str, keys, sums, str),
		fmt.Sprintf(`CREATE MATERIALIZED VIEW IF NOT EXISTS %s.flows_mv TO %s.flows AS
SELECT collection, node, window_start, start_ns, end_ns, f.class AS class, f.proto AS proto, f.src_addr AS src_addr, f.src_port AS src_port,
  f.dst_addr AS dst_addr, f.dst_port AS dst_port, f.tx_pkts AS tx_pkts, f.tx_bytes AS tx_bytes, f.rx_pkts AS rx_pkts, f.rx_bytes AS rx_bytes,
  stream, proc_id, proc_seq
FROM %s.messages ARRAY JOIN f`, db, db, db),
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.levels (level String, since DateTime)
ENGINE = MergeTree() ORDER BY level`, db),
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.seen (collection %s, stream FixedString(32), proc_id %s, proc_seq UInt64, logged DateTime)
ENGINE = MergeTree() PARTITION BY toYYYYMMDD(logged) ORDER BY (collection, stream, proc_id, proc_seq)`, db, str, str),
		fmt.Sprintf(`CREATE MATERIALIZED VIEW IF NOT EXISTS %s.seen_mv TO %s.seen AS
SELECT collection, stream, proc_id, proc_seq, logged FROM %s.messages WHERE proc_id != '' AND json != ''`, db, db, db),
	}
	out = append(out, rollup("flows_1m", "toStartOfMinute")...)
	out = append(out, rollup("flows_10m", "toStartOfTenMinutes")...)
	return append(out, rollup("flows_1h", "toStartOfHour")...)
}

// periodExpr is the SQL of the period of window_start, by the name of a
// function of current ClickHouse; toStartOfTenMinutes, which 18.16
// lacks, as arithmetic.
func periodExpr(fn string) string {
	if fn == "toStartOfTenMinutes" {
		return "toDateTime(intDiv(toUInt32(window_start), 600) * 600)"
	}
	return fn + "(window_start)"
}

// Close closes the connections.
func (s *Storage) Close() error { return s.conn.Close() }

// seqKey identifies the entries of one (collection, stream, proc_id).
type seqKey struct {
	collection string
	stream     [32]byte
	procID     string
}

// groupDelay is how long an upload waits for others to share its
// INSERT when none is running.
const groupDelay = 20 * time.Millisecond

// groupMaxDelay bounds how long a group waits while uploads keep
// joining it (collector.GroupCommit.MaxDelay).
const groupMaxDelay = 300 * time.Millisecond

// Put stores entries, sharing one INSERT with the uploads that arrive
// meanwhile (collector.GroupCommit): an INSERT costs the server a part
// per table and view whatever its size (~0.3 s on 18.16 here), so one
// per upload caps a collector at a few uploads a second. Put returns
// once the INSERT holding its entries has succeeded.
func (s *Storage) Put(ctx context.Context, entries []collector.Entry) (int, error) {
	return s.gc.Put(ctx, entries)
}

// commit refuses the entries whose (collection, stream, proc_id,
// proc_seq) is in seen (or earlier in the uploads), then stores the rest
// in one INSERT.
//
// Why this and not deduplication at query time: the rollups are summed
// as rows arrive, and a sum cannot be told later which of its parts were
// duplicates, so a duplicate must never reach messages. The check and
// the INSERT are two statements, so two replicas given the same upload
// at the same moment could both store it; logtail sends a retry only
// after the previous attempt failed or timed out, and the INSERT of the
// first attempt is one statement that has either landed (and is found in
// seen) or failed when the retry arrives, unless the first replica is
// still inserting when the client gives up.
func (s *Storage) commit(ctx context.Context, uploads [][]collector.Entry) ([]int, error) {
	var all []collector.Entry
	for _, u := range uploads {
		all = append(all, u...)
	}
	dup, err := s.duplicates(ctx, all)
	if err != nil {
		return nil, err
	}
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.db+`.messages (collection, stream, proc_id, proc_seq, logged, logged_ns, seq,
  node, has_window, window_start, start_ns, end_ns, json, f.class, f.proto, f.src_addr, f.src_port, f.dst_addr, f.dst_port,
  f.tx_pkts, f.tx_bytes, f.rx_pkts, f.rx_bytes)`)
	if err != nil {
		return nil, fmt.Errorf("clickhouse: %w", err)
	}
	stored := make([]int, len(uploads))
	total := 0
	i := 0 // index in all; also seq, the order of entries logged at the same time
	for u, entries := range uploads {
		for k := range entries {
			e := &entries[k]
			if dup[i] {
				i++
				continue
			}
			if err := appendEntry(batch, e, uint32(i)); err != nil {
				batch.Abort()
				return nil, fmt.Errorf("clickhouse: %w", err)
			}
			i++
			stored[u]++
			total++
		}
	}
	if total == 0 {
		batch.Abort()
		return stored, nil
	}
	if err := batch.Send(); err != nil {
		return nil, fmt.Errorf("clickhouse: storing entries: %w", err)
	}
	return stored, nil
}

// appendEntry appends e to the INSERT into messages as two rows: the
// entry with its JSON (and no flows), then, for a window, the same keys
// with its flows and an empty json. ClickHouse 18.16 copies every column
// of a block through a view's ARRAY JOIN, the unused ones too: with the
// JSON beside the flows, each flow carried a copy of its message's JSON
// (~150 kB), and one INSERT of 90 windows of 1,000 flows took 38 s; apart,
// 1-2 s. Both rows are in one block, so an upload is still all or none.
func appendEntry(batch driver.Batch, e *collector.Entry, seq uint32) error {
	var (
		hasWindow          uint8
		wstart             = time.Unix(0, 0)
		startNs, endNs     uint64
		class, proto       []uint8
		srcAddr, dstAddr   [][]byte
		srcPort, dstPort   []uint16
		txp, txb, rxp, rxb []uint64
	)
	if w := e.Window; w != nil {
		hasWindow = 1
		startNs, endNs = nanos(w.Start), nanos(w.End)
		wstart = time.Unix(int64(startNs/1e9), 0)
	}
	logged := nanos(e.Logged)
	loggedS := time.Unix(int64(logged/1e9), 0)
	err := batch.Append(e.Collection, e.Stream[:], e.ProcID, e.ProcSeq, loggedS, logged, seq,
		e.NodeID, hasWindow, wstart, startNs, endNs, string(e.JSON), class, proto, srcAddr, srcPort, dstAddr, dstPort, txp, txb, rxp, rxb)
	if err != nil || e.Window == nil || len(e.Window.Flows) == 0 {
		return err
	}
	flows := e.Window.Flows
	n := len(flows)
	class, proto = make([]uint8, 0, n), make([]uint8, 0, n)
	srcAddr, dstAddr = make([][]byte, 0, n), make([][]byte, 0, n)
	srcPort, dstPort = make([]uint16, 0, n), make([]uint16, 0, n)
	txp, txb, rxp, rxb = make([]uint64, 0, n), make([]uint64, 0, n), make([]uint64, 0, n), make([]uint64, 0, n)
	addrs := make([]byte, 32*n) // every flow's two addresses in one allocation
	for i, f := range flows {
		class = append(class, uint8(f.Class))
		proto = append(proto, f.Proto)
		srcAddr = append(srcAddr, put16(addrs[32*i:32*i+16], f.Src.Addr))
		dstAddr = append(dstAddr, put16(addrs[32*i+16:32*i+32], f.Dst.Addr))
		srcPort = append(srcPort, f.Src.Port)
		dstPort = append(dstPort, f.Dst.Port)
		txp, txb = append(txp, f.TxPkts), append(txb, f.TxBytes)
		rxp, rxb = append(rxp, f.RxPkts), append(rxb, f.RxBytes)
	}
	return batch.Append(e.Collection, e.Stream[:], e.ProcID, e.ProcSeq, loggedS, logged, seq,
		e.NodeID, hasWindow, wstart, startNs, endNs, "", class, proto, srcAddr, srcPort, dstAddr, dstPort, txp, txb, rxp, rxb)
}

// duplicates marks the entries already stored, or repeated in entries.
func (s *Storage) duplicates(ctx context.Context, entries []collector.Entry) ([]bool, error) {
	dup := make([]bool, len(entries))
	type span struct{ lo, hi uint64 }
	spans := map[seqKey]*span{}
	for i := range entries {
		e := &entries[i]
		if e.ProcID == "" {
			continue
		}
		k := seqKey{e.Collection, e.Stream, e.ProcID}
		if sp := spans[k]; sp == nil {
			spans[k] = &span{e.ProcSeq, e.ProcSeq}
		} else {
			sp.lo, sp.hi = min(sp.lo, e.ProcSeq), max(sp.hi, e.ProcSeq)
		}
	}
	type seqID struct {
		seqKey
		seq uint64
	}
	seen := map[seqID]bool{}
	if len(spans) > 0 {
		// One statement for every stream of the group: an OR of ranges
		// of seen's primary key.
		var where []string
		var args []any
		for k, sp := range spans {
			where = append(where, "(collection = ? AND stream = unhex(?) AND proc_id = ? AND proc_seq >= ? AND proc_seq <= ?)")
			args = append(args, k.collection, hex.EncodeToString(k.stream[:]), k.procID, sp.lo, sp.hi)
		}
		rows, err := s.conn.Query(ctx, "SELECT collection, hex(stream), proc_id, proc_seq FROM "+s.db+".seen WHERE "+strings.Join(where, " OR "), args...)
		if err != nil {
			return nil, fmt.Errorf("clickhouse: looking up duplicates: %w", err)
		}
		for rows.Next() {
			var id seqID
			var stream string
			if err := rows.Scan(&id.collection, &stream, &id.procID, &id.seq); err != nil {
				rows.Close()
				return nil, fmt.Errorf("clickhouse: looking up duplicates: %w", err)
			}
			if b, err := hex.DecodeString(stream); err == nil && len(b) == 32 {
				id.stream = [32]byte(b)
				seen[id] = true
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("clickhouse: looking up duplicates: %w", err)
		}
	}
	for i := range entries {
		e := &entries[i]
		if e.ProcID == "" {
			continue
		}
		id := seqID{seqKey{e.Collection, e.Stream, e.ProcID}, e.ProcSeq}
		dup[i] = seen[id]
		seen[id] = true
	}
	return dup, nil
}

// nanos is t in Unix ns, clamped to [0, MaxInt64].
func nanos(t time.Time) uint64 {
	switch {
	case t.Before(time.Unix(0, 0)):
		return 0
	case t.After(time.Unix(0, 1<<63-1)):
		return 1<<63 - 1
	}
	return uint64(t.UnixNano())
}

// put16 writes a's 16 bytes (IPv4 mapped; zeros for no address) into b
// and returns b.
func put16(b []byte, a netip.Addr) []byte {
	if a.IsValid() {
		a16 := a.As16()
		copy(b, a16[:])
	}
	return b
}

// addrOf undoes put16.
func addrOf(b string) netip.Addr {
	if len(b) != 16 || b == string(make([]byte, 16)) {
		return netip.Addr{}
	}
	return netip.AddrFrom16([16]byte([]byte(b))).Unmap()
}

// Query reads entries by logged time or (q.ByWindow) by window start.
func (s *Storage) Query(ctx context.Context, q collector.Query) ([]json.RawMessage, error) {
	out := []json.RawMessage{}
	if q.End.Before(q.Start) {
		return out, nil
	}
	col, order := "logged_ns", "logged_ns, seq"
	where := ""
	if q.ByWindow {
		col, order, where = "start_ns", "start_ns, logged_ns, seq", " AND has_window = 1"
	}
	args := []any{q.Collection, nanos(q.Start), nanos(q.End)}
	if q.Node != "" {
		where += " AND node = ?"
		args = append(args, q.Node)
	}
	// json = '': the flows row of an entry (see appendEntry).
	sql := fmt.Sprintf("SELECT json FROM %s.messages WHERE collection = ? AND %s >= ? AND %s <= ? AND json != ''%s ORDER BY %s", s.db, col, col, where, order)
	if q.Limit > 0 {
		sql += " LIMIT " + strconv.Itoa(q.Limit)
	}
	rows, err := s.conn.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("clickhouse: query: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var js string
		if err := rows.Scan(&js); err != nil {
			return nil, fmt.Errorf("clickhouse: query: %w", err)
		}
		out = append(out, json.RawMessage(js))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("clickhouse: query: %w", err)
	}
	return out, nil
}

// Expire drops the day partitions before the UTC day of cutoff, in every
// table.
func (s *Storage) Expire(ctx context.Context, cutoff time.Time) error {
	day, _ := strconv.Atoi(cutoff.UTC().Format("20060102"))
	rows, err := s.conn.Query(ctx, "SELECT DISTINCT table, partition FROM system.parts WHERE database = ? AND active AND table IN ('messages', 'flows', 'flows_1m', 'flows_10m', 'flows_1h', 'seen')",
		strings.Trim(s.db, "`"))
	if err != nil {
		return fmt.Errorf("clickhouse: expire: %w", err)
	}
	type part struct {
		table string
		day   int
	}
	var drop []part
	for rows.Next() {
		var table, partition string
		if err := rows.Scan(&table, &partition); err != nil {
			rows.Close()
			return fmt.Errorf("clickhouse: expire: %w", err)
		}
		if d, err := strconv.Atoi(strings.Trim(partition, "'")); err == nil && d < day {
			drop = append(drop, part{table, d})
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("clickhouse: expire: %w", err)
	}
	for _, p := range drop {
		if err := s.conn.Exec(ctx, fmt.Sprintf("ALTER TABLE %s.%s DROP PARTITION %d", s.db, p.table, p.day)); err != nil {
			return fmt.Errorf("clickhouse: expire %s day %d: %w", p.table, p.day, err)
		}
		s.log.Info("clickhouse: dropped a day", "table", p.table, "day", p.day)
	}
	return nil
}
