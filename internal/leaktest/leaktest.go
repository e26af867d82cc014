// Package leaktest checks that code under test leaves no goroutine behind.
// It compares the goroutines alive before and after, allowing a grace
// period for goroutines that are already on their way out.
package leaktest

import (
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"
)

// Check records the running goroutines and returns a function that fails t
// if, within a few seconds, goroutines started since are still running.
// Call it first and defer (or t.Cleanup) the result after everything under
// test has been closed.
func Check(t testing.TB) func() {
	t.Helper()
	before := goroutines()
	return func() {
		t.Helper()
		var leaked []string
		deadline := time.Now().Add(5 * time.Second)
		for {
			leaked = leaked[:0]
			for id, stack := range goroutines() {
				if _, ok := before[id]; !ok && !ignorable(stack) {
					leaked = append(leaked, stack)
				}
			}
			if len(leaked) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if len(leaked) > 0 {
			sort.Strings(leaked)
			t.Errorf("%d goroutine(s) leaked:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
		}
	}
}

// ignorable reports goroutines that belong to the runtime or the testing
// package rather than to the code under test.
func ignorable(stack string) bool {
	for _, s := range []string{
		"testing.(*T).Run",
		"testing.(*M).",
		"testing.tRunner",
		"runtime.goexit0",
		"created by runtime.gc",
		"runtime.MHeap_Scavenger",
		"signal.signal_recv",
		"os/signal.loop",
		"leaktest.goroutines",
	} {
		if strings.Contains(stack, s) {
			return true
		}
	}
	return false
}

// goroutines maps each live goroutine's header line ("goroutine N") to its
// full stack.
func goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		head, _, _ := strings.Cut(g, " [")
		out[head] = g
	}
	return out
}
