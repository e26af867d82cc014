package collector

import (
	"context"
	"encoding/json"
	"time"
)

// Storage keeps accepted entries and answers queries over them. The
// embedded default is BoltStorage; a shared backend (a SQL or object
// store, say) implements the same interface and is passed in
// Config.Storage. Implementations must be safe for concurrent use.
type Storage interface {
	// Put stores entries durably, all or none, before it returns: after a
	// nil error they survive a crash of the process or the machine. It
	// skips an entry whose (Collection, Stream, ProcID, ProcSeq) is
	// already stored, when ProcID is set, and returns how many it stored.
	Put(ctx context.Context, entries []Entry) (stored int, err error)
	// Query returns the entries of q.Collection whose Logged time (or window
	// start, see Query.ByWindow) lies in
	// [q.Start, q.End] (inclusive) and, if q.Node is set, whose NodeID is
	// q.Node, oldest first, entries logged at the same time in the order
	// they were stored. It returns at most q.Limit entries if q.Limit > 0.
	Query(ctx context.Context, q Query) ([]json.RawMessage, error)
	// Flows answers a FlowQuery: rows summed per group (and bucket), in
	// FinishRows's order, q.Top applied.
	Flows(ctx context.Context, q FlowQuery) ([]FlowRow, error)
	// Nodes lists the nodes that have windows in collection, by node ID.
	Nodes(ctx context.Context, collection string) ([]NodeRow, error)
	// Expire drops every whole UTC day before the one holding cutoff: the
	// entries logged in it and the windows starting in it, with their
	// rollups and their deduplication keys.
	Expire(ctx context.Context, cutoff time.Time) error
	// Close releases the storage.
	Close() error
}

// An Entry is one accepted log entry, ready to store. The collector fills
// every field from the upload, so a Storage need not parse JSON.
type Entry struct {
	Collection string
	// Stream is the stream's public ID: the SHA-256 of its private ID.
	Stream [32]byte
	// Logged is when the collector received the entry; JSON holds it too.
	Logged time.Time
	// NodeID is the entry's "nodeId" member, if it is a string.
	NodeID string
	// ProcID and ProcSeq are the entry's logtail.proc_id and
	// logtail.proc_seq; ProcID is empty if the entry has no usable pair,
	// and such an entry is never taken for a duplicate.
	ProcID  string
	ProcSeq uint64
	// JSON is the entry as stored and served: one compact JSON object,
	// with "logged" (RFC 3339, nanoseconds, UTC) set by the collector.
	JSON json.RawMessage
	// Window is the entry's window and flows if it is a flow-log message
	// (it has RFC 3339 "start" and "end"), else nil.
	Window *Window
}

// A Query selects entries of one collection by logged time, inclusive at
// both ends, and optionally by node.
type Query struct {
	Collection string
	Start, End time.Time
	Node       string // "" for every node
	Limit      int    // at most this many entries; 0 for no limit
	// ByWindow selects by the window's start instead of the logged time:
	// flow-log entries whose window starts in [Start, End], ordered by
	// window start, then as stored; entries without a window are left
	// out.
	ByWindow bool
}
