package stats

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// Benchmarks of the packet path and the cut:
//
//	go test -run '^$' -bench . -benchmem ./stats
//
// CountKnown* report the cost of counting one packet of a flow already in
// the window, inside a batch of 32 packets as the wrappers count them
// (wireguard-go hands over batches of up to 128).

func benchCount(b *testing.B, l Layer) {
	s := New(Options{})
	keys := make([]Key, 64)
	for i := range keys {
		keys[i] = key(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; {
		batch := s.Begin()
		for j := 0; j < 32 && i < b.N; j, i = j+1, i+1 {
			batch.Count(l, &keys[i&63], 1400, Direction(i&1))
		}
		batch.End()
	}
}

func BenchmarkCountKnownVirtual(b *testing.B)  { benchCount(b, Virtual) }
func BenchmarkCountKnownPhysical(b *testing.B) { benchCount(b, Physical) }

// BenchmarkCountKnownSingle counts one packet per batch: Begin, Count, End.
func BenchmarkCountKnownSingle(b *testing.B) {
	s := New(Options{})
	k := key(7)
	b.ReportAllocs()
	for b.Loop() {
		batch := s.Begin()
		batch.Count(Virtual, &k, 1400, Tx)
		batch.End()
	}
}

// BenchmarkCountKnownParallel counts from GOMAXPROCS goroutines at once,
// each on its own flows (as wireguard-go's per-peer goroutines do). On 2
// cores, ns/op at -cpu 2 should be about half of -cpu 1.
func BenchmarkCountKnownParallel(b *testing.B) {
	s := New(Options{})
	var next atomic.Int32
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		base := int(next.Add(1)) * 1000
		keys := make([]Key, 16)
		for i := range keys {
			keys[i] = key(base + i)
		}
		i := 0
		for {
			batch := s.Begin()
			for j := 0; j < 32; j, i = j+1, i+1 {
				if !pb.Next() {
					batch.End()
					return
				}
				batch.Count(Virtual, &keys[i&15], 1400, Tx)
			}
			batch.End()
		}
	})
}

// BenchmarkInsertNewFlow counts the first packet of a new flow each time.
func BenchmarkInsertNewFlow(b *testing.B) {
	s := New(Options{MaxFlows: 1 << 20, InitialFlows: 1 << 20})
	keys := make([]Key, 1<<19)
	for i := range keys {
		keys[i] = key(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%len(keys) == 0 && i > 0 {
			b.StopTimer()
			s.Cut()
			b.StartTimer()
		}
		batch := s.Begin()
		batch.Count(Virtual, &keys[i%len(keys)], 1400, Tx)
		batch.End()
	}
}

// benchCut fills a window with n flows, then measures Cut (swap, wait,
// extract). It reports the memory of the window's tables per flow.
func benchCut(b *testing.B, n int) {
	s := New(Options{MaxFlows: n, InitialFlows: n})
	keys := make([]Key, n)
	for i := range keys {
		keys[i] = key(i)
	}
	fill := func() {
		batch := s.Begin()
		for i := range keys {
			batch.Count(Virtual, &keys[i], 100, Tx)
		}
		batch.End()
	}
	fill()
	slots := len(s.cur.Load().tables[Virtual].slots)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		ws := s.Cut()
		if got := len(ws[len(ws)-1].Virtual); got != n {
			b.Fatalf("cut %d flows; want %d", got, n)
		}
		b.StopTimer()
		fill()
		b.StartTimer()
	}
	b.ReportMetric(float64(slots)*float64(unsafe.Sizeof(entry{}))/float64(n), "table-B/flow")
}

func BenchmarkCut100k(b *testing.B) { benchCut(b, 100_000) }
func BenchmarkCut1M(b *testing.B)   { benchCut(b, 1_000_000) }

// BenchmarkStallDuringCut counts packets in a loop while another goroutine
// cuts windows of 1M flows, and reports the longest time one batch of 32
// packets took ("max-stall-ns"): what the packet path feels of a cut.
func BenchmarkStallDuringCut(b *testing.B) {
	b.Run("cut", func(b *testing.B) { benchStall(b, true) })
	// The same loop with no cut: what the machine itself (scheduler,
	// hypervisor) costs the packet path, for comparison.
	b.Run("baseline", func(b *testing.B) { benchStall(b, false) })
}

func benchStall(b *testing.B, cut bool) {
	const n = 1_000_000
	s := New(Options{MaxFlows: n, InitialFlows: n})
	keys := make([]Key, n)
	for i := range keys {
		keys[i] = key(i)
	}
	var stop atomic.Bool
	var maxStall atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		runtime.LockOSThread()
		i := 0
		for !stop.Load() {
			t0 := time.Now()
			batch := s.Begin()
			for range 32 {
				batch.Count(Virtual, &keys[i%n], 100, Tx)
				i += 7919
			}
			batch.End()
			if d := int64(time.Since(t0)); d > maxStall.Load() {
				maxStall.Store(d)
			}
		}
	})
	time.Sleep(300 * time.Millisecond) // fill the window
	maxStall.Store(0)
	b.ResetTimer()
	for range b.N {
		if cut {
			s.Cut()
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.StopTimer()
	stop.Store(true)
	wg.Wait()
	b.ReportMetric(float64(maxStall.Load()), "max-stall-ns")
}
