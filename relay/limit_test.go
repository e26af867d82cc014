package relay

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestLimiterAdmit runs sequences of admissions and releases against small
// limits and checks each answer and the counts at the end.
func TestLimiterAdmit(t *testing.T) {
	type step struct {
		op      string // "admit", "release" or "cancel"
		ok      bool   // admit only
		refused int    // admit only
	}
	admit := func(ok bool, refused int) step { return step{"admit", ok, refused} }
	release, cancel := step{op: "release"}, step{op: "cancel"}
	for _, tc := range []struct {
		name     string
		max      int
		steps    []step
		open     int
		accepted uint64
		wantMax  int
	}{
		{"default limit", 0, []step{admit(true, 0)}, 1, 1, DefaultMaxConns},
		{"under the limit", 2, []step{admit(true, 0), admit(true, 0)}, 2, 2, 2},
		{"refused at the limit", 1, []step{admit(true, 0), admit(false, 1), admit(false, 2)}, 1, 1, 1},
		{"a release makes room", 1, []step{admit(true, 0), release, admit(true, 0)}, 1, 2, 1},
		{"the admission after a burst reports it", 1,
			[]step{admit(true, 0), admit(false, 1), admit(false, 2), release, admit(true, 2), release, admit(true, 0)}, 1, 3, 1},
		{"a new burst counts from one", 1,
			[]step{admit(true, 0), admit(false, 1), release, admit(true, 1), admit(false, 1)}, 1, 2, 1},
		{"a cancelled admission is not accepted", 1, []step{admit(true, 0), cancel, admit(true, 0)}, 1, 1, 1},
		{"everything released", 3, []step{admit(true, 0), admit(true, 0), release, release}, 0, 2, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLimiter(tc.max)
			for i, s := range tc.steps {
				switch s.op {
				case "admit":
					if ok, refused := l.Admit(); ok != s.ok || refused != s.refused {
						t.Fatalf("step %d: Admit() = %v, %d; want %v, %d", i, ok, refused, s.ok, s.refused)
					}
				case "release":
					l.Release()
				case "cancel":
					l.Cancel()
				}
			}
			if open, accepted := l.Counts(); open != tc.open || accepted != tc.accepted {
				t.Errorf("Counts() = %d, %d; want %d, %d", open, accepted, tc.open, tc.accepted)
			}
			if got := l.Max(); got != tc.wantMax {
				t.Errorf("Max() = %d; want %d", got, tc.wantMax)
			}
		})
	}
}

// closer counts its Close calls.
type closer struct{ n atomic.Int32 }

func (c *closer) Close() error { c.n.Add(1); return nil }

// TestLimiterClose checks that Close closes what is held and not what was
// let go, waits for the goroutines entered, and refuses everything after.
func TestLimiterClose(t *testing.T) {
	l := NewLimiter(1)
	var held, gone closer
	if !l.Hold(&held) || !l.Hold(&gone) {
		t.Fatal("Hold refused before Close")
	}
	l.Unhold(&gone)
	release := make(chan struct{})
	var finished atomic.Bool
	if !l.Go(func() { <-release; finished.Store(true) }) {
		t.Fatal("Go refused before Close")
	}
	closed := make(chan struct{})
	go func() { l.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned while a goroutine it must wait for runs")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	<-closed
	if !finished.Load() {
		t.Error("Close returned before the goroutine finished")
	}
	if got := held.n.Load(); got != 1 {
		t.Errorf("held closer closed %d times; want 1", got)
	}
	if got := gone.n.Load(); got != 0 {
		t.Errorf("unheld closer closed %d times; want 0", got)
	}
	if !l.Closed() {
		t.Error("Closed() = false after Close")
	}
	var late closer
	if l.Hold(&late) {
		t.Error("Hold accepted after Close")
	}
	if got := late.n.Load(); got != 1 {
		t.Errorf("closer refused by Hold closed %d times; want 1", got)
	}
	if l.Enter() {
		t.Error("Enter accepted after Close")
	}
	if l.Go(func() { t.Error("Go ran f after Close") }) {
		t.Error("Go accepted after Close")
	}
	l.Close() // a second Close returns at once
}
