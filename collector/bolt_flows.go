package collector

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The flow index of BoltStorage, in each collection's bucket beside logs
// and seen. Every key starts with the node (1-byte length ‖ node ID) and
// an 8-byte big-endian time (Unix ns), so one node's stretch of time is
// one cursor run, and a query over every node runs one per node:
//
//	win:    node ‖ window start ‖ logs key (16) → the window's rows
//	minute: node ‖ minute ‖ 2-byte chunk        → rows summed per minute
//	10min:  node ‖ 10 minutes ‖ 2-byte chunk    → rows summed per 10 min
//	hour:   node ‖ hour ‖ 2-byte chunk          → rows summed per hour
//	nodes:  node ‖ UTC day                      → first start, last end,
//	        tx and rx bytes of the tunnel classes (8 bytes each)
//
// Rows are blobs (see encodeRows). A rollup period's rows are kept in
// chunks of at most maxChunkRows rows, so that adding a window rewrites
// one chunk, not the whole period. Node IDs over 255 bytes are not
// indexed (their entries are stored and served by /api/v1/logs).
var (
	bucketWin    = []byte("win")
	bucketNodes  = []byte("nodes")
	levelBuckets = [...][]byte{levelWindow: bucketWin, levelMinute: []byte("minute"), level10m: []byte("10min"), levelHour: []byte("hour")}
)

// maxChunkRows bounds a rollup chunk.
const maxChunkRows = 4096

// nodeKey is a key's node prefix, or nil if node is too long.
func nodeKey(node string) []byte {
	if len(node) > 255 {
		return nil
	}
	return append([]byte{byte(len(node))}, node...)
}

// indexScratch is the scratch space of indexing windows: one per
// transaction, reused window after window.
type indexScratch struct {
	rows, old, merged []rollupRow
	r                 blobReader
	en                rowEncoder
	key               []byte
}

// indexWindow adds e's window to the index of collection bucket c; lk is
// e's logs key.
func indexWindow(c *bolt.Bucket, e *Entry, lk [16]byte, sc *indexScratch) error {
	nk := nodeKey(e.NodeID)
	if nk == nil {
		return nil
	}
	w := e.Window
	start := int64(timeKey(w.Start))
	rows := sc.rows[:0]
	var tx, rx uint64
	for i := range w.Flows {
		rows = append(rows, rollupRow{Flow: w.Flows[i], Flows: 1})
		if w.Flows[i].Class != ClassPhysical {
			tx += w.Flows[i].TxBytes
			rx += w.Flows[i].RxBytes
		}
	}
	rows = normRows(rows)
	sc.rows = rows
	b, err := c.CreateBucketIfNotExists(bucketWin)
	if err != nil {
		return err
	}
	key := binary.BigEndian.AppendUint64(bytes.Clone(nk), uint64(start))
	if err := b.Put(append(key, lk[:]...), sc.en.encode(rows)); err != nil {
		return err
	}
	for lvl := levelMinute; lvl <= levelHour; lvl++ {
		if err := sc.addRollup(c, lvl, nk, floorNs(start, levelPeriods[lvl]), rows); err != nil {
			return err
		}
	}
	return addNodeDay(c, nk, start, int64(timeKey(w.End)), tx, rx)
}

