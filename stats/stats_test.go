package stats

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// key returns the i-th test key of a small family of IPv4 and IPv6 flows.
func key(i int) Key {
	if i%2 == 0 {
		return MakeKey(6,
			netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 16), byte(i >> 8)}), uint16(i)),
			netip.MustParseAddrPort("10.0.0.2:443"))
	}
	return MakeKey(17,
		netip.AddrPortFrom(netip.MustParseAddr("fd00::1"), uint16(i)),
		netip.AddrPortFrom(netip.AddrFrom16([16]byte{0xfd, 15: byte(i)}), uint16(i>>16)))
}

type totals struct{ txP, txB, rxP, rxB uint64 }

func sum(windows []Window, l Layer, into map[Key]*totals) {
	for _, w := range windows {
		flows := w.Virtual
		if l == Physical {
			flows = w.Physical
		}
		for _, f := range flows {
			t := into[f.Key]
			if t == nil {
				t = &totals{}
				into[f.Key] = t
			}
			t.txP += f.TxPackets
			t.txB += f.TxBytes
			t.rxP += f.RxPackets
			t.rxB += f.RxBytes
		}
	}
}

func TestKeyRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		proto    uint8
		src, dst string
	}{
		{6, "10.0.0.1:1234", "10.0.0.2:80"},
		{17, "[fd00::1]:53", "[fd00::2]:5353"},
		{0, "10.0.0.1:0", "[2001:db8::7]:51820"},
		{6, "[::ffff:10.0.0.1]:1", "10.0.0.2:2"},
	} {
		src, dst := netip.MustParseAddrPort(tc.src), netip.MustParseAddrPort(tc.dst)
		k := MakeKey(tc.proto, src, dst)
		wantSrc := netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		if k.Proto() != tc.proto || k.Src() != wantSrc || k.Dst() != dst {
			t.Errorf("MakeKey(%d, %v, %v) round-trips to %v", tc.proto, src, dst, k)
		}
	}
	if MakeKey(6, netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("10.0.0.2:2")) ==
		MakeKey(6, netip.MustParseAddrPort("[::ffff:10.0.0.1]:1"), netip.MustParseAddrPort("10.0.0.2:3")) {
		t.Error("different ports make equal keys")
	}
}

