package stats

import (
	"math/bits"
	"runtime"
	"slices"
	"sync/atomic"
	"unsafe"
)

// Slot states.
const (
	slotEmpty   = 0
	slotWriting = 1 // claimed; key being written
	slotReady   = 2 // key readable; counters live
)

// Counters are packed: packets in the top 24 bits, bytes in the low 40, so
// that one atomic add counts a packet. A window is cut early long before
// either field could overflow (see overflowMask).
const (
	pktShift = 40
	byteMask = 1<<pktShift - 1
	// overflowMask is set once a flow has 2^23 packets or 2^39 bytes (512
	// GiB) in one direction of one window: the writer that sees it cuts
	// the window, leaving 2^23 packets of headroom in each field.
	overflowMask = 1<<63 | 1<<39
)

// entry is one flow of one window: 64 bytes, one cache line (tables are
// large allocations, so page-aligned), no pointer.
type entry struct {
	state atomic.Uint32
	hash  uint32
	key   Key // 38 bytes
	tag   uint8
	tx    atomic.Uint64 // packed packets<<40 | bytes
	rx    atomic.Uint64
}

// table is a fixed-capacity, insert-only, lock-free hash table with linear
// probing. A slot's key is written once, before the slot turns ready;
// counters are atomic. At most limit flows are inserted; the capacity keeps
// the load factor at or under 3/4 so that probing always ends.
type table struct {
	slots []entry
	limit int32
	used  atomic.Int32
}

// newTable makes a table for flows flows in 4/3 as many slots: 85 bytes a
// flow when full. The capacity need not be a power of two: a hash maps to a
// slot by multiplying (Lemire's "fastrange").
func newTable(flows int) *table {
	return &table{slots: make([]entry, max(16, flows*4/3+1)), limit: int32(flows)}
}

// find returns k's entry, inserting it (with tag(k)) if it is new. It
// returns nil when k is new and the table is full.
func (t *table) find(k *Key, h uint64, tag func(Key) uint8) *entry {
	h32 := uint32(h >> 32)
	n := uint64(len(t.slots))
	i, _ := bits.Mul64(h, n)
	for ; ; i = t.next(i) {
		e := &t.slots[i]
		switch e.state.Load() {
		case slotReady:
			if e.hash == h32 && e.key == *k {
				return e
			}
			continue
		case slotEmpty:
			if t.used.Add(1) > t.limit {
				t.used.Add(-1)
				return nil
			}
			if !e.state.CompareAndSwap(slotEmpty, slotWriting) {
				t.used.Add(-1) // lost the slot to another writer: look again
				i = t.prev(i)
				continue
			}
			e.hash = h32
			e.key = *k
			if tag != nil {
				e.tag = tag(*k)
			}
			e.state.Store(slotReady)
			return e
		case slotWriting:
			// Another writer is filling this slot; it takes a few
			// nanoseconds. Look again once it is ready.
			for e.state.Load() == slotWriting {
				runtime.Gosched()
			}
			i = t.prev(i)
		}
	}
}

func (t *table) next(i uint64) uint64 {
	if i++; i == uint64(len(t.slots)) {
		return 0
	}
	return i
}

func (t *table) prev(i uint64) uint64 {
	if i == 0 {
		return uint64(len(t.slots)) - 1
	}
	return i - 1
}

// chunk is how many slots the cutter handles between yields, so that on a
// busy core a packet-path goroutine waits at most one chunk (about 50 µs)
// for the processor, and a stop-the-world never waits longer than that.
const chunk = 4096

// reset empties the table for reuse, a chunk at a time. The table must be
// quiescent.
func (t *table) reset() {
	for i := 0; i < len(t.slots); i += chunk {
		clear(t.slots[i:min(i+chunk, len(t.slots))])
		runtime.Gosched()
	}
	t.used.Store(0)
}

// appendFlows appends every flow in the table to out. The table must be
// quiescent.
func (t *table) appendFlows(out []Flow) []Flow {
	out = slices.Grow(out, int(t.used.Load()))
	for i := range t.slots {
		if i%chunk == chunk-1 {
			runtime.Gosched()
		}
		e := &t.slots[i]
		if e.state.Load() != slotReady {
			continue
		}
		tx, rx := e.tx.Load(), e.rx.Load()
		out = append(out, Flow{
			Key: e.key, Tag: e.tag,
			TxPackets: tx >> pktShift, TxBytes: tx & byteMask,
			RxPackets: rx >> pktShift, RxBytes: rx & byteMask,
		})
	}
	return out
}

// The layout promise above, checked at compile time.
var _ [64 - unsafe.Sizeof(entry{})]struct{}
var _ [unsafe.Sizeof(entry{}) - 64]struct{}
