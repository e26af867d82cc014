package collector

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// TestGroupCommit: uploads put while a commit runs share the next one,
// each answered with its own count; a failed commit fails every upload
// of its group and none of the next; a cancelled upload is left out.
func TestGroupCommit(t *testing.T) {
	var mu sync.Mutex
	var groups [][]int // sizes of the uploads of each commit
	release := make(chan struct{})
	fail := false
	g := &GroupCommit{Commit: func(ctx context.Context, uploads [][]Entry) ([]int, error) {
		if len(uploads[0]) == 1 {
			<-release // the first commit waits until the others queued
		}
		mu.Lock()
		defer mu.Unlock()
		var sizes []int
		for _, u := range uploads {
			sizes = append(sizes, len(u))
		}
		groups = append(groups, sizes)
		if fail {
			return nil, errors.New("disk full")
		}
		return sizes, nil
	}}
	var wg sync.WaitGroup
	put := func(n int) (int, error) { return g.Put(context.Background(), make([]Entry, n)) }
	wg.Add(1)
	go func() {
		defer wg.Done()
		if n, err := put(1); n != 1 || err != nil {
			t.Errorf("first put: %d, %v", n, err)
		}
	}()
	for !func() bool { g.mu.Lock(); defer g.mu.Unlock(); return g.running && len(g.queue) == 0 }() {
		time.Sleep(time.Millisecond)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := g.Put(cancelled, make([]Entry, 9)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled put: %v", err)
	}
	for i := 2; i <= 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if n, err := put(i); n != i || err != nil {
				t.Errorf("put of %d: %d, %v", i, n, err)
			}
		}()
	}
	for func() int { g.mu.Lock(); defer g.mu.Unlock(); return len(g.queue) }() < 3 {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if len(groups) != 2 || len(groups[0]) != 1 || len(groups[1]) != 3 {
		t.Fatalf("commits %v, want [1] then the three others together", groups)
	}
	fail = true
	if _, err := put(5); err == nil {
		t.Error("a failed commit answered nil")
	}
	fail = false
	if n, err := put(6); n != 6 || err != nil {
		t.Errorf("after a failure: %d, %v", n, err)
	}
}

// TestGroupCommitMaxDelay: with MaxDelay, a group waits while uploads
// keep joining (puts 10 ms apart for 300 ms, Delay 100 ms: one commit,
// where without MaxDelay the first would commit alone), but no
// longer than MaxDelay (puts 10 ms apart for 1 s, MaxDelay 200 ms: more
// than one commit).
func TestGroupCommitMaxDelay(t *testing.T) {
	run := func(delay, maxDelay time.Duration, puts int) int {
		var mu sync.Mutex
		commits := 0
		g := &GroupCommit{Delay: delay, MaxDelay: maxDelay, Commit: func(ctx context.Context, uploads [][]Entry) ([]int, error) {
			mu.Lock()
			commits++
			mu.Unlock()
			sizes := make([]int, len(uploads))
			for i, u := range uploads {
				sizes[i] = len(u)
			}
			return sizes, nil
		}}
		var wg sync.WaitGroup
		for range puts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if n, err := g.Put(context.Background(), make([]Entry, 1)); n != 1 || err != nil {
					t.Errorf("put: %d, %v", n, err)
				}
			}()
			time.Sleep(10 * time.Millisecond)
		}
		wg.Wait()
		return commits
	}
	if n := run(100*time.Millisecond, 5*time.Second, 30); n != 1 {
		t.Errorf("puts 10 ms apart for 300 ms, Delay 100 ms: %d commits, want 1", n)
	}
	if n := run(50*time.Millisecond, 200*time.Millisecond, 100); n < 2 {
		t.Errorf("puts 10 ms apart for 1 s, MaxDelay 200 ms: %d commits, want several", n)
	}
}
