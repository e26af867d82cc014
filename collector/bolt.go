package collector

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"
)

// BoltStorage is the embedded Storage: one bbolt file (a B+tree,
// copy-on-write, one writer at a time, fsync on every commit), so an entry
// is on disk before Put returns and a crash leaves the last committed
// state.
//
// Layout: a bucket per collection ("c/NAME") holding
//
//	logs: 8-byte big-endian logged time (Unix ns) ‖ 8-byte sequence →
//	      uvarint length ‖ nodeId ‖ the entry's JSON
//	seen: 32-byte stream ‖ 1-byte length ‖ proc_id ‖ 8-byte proc_seq →
//	      8-byte logged time (kept for a future expiry)
//
// so a query seeks to its start time and reads forward to its end, and a
// node filter reads the node from the value's head without parsing JSON.
// There is no retention yet: entries stay until deleted by hand.
type BoltStorage struct {
	db *bolt.DB
	gc GroupCommit
}

var _ Storage = (*BoltStorage)(nil)

var (
	bucketLogs = []byte("logs")
	bucketSeen = []byte("seen")
)

// maxProcIDBytes bounds a proc_id used for deduplication (it is one byte
// of length in the key).
const maxProcIDBytes = 255

// OpenBolt opens (creating it if needed, mode 0600) the database file at
// path. It fails after a second if another process holds the file.
func OpenBolt(path string) (*BoltStorage, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      time.Second,
		FreelistType: bolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("collector: open %s: %w", path, err)
	}
	if err := db.Update(backfill10m); err != nil {
		db.Close()
		return nil, fmt.Errorf("collector: open %s: %w", path, err)
	}
	s := &BoltStorage{db: db}
	s.gc.Commit = s.commit
	return s, nil
}

// Put stores entries in a transaction committed (and fsynced) before it
// returns. Concurrent Puts share one transaction (GroupCommit): an fsync
// per group, not per upload.
func (s *BoltStorage) Put(ctx context.Context, entries []Entry) (int, error) {
	return s.gc.Put(ctx, entries)
}

// commit stores uploads in one transaction.
func (s *BoltStorage) commit(ctx context.Context, uploads [][]Entry) ([]int, error) {
	stored := make([]int, len(uploads))
	err := s.db.Update(func(tx *bolt.Tx) error {
		clear(stored)
		var (
			coll          string
			c, logs, seen *bolt.Bucket
		)
		var key [16]byte
		var seenKey []byte
		var sc indexScratch
		for u, entries := range uploads {
			for i := range entries {
				e := &entries[i]
				if logs == nil || e.Collection != coll {
					var err error
					c, err = tx.CreateBucketIfNotExists([]byte("c/" + e.Collection))
					if err != nil {
						return err
					}
					if logs, err = c.CreateBucketIfNotExists(bucketLogs); err != nil {
						return err
					}
					if seen, err = c.CreateBucketIfNotExists(bucketSeen); err != nil {
						return err
					}
					// Keys arrive in time order: fill pages up.
					logs.FillPercent = 0.95
					coll = e.Collection
				}
				ns := timeKey(e.Logged)
				if e.ProcID != "" && len(e.ProcID) <= maxProcIDBytes {
					seenKey = append(seenKey[:0], e.Stream[:]...)
					seenKey = append(seenKey, byte(len(e.ProcID)))
					seenKey = append(seenKey, e.ProcID...)
					seenKey = binary.BigEndian.AppendUint64(seenKey, e.ProcSeq)
					if seen.Get(seenKey) != nil {
						continue // a duplicate
					}
					if err := seen.Put(bytes.Clone(seenKey), binary.BigEndian.AppendUint64(nil, ns)); err != nil {
						return err
					}
				}
				seq, err := logs.NextSequence()
				if err != nil {
					return err
				}
				binary.BigEndian.PutUint64(key[:8], ns)
				binary.BigEndian.PutUint64(key[8:], seq)
				val := make([]byte, 0, binary.MaxVarintLen64+len(e.NodeID)+len(e.JSON))
				val = binary.AppendUvarint(val, uint64(len(e.NodeID)))
				val = append(val, e.NodeID...)
				val = append(val, e.JSON...)
				if err := logs.Put(bytes.Clone(key[:]), val); err != nil {
					return err
				}
				if e.Window != nil {
					if err := indexWindow(c, e, key, &sc); err != nil {
						return err
					}
				}
				stored[u]++
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("collector: storing entries: %w", err)
	}
	return stored, nil
}

// Query reads q's time range through the logs index (or, with
// q.ByWindow, the windows index).
func (s *BoltStorage) Query(ctx context.Context, q Query) ([]json.RawMessage, error) {
	out := []json.RawMessage{}
	if q.End.Before(q.Start) {
		return out, nil
	}
	if q.ByWindow {
		return s.queryByWindow(ctx, q)
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket([]byte("c/" + q.Collection))
		if c == nil {
			return nil
		}
		logs := c.Bucket(bucketLogs)
		if logs == nil {
			return nil
		}
		end := timeKey(q.End)
		var start [16]byte
		binary.BigEndian.PutUint64(start[:8], timeKey(q.Start))
		cur := logs.Cursor()
		n := 0
		for k, v := cur.Seek(start[:]); k != nil; k, v = cur.Next() {
			if len(k) != 16 || binary.BigEndian.Uint64(k[:8]) > end {
				break
			}
			if n++; n%4096 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			node, js, err := splitValue(v)
			if err != nil {
				return fmt.Errorf("key %x: %w", k, err)
			}
			if q.Node != "" && string(node) != q.Node {
				continue
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

// Close closes the database, after any transaction in progress.
func (s *BoltStorage) Close() error { return s.db.Close() }

// timeKey maps a time to its key: Unix nanoseconds, clamped to what a
// uint64 holds from 1970 on.
func timeKey(t time.Time) uint64 {
	switch {
	case t.Before(time.Unix(0, 0)):
		return 0
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return uint64(t.UnixNano())
}

var errBadValue = errors.New("malformed stored value")

// splitValue splits a logs value into node and JSON.
func splitValue(v []byte) (node, js []byte, err error) {
	n, w := binary.Uvarint(v)
	if w <= 0 || uint64(len(v)-w) < n {
		return nil, nil, errBadValue
	}
	return v[w : w+int(n)], v[w+int(n):], nil
}