// TestExactlyOnceUnderConcurrentCuts has many goroutines count packets at
// both layers while windows are cut every millisecond. The sums over all
// windows equal what was counted, per flow, to the packet and byte; the
// windows tile time with start = previous end + 1 ns.
func TestExactlyOnceUnderConcurrentCuts(t *testing.T) {
	s := New(Options{MaxFlows: 512, InitialFlows: 64})
	const writers = 8
	const perWriter = 20000
	want := [numLayers]map[Key]*totals{{}, {}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var stop atomic.Bool
	// Flows are valid until the next Cut: keep the sums and the bounds.
	var windows []Window
	got := [numLayers]map[Key]*totals{{}, {}}
	collect := func(ws []Window) {
		for l := range numLayers {
			sum(ws, l, got[l])
		}
		for _, w := range ws {
			windows = append(windows, Window{Start: w.Start, End: w.End, Early: w.Early})
		}
	}
	cutterDone := make(chan struct{})
	go func() {
		defer close(cutterDone)
		for !stop.Load() {
			collect(s.Cut())
			time.Sleep(time.Millisecond)
		}
	}()
	for g := range writers {
		wg.Go(func() {
			local := [numLayers]map[Key]*totals{{}, {}}
			for i := 0; i < perWriter; {
				b := s.Begin()
				for j := 0; j < 1+i%7 && i < perWriter; j, i = j+1, i+1 {
					l := Layer(i % 2)
					k := key((g*perWriter + i) % 700) // 700 flows: more than MaxFlows, so windows fill
					dir := Direction(i % 3 % 2)
					size := 40 + (i*31)%1400
					b.Count(l, &k, size, dir)
					tt := local[l][k]
					if tt == nil {
						tt = &totals{}
						local[l][k] = tt
					}
					if dir == Tx {
						tt.txP++
						tt.txB += uint64(size)
					} else {
						tt.rxP++
						tt.rxB += uint64(size)
					}
				}
				b.End()
			}
			mu.Lock()
			defer mu.Unlock()
			for l := range local {
				for k, v := range local[l] {
					w := want[l][k]
					if w == nil {
						w = &totals{}
						want[l][k] = w
					}
					w.txP += v.txP
					w.txB += v.txB
					w.rxP += v.rxP
					w.rxB += v.rxB
				}
			}
		})
	}
	wg.Wait()
	stop.Store(true)
	<-cutterDone
	collect(s.Cut())

	early := 0
	for i, w := range windows {
		if w.End.Before(w.Start) {
			t.Errorf("window %d ends (%v) before it starts (%v)", i, w.End, w.Start)
		}
		if i > 0 && !w.Start.Equal(windows[i-1].End.Add(time.Nanosecond)) {
			t.Errorf("window %d starts at %v; previous ended at %v", i, w.Start, windows[i-1].End)
		}
		if w.Early {
			early++
		}
	}
	if early == 0 {
		t.Error("no window was cut early although the tables were too small")
	}
	bad := 0
	for l := range numLayers {
		if len(got[l]) != len(want[l]) {
			t.Errorf("layer %d: %d flows counted; want %d", l, len(got[l]), len(want[l]))
		}
		for k, w := range want[l] {
			if g := got[l][k]; (g == nil || *g != *w) && bad < 5 {
				bad++
				t.Errorf("layer %d flow %v: got %+v, want %+v", l, k, g, *w)
			}
		}
	}
	t.Logf("%d windows, %d cut early", len(windows), early)
}

func TestFullTableCutsEarlyAndLosesNothing(t *testing.T) {
	s := New(Options{MaxFlows: 32, InitialFlows: 32})
	b := s.Begin()
	for i := range 100 {
		k := key(i)
		b.Count(Virtual, &k, 100, Tx)
	}
	b.End()
	windows := s.Cut() // used before the next Cut
	flows, early := 0, 0
	for _, w := range windows {
		flows += len(w.Virtual)
		if len(w.Virtual) > 32 {
			t.Errorf("a window holds %d flows; the bound is 32", len(w.Virtual))
		}
		if w.Early {
			early++
		}
	}
	if flows != 100 || early < 3 {
		t.Errorf("%d flows in %d windows (%d early); want 100 flows and at least 3 early cuts", flows, len(windows), early)
	}
	select {
	case <-s.EarlyCut():
	default:
		t.Error("no early-cut signal")
	}
}

func TestCounterLimitCutsEarly(t *testing.T) {
	s := New(Options{})
	k := key(1)
	b := s.Begin()
	const size = 1 << 30
	for range 1000 { // 1000 GiB: more than the 40-bit byte field holds
		b.Count(Physical, &k, size, Rx)
	}
	b.End()
	var total uint64
	var n int
	for _, w := range s.Cut() {
		for _, f := range w.Physical {
			total += f.RxBytes
			n += int(f.RxPackets)
		}
	}
	if total != 1000*size || n != 1000 {
		t.Errorf("counted %d packets, %d bytes; want 1000, %d", n, total, 1000*size)
	}
}

func TestTagOncePerFlowPerWindow(t *testing.T) {
	var calls atomic.Int32
	tag := uint8(1)
	s := New(Options{Tag: func(l Layer, k Key) uint8 { calls.Add(1); return tag }})
	k := key(3)
	b := s.Begin()
	b.Count(Virtual, &k, 10, Tx)
	tag = 2 // routes change mid-window: the flow keeps its class
	b.Count(Virtual, &k, 10, Rx)
	b.End()
	w := s.Cut()
	if len(w) != 1 || len(w[0].Virtual) != 1 || w[0].Virtual[0].Tag != 1 || calls.Load() != 1 {
		t.Fatalf("windows %+v, tag calls %d", w, calls.Load())
	}
	b = s.Begin()
	b.Count(Virtual, &k, 10, Tx)
	b.End()
	if w := s.Cut(); w[0].Virtual[0].Tag != 2 {
		t.Errorf("next window's tag = %d; want the new routes' 2", w[0].Virtual[0].Tag)
	}
}

func TestEmptyWindowAndClock(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	s := New(Options{Now: clock})
	now = now.Add(5 * time.Second)
	w := s.Cut()
	if len(w) != 1 || !w[0].Empty() || !w[0].Start.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) || !w[0].End.Equal(now) {
		t.Fatalf("got %+v", w)
	}
	now = now.Add(-time.Second) // the clock steps back
	w2 := s.Cut()
	if !w2[0].Start.Equal(w[0].End.Add(time.Nanosecond)) || w2[0].End.Before(w2[0].Start) {
		t.Errorf("after a clock step back: %v..%v", w2[0].Start, w2[0].End)
	}
}