// addRollup sums rows (normalised) into the last chunk of node nk's
// period at lvl, or into a new chunk if the sum would be over
// maxChunkRows. A chunk's rows are kept normalised, so the sum is one
// merge.
func (sc *indexScratch) addRollup(c *bolt.Bucket, lvl level, nk []byte, period int64, rows []rollupRow) error {
	b, err := c.CreateBucketIfNotExists(levelBuckets[lvl])
	if err != nil {
		return err
	}
	prefix := binary.BigEndian.AppendUint64(append(sc.key[:0], nk...), uint64(period))
	sc.key = prefix
	cur := b.Cursor()
	chunk := uint16(0)
	sums := rows
	k, v := cur.Seek(append(prefix, 0xff, 0xff))
	if k == nil {
		k, v = cur.Last()
	} else {
		k, v = cur.Prev()
	}
	if k != nil && len(k) == len(prefix)+2 && bytes.HasPrefix(k, prefix) {
		chunk = binary.BigEndian.Uint16(k[len(prefix):])
		old := sc.old[:0]
		if err := sc.r.decode(v, func(row *rollupRow) { old = append(old, *row) }); err != nil {
			return fmt.Errorf("key %x: %w", k, err)
		}
		old = normRows(old) // chunks written before rows were kept sorted
		sc.old = old
		sc.merged = mergeRows(sc.merged[:0], old, rows)
		if len(sc.merged) > maxChunkRows && chunk < math.MaxUint16 {
			chunk++
		} else {
			sums = sc.merged
		}
	}
	key := binary.BigEndian.AppendUint16(bytes.Clone(prefix), chunk)
	return b.Put(key, sc.en.encode(sums))
}

// backfill10m builds the 10-minute rollups of a database written before
// they existed from its minute rollups, in each collection that has
// minute rollups and no 10-minute ones, so queries may plan with them
// over any range.
func backfill10m(tx *bolt.Tx) error {
	return tx.ForEach(func(name []byte, c *bolt.Bucket) error {
		minutes := c.Bucket(levelBuckets[levelMinute])
		if !bytes.HasPrefix(name, []byte("c/")) || minutes == nil || c.Bucket(levelBuckets[level10m]) != nil {
			return nil
		}
		var sc indexScratch
		var rows []rollupRow
		return minutes.ForEach(func(k, v []byte) error {
			nk, t, ok := splitKey(k)
			if !ok {
				return nil
			}
			rows = rows[:0]
			if err := sc.r.decode(v, func(row *rollupRow) { rows = append(rows, *row) }); err != nil {
				return fmt.Errorf("key %x: %w", k, err)
			}
			return sc.addRollup(c, level10m, bytes.Clone(nk), floorNs(t, levelPeriods[level10m]), normRows(rows))
		})
	})
}

// addNodeDay adds a window to node nk's summary of its day.
func addNodeDay(c *bolt.Bucket, nk []byte, start, end int64, tx, rx uint64) error {
	b, err := c.CreateBucketIfNotExists(bucketNodes)
	if err != nil {
		return err
	}
	key := binary.BigEndian.AppendUint64(bytes.Clone(nk), uint64(floorNs(start, 24*time.Hour)))
	var val [32]byte
	first, last := start, end
	if old := b.Get(key); len(old) == 32 {
		first = min(first, int64(binary.BigEndian.Uint64(old[0:])))
		last = max(last, int64(binary.BigEndian.Uint64(old[8:])))
		tx += binary.BigEndian.Uint64(old[16:])
		rx += binary.BigEndian.Uint64(old[24:])
	}
	binary.BigEndian.PutUint64(val[0:], uint64(first))
	binary.BigEndian.PutUint64(val[8:], uint64(last))
	binary.BigEndian.PutUint64(val[16:], tx)
	binary.BigEndian.PutUint64(val[24:], rx)
	return b.Put(key, val[:])
}

// splitKey splits an index key into its node prefix and time, or
// reports false for a key that is not one.
func splitKey(k []byte) (nk []byte, t int64, ok bool) {
	if len(k) < 1 || len(k) < 1+int(k[0])+8 {
		return nil, 0, false
	}
	n := 1 + int(k[0])
	return k[:n], int64(binary.BigEndian.Uint64(k[n:])), true
}

