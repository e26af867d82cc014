// Package stats owns the flow tables of both layers and the window cut.
//
// The packet path (Begin, Batch.Count, Batch.End) takes no lock and, for a
// flow already seen in the current window, allocates nothing: it finds the
// flow in a lock-free hash table and adds to one packed atomic counter. All
// tables of a window hang off one pointer; a cut swaps that pointer once, so
// both layers share every window boundary, and then waits for the batches
// that were already inside the old window to end before reading it. Writers
// never wait for a cut: a batch that started on the old window finishes
// there, and the next one starts on the new window. So every packet is
// counted exactly once, in exactly one window, at each layer.
//
// Tables are bounded (Options.MaxFlows per layer per window). When one is
// full, or a flow's counter nears its limit, the writer that notices cuts the
// window early and counts on in the new one; nothing is dropped.
//
// stats knows nothing of gVisor, WireGuard, classification or logging: keys
// are plain addresses and ports, and a caller-supplied function may tag each
// flow once per window when it is first seen.
package stats

import (
	"crypto/rand"
	"encoding/binary"
	rand2 "math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Layer is which wrapper counted a packet.
type Layer uint8

const (
	// Virtual is the tunnel layer: IP packets between the stack and WireGuard.
	Virtual Layer = iota
	// Physical is the wire layer: WireGuard datagrams on the UDP socket.
	Physical
	numLayers
)

// Direction of a packet relative to this node.
type Direction uint8

const (
	Tx Direction = iota // sent by this node
	Rx                  // received by this node
)

// Flow is one flow's counts in one window.
type Flow struct {
	Key                Key
	Tag                uint8 // from Options.Tag when the flow was first seen in the window
	TxPackets, TxBytes uint64
	RxPackets, RxBytes uint64
}

// Window is the statistics of one closed window.
type Window struct {
	Start, End time.Time // inclusive; the next window starts 1 ns after End
	Early      bool      // cut before its time: a table filled up or a counter neared its limit
	Virtual    []Flow
	Physical   []Flow
}

// Empty reports whether the window saw no packet.
func (w *Window) Empty() bool { return len(w.Virtual) == 0 && len(w.Physical) == 0 }

// Defaults for Options.
const (
	DefaultMaxFlows     = 1 << 18
	DefaultInitialFlows = 1 << 10
)

// Options configure Stats. The zero value is ready for use.
type Options struct {
	// MaxFlows bounds each layer's table in one window; DefaultMaxFlows
	// when zero. Memory is 64 bytes per slot, at most 4/3 slots per flow.
	MaxFlows int
	// InitialFlows sizes the first window's tables; later windows are
	// sized from the one before. DefaultInitialFlows when zero.
	InitialFlows int
	// Tag, if set, is called once per flow per window when the flow is
	// first seen, and its result kept with the flow (for example its
	// traffic class under the routes of that moment). It runs on the
	// packet path of a new flow and must be fast and safe for concurrent
	// use.
	Tag func(Layer, Key) uint8
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// stripes spreads the in-flight batch counters of a window over several
// cache lines, so that writers on different cores rarely share one.
const stripes = 16

// window is the current or a closed window: its tables and the batches
// still inside it.
type window struct {
	tables   [numLayers]*table
	inflight [stripes]struct {
		n atomic.Int64
		_ [56]byte
	}
}

func newWindow(flows [numLayers]int) *window {
	w := &window{}
	for l := range w.tables {
		w.tables[l] = newTable(flows[l])
	}
	return w
}

// quiesce waits until no batch is inside w. Batches are short (one
// WireGuard batch of packets), so this waits microseconds at most.
func (w *window) quiesce() {
	for i := range w.inflight {
		for w.inflight[i].n.Load() != 0 {
			runtime.Gosched()
		}
	}
}

type closedWindow struct {
	w          *window
	start, end time.Time
	early      bool
}

// Stats counts flows at both layers into windows. It is safe for concurrent
// use: any number of goroutines count while one goroutine cuts.
type Stats struct {
	cur  atomic.Pointer[window]
	seed uint64
	opts Options
	tag  [numLayers]func(Key) uint8

	// mu guards the fields below. It is held only to swap windows, never
	// while waiting for writers.
	mu     sync.Mutex
	start  time.Time // start of the current window
	spare  *window   // the next window, allocated ahead of time
	closed []closedWindow
	early  chan struct{} // capacity 1: signalled on an early cut

	buf [numLayers][]Flow // owned by the goroutine calling Cut
}

// New starts counting; the first window starts now.
func New(opts Options) *Stats {
	if opts.MaxFlows <= 0 {
		opts.MaxFlows = DefaultMaxFlows
	}
	if opts.InitialFlows <= 0 {
		opts.InitialFlows = DefaultInitialFlows
	}
	opts.InitialFlows = min(opts.InitialFlows, opts.MaxFlows)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	var seed [8]byte
	rand.Read(seed[:])
	s := &Stats{seed: binary.LittleEndian.Uint64(seed[:]), opts: opts, early: make(chan struct{}, 1)}
	if opts.Tag != nil {
		for l := range s.tag {
			layer := Layer(l)
			s.tag[l] = func(k Key) uint8 { return opts.Tag(layer, k) }
		}
	}
	var sizes [numLayers]int
	for l := range sizes {
		sizes[l] = opts.InitialFlows
	}
	s.cur.Store(newWindow(sizes))
	s.spare = newWindow(sizes)
	s.start = opts.Now()
	return s
}

// Flows returns how many flows the current window holds at each layer so
// far (the size of its flow tables).
func (s *Stats) Flows() (virtual, physical int) {
	w := s.cur.Load()
	return int(w.tables[Virtual].used.Load()), int(w.tables[Physical].used.Load())
}

// EarlyCut is signalled when a writer cut a window early; the owner should
// call Cut soon to collect it and to prepare larger tables.
func (s *Stats) EarlyCut() <-chan struct{} { return s.early }

// Batch is a writer's handle on the current window for a run of packets.
// It lives on the caller's stack: Begin, Count each packet, End. A Batch
// must not be used by more than one goroutine.
type Batch struct {
	s      *Stats
	w      *window
	stripe int
}

// Begin enters the current window.
func (s *Stats) Begin() Batch {
	b := Batch{s: s, stripe: int(rand2.Uint32() % stripes)}
	b.enter()
	return b
}

func (b *Batch) enter() {
	for {
		w := b.s.cur.Load()
		w.inflight[b.stripe].n.Add(1)
		// If a cut swapped the window between the load and the add, the
		// cutter may already have seen this stripe at zero: step back
		// and enter the new window instead.
		if b.s.cur.Load() == w {
			b.w = w
			return
		}
		w.inflight[b.stripe].n.Add(-1)
	}
}

// End leaves the window.
func (b *Batch) End() {
	b.w.inflight[b.stripe].n.Add(-1)
	b.w = nil
}

// Count adds one packet of size bytes in direction dir to k's flow at
// layer l.
func (b *Batch) Count(l Layer, k *Key, size int, dir Direction) {
	h := k.hash(b.s.seed)
	for {
		e := b.w.tables[l].find(k, h, b.s.tag[l])
		if e == nil {
			// The table is full: cut early, count in the new window.
			b.rotate()
			continue
		}
		c := &e.tx
		if dir == Rx {
			c = &e.rx
		}
		if c.Add(1<<pktShift|uint64(size)&byteMask)&overflowMask != 0 {
			b.rotate()
		}
		return
	}
}

// rotate cuts b's window early (unless another writer already did) and
// moves b into the new one.
func (b *Batch) rotate() {
	b.s.swap(b.w, true)
	b.w.inflight[b.stripe].n.Add(-1)
	b.enter()
}

// swap closes window old if it is still the current one and installs the
// next. It never waits for writers.
func (s *Stats) swap(old *window, early bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur.Load() != old {
		return
	}
	next := s.spare
	s.spare = nil
	if next == nil {
		// Two early cuts before the owner collected the first: size up.
		var sizes [numLayers]int
		for l := range sizes {
			sizes[l] = min(2*old.tables[l].len(), s.opts.MaxFlows)
		}
		next = newWindow(sizes)
	}
	end := s.opts.Now()
	if !end.After(s.start) {
		end = s.start // windows never run backwards, even if the clock does
	}
	s.cur.Store(next)
	s.closed = append(s.closed, closedWindow{w: old, start: s.start, end: end, early: early})
	s.start = end.Add(time.Nanosecond)
	if early {
		select {
		case s.early <- struct{}{}:
		default:
		}
	}
}

// Cut closes the current window and returns every window closed since the
// last Cut, oldest first, including early ones and empty ones. It waits for
// batches still inside those windows to end (never for new ones), and
// prepares the next window's tables outside the packet path.
//
// The returned flows are valid until the next call to Cut, which reuses
// their memory; Cut must not be called concurrently with itself.
func (s *Stats) Cut() []Window {
	s.swap(s.cur.Load(), false)
	s.mu.Lock()
	closed := s.closed
	s.closed = nil
	s.mu.Unlock()

	// The flows of all windows of this cut share one buffer per layer,
	// reused from cut to cut so that a cut of a million flows makes no
	// garbage.
	for l := range s.buf {
		s.buf[l] = s.buf[l][:0]
	}
	out := make([]Window, 0, len(closed))
	var grow [numLayers]int
	var old [numLayers]*table // the newest closed tables, for reuse
	for _, c := range closed {
		c.w.quiesce()
		win := Window{Start: c.start, End: c.end, Early: c.early}
		n := len(s.buf[Virtual])
		s.buf[Virtual] = c.w.tables[Virtual].appendFlows(s.buf[Virtual])
		win.Virtual = s.buf[Virtual][n:len(s.buf[Virtual]):len(s.buf[Virtual])]
		n = len(s.buf[Physical])
		s.buf[Physical] = c.w.tables[Physical].appendFlows(s.buf[Physical])
		win.Physical = s.buf[Physical][n:len(s.buf[Physical]):len(s.buf[Physical])]
		out = append(out, win)
		for l, t := range c.w.tables {
			// Size the next tables for what this window needed,
			// with room to double (and double again if it was full).
			n := 2 * int(t.used.Load())
			if c.early {
				n = 2 * t.len()
			}
			grow[l] = max(grow[l], n)
			old[l] = t
		}
	}
	// The next window's tables: the old ones emptied when their size
	// fits what is needed (no garbage, no GC pressure on the packet
	// path), else new ones.
	spare := &window{}
	for l := range grow {
		want := min(max(grow[l], s.opts.InitialFlows), s.opts.MaxFlows)
		if t := old[l]; t != nil && t.len() >= want && t.len() <= 4*want {
			t.reset()
			spare.tables[l] = t
		} else {
			spare.tables[l] = newTable(want)
		}
	}
	s.mu.Lock()
	s.spare = spare
	s.mu.Unlock()
	return out
}

// len is the table's limit on flows.
func (t *table) len() int { return int(t.limit) }