func TestFlowsCountsCurrentWindow(t *testing.T) {
	s := New(Options{})
	b := s.Begin()
	for i := range 3 {
		k := MakeKey(6, netip.MustParseAddrPort("10.0.0.1:40000"), netip.AddrPortFrom(netip.MustParseAddr("10.0.0.2"), uint16(80+i)))
		b.Count(Virtual, &k, 60, Tx)
		b.Count(Virtual, &k, 60, Rx) // the same flow again
	}
	k := MakeKey(0, netip.AddrPort{}, netip.MustParseAddrPort("127.0.0.1:51820"))
	b.Count(Physical, &k, 92, Tx)
	b.End()
	if v, p := s.Flows(); v != 3 || p != 1 {
		t.Errorf("Flows() = %d, %d; want 3, 1", v, p)
	}
	s.Cut()
	if v, p := s.Flows(); v != 0 || p != 0 {
		t.Errorf("Flows() after a cut = %d, %d; want 0, 0", v, p)
	}
}

func ExampleStats() {
	s := New(Options{})
	k := MakeKey(6, netip.MustParseAddrPort("10.0.0.1:40000"), netip.MustParseAddrPort("10.0.0.2:80"))
	b := s.Begin() // one batch of packets
	b.Count(Virtual, &k, 60, Tx)
	b.Count(Virtual, &k, 1400, Rx)
	b.End()
	for _, w := range s.Cut() {
		for _, f := range w.Virtual {
			fmt.Println(f.Key, f.TxPackets, f.TxBytes, f.RxPackets, f.RxBytes)
		}
	}
	// Output: 6 10.0.0.1:40000 -> 10.0.0.2:80 1 60 1 1400
}

// TestSetIPMatchesMakeKey: the packet path's in-place constructors build
// the same keys as MakeKey.
func TestSetIPMatchesMakeKey(t *testing.T) {
	src4, dst4 := netip.MustParseAddr("192.0.2.1").As4(), netip.MustParseAddr("10.1.2.3").As4()
	var k Key
	k.SetIPv4(6, src4[:], 1234, dst4[:], 80)
	if want := MakeKey(6, netip.MustParseAddrPort("192.0.2.1:1234"), netip.MustParseAddrPort("10.1.2.3:80")); k != want {
		t.Errorf("SetIPv4 = %v (%x); MakeKey = %v (%x)", k, k.src, want, want.src)
	}
	src6, dst6 := netip.MustParseAddr("fd00::1").As16(), netip.MustParseAddr("2001:db8::9").As16()
	k.SetIPv6(17, src6[:], 53, dst6[:], 5353)
	if want := MakeKey(17, netip.MustParseAddrPort("[fd00::1]:53"), netip.MustParseAddrPort("[2001:db8::9]:5353")); k != want {
		t.Errorf("SetIPv6 = %v; MakeKey = %v", k, want)
	}
}