// nodePrefixes returns the node prefixes of collection bucket c (from the
// nodes summary), or just nk of node if it is not empty.
func nodePrefixes(c *bolt.Bucket, node string) [][]byte {
	if node != "" {
		if nk := nodeKey(node); nk != nil {
			return [][]byte{nk}
		}
		return nil
	}
	b := c.Bucket(bucketNodes)
	if b == nil {
		return nil
	}
	var out [][]byte
	cur := b.Cursor()
	for k, _ := cur.First(); k != nil; {
		nk, _, ok := splitKey(k)
		if !ok {
			k, _ = cur.Next()
			continue
		}
		out = append(out, bytes.Clone(nk))
		k, _ = cur.Seek(afterNode(nk))
	}
	return out
}

// afterNode is a key past every key of node prefix nk.
func afterNode(nk []byte) []byte {
	return append(bytes.Clone(nk), bytes.Repeat([]byte{0xff}, 8+16+1)...)
}

// scan calls fn for each key of node nk in level bucket b whose time lies
// in [from, to), with the time and value.
func scan(ctx context.Context, b *bolt.Bucket, nk []byte, from, to int64, fn func(t int64, k, v []byte) error) error {
	cur := b.Cursor()
	n := 0
	for k, v := cur.Seek(binary.BigEndian.AppendUint64(bytes.Clone(nk), uint64(from))); k != nil; k, v = cur.Next() {
		knk, t, ok := splitKey(k)
		if !ok || !bytes.Equal(knk, nk) || t >= to {
			return nil
		}
		if n++; n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if err := fn(t, k, v); err != nil {
			return err
		}
	}
	return nil
}

// Flows answers q from the index: each span of q's plan from its level,
// one cursor run per node.
func (s *BoltStorage) Flows(ctx context.Context, q FlowQuery) ([]FlowRow, error) {
	agg := newAggregator(&q)
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket([]byte("c/" + q.Collection))
		if c == nil {
			return nil
		}
		nodes := nodePrefixes(c, q.Node)
		ids := make([]uint32, len(nodes))
		for i, nk := range nodes {
			ids[i] = agg.node(string(nk[1:]))
		}
		var r blobReader
		for _, sp := range q.plan() {
			b := c.Bucket(levelBuckets[sp.lvl])
			if b == nil {
				continue
			}
			for i, nk := range nodes {
				err := scan(ctx, b, nk, sp.from, sp.to, func(t int64, k, v []byte) error {
					if err := agg.addBlob(ids[i], t, sp.neg, v, &r); err != nil {
						return fmt.Errorf("key %x: %w", k, err)
					}
					return nil
				})
				if err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("collector: flows: %w", err)
	}
	return FinishRows(&q, agg.rows()), nil
}

// Nodes sums the nodes' day summaries.
func (s *BoltStorage) Nodes(ctx context.Context, collection string) ([]NodeRow, error) {
	out := []NodeRow{}
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket([]byte("c/" + collection))
		if c == nil || c.Bucket(bucketNodes) == nil {
			return nil
		}
		return c.Bucket(bucketNodes).ForEach(func(k, v []byte) error {
			nk, _, ok := splitKey(k)
			if !ok || len(v) != 32 {
				return fmt.Errorf("nodes key %x: %w", k, errBadValue)
			}
			first := time.Unix(0, int64(binary.BigEndian.Uint64(v[0:]))).UTC()
			last := time.Unix(0, int64(binary.BigEndian.Uint64(v[8:]))).UTC()
			if len(out) == 0 || out[len(out)-1].Node != string(nk[1:]) {
				out = append(out, NodeRow{Node: string(nk[1:]), FirstWindow: first, LastWindow: last})
			}
			n := &out[len(out)-1]
			if first.Before(n.FirstWindow) {
				n.FirstWindow = first
			}
			if last.After(n.LastWindow) {
				n.LastWindow = last
			}
			n.TxBytes += binary.BigEndian.Uint64(v[16:])
			n.RxBytes += binary.BigEndian.Uint64(v[24:])
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("collector: nodes: %w", err)
	}
	return out, nil
}

// queryByWindow answers a Query by window start through the win index.
func (s *BoltStorage) queryByWindow(ctx context.Context, q Query) ([]json.RawMessage, error) {
	out := []json.RawMessage{}
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket([]byte("c/" + q.Collection))
		if c == nil || c.Bucket(bucketWin) == nil || c.Bucket(bucketLogs) == nil {
			return nil
		}
		type hit struct {
			t  int64
			lk []byte
		}
		var hits []hit
		from, to := clampNs(q.Start), clampNs(q.End)
		if to < math.MaxInt64 {
			to++ // inclusive
		}
		for _, nk := range nodePrefixes(c, q.Node) {
			err := scan(ctx, c.Bucket(bucketWin), nk, from, to, func(t int64, k, _ []byte) error {
				hits = append(hits, hit{t, k[len(k)-16:]})
				return nil
			})
			if err != nil {
				return err
			}
		}
		slices.SortFunc(hits, func(a, b hit) int {
			if a.t != b.t {
				return int(max(-1, min(1, a.t-b.t)))
			}
			return bytes.Compare(a.lk, b.lk)
		})
		logs := c.Bucket(bucketLogs)
		for _, h := range hits {
			v := logs.Get(h.lk)
			if v == nil {
				continue // expired
			}
			_, js, err := splitValue(v)
			if err != nil {
				return fmt.Errorf("key %x: %w", h.lk, err)
			}
			out = append(out, bytes.Clone(js))
			if q.Limit > 0 && len(out) >= q.Limit {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("collector: query: %w", err)
	}
	return out, nil
}

// expireBatch bounds the keys one expiry transaction deletes.
const expireBatch = 10_000

// Expire deletes, a batch of keys per transaction, every entry logged and
// every window starting before the UTC day that holds cutoff.
func (s *BoltStorage) Expire(ctx context.Context, cutoff time.Time) error {
	before := floorNs(clampNs(cutoff), 24*time.Hour)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := 0
		err := s.db.Update(func(tx *bolt.Tx) error {
			return tx.ForEach(func(name []byte, c *bolt.Bucket) error {
				if !bytes.HasPrefix(name, []byte("c/")) {
					return nil
				}
				var dead [][]byte
				collect := func(k []byte) bool {
					dead = append(dead, bytes.Clone(k))
					return len(dead) < expireBatch
				}
				if b := c.Bucket(bucketLogs); b != nil {
					cur := b.Cursor()
					for k, _ := cur.First(); k != nil && len(k) == 16 && int64(binary.BigEndian.Uint64(k)) < before && collect(k); k, _ = cur.Next() {
					}
					if err := deleteKeys(b, dead); err != nil {
						return err
					}
					n += len(dead)
					dead = dead[:0]
				}
				if b := c.Bucket(bucketSeen); b != nil {
					b.ForEach(func(k, v []byte) error {
						if len(v) == 8 && int64(binary.BigEndian.Uint64(v)) < before && len(dead) < expireBatch {
							dead = append(dead, bytes.Clone(k))
						}
						return nil
					})
					if err := deleteKeys(b, dead); err != nil {
						return err
					}
					n += len(dead)
					dead = dead[:0]
				}
				for _, name := range append(levelBuckets[:], bucketNodes) {
					b := c.Bucket(name)
					if b == nil {
						continue
					}
					cur := b.Cursor()
				nodes:
					for k, _ := cur.First(); k != nil; {
						nk, t, ok := splitKey(k)
						if ok && t < before {
							if !collect(k) {
								break nodes
							}
							k, _ = cur.Next()
							continue
						}
						if !ok {
							k, _ = cur.Next()
							continue
						}
						k, _ = cur.Seek(afterNode(nk))
					}
					if err := deleteKeys(b, dead); err != nil {
						return err
					}
					n += len(dead)
					dead = dead[:0]
				}
				return nil
			})
		})
		if err != nil {
			return fmt.Errorf("collector: expire: %w", err)
		}
		if n == 0 {
			return nil
		}
	}
}

func deleteKeys(b *bolt.Bucket, keys [][]byte) error {
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
