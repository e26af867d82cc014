package collector

import (
	"context"
	"sync"
	"time"
)

// A GroupCommit lets concurrent Puts share one commit: a Put that finds
// no commit running commits (after Delay) every upload queued by then,
// and keeps committing what queued meanwhile until the queue is empty;
// a Put that finds one running waits for the commit that takes its
// upload. Each Put returns only once the commit holding its upload has
// returned, with that upload's own count, so "stored before 200" holds
// for every upload. A Storage whose commits cost much more than their
// size (an fsync, a round trip, a server-side part per INSERT) uses it
// to pay that cost once per group rather than once per upload.
type GroupCommit struct {
	// Commit stores the uploads, all or none, and returns how many
	// entries of each it stored (duplicates skipped). It is called by one
	// goroutine at a time, with a context that no single upload's
	// cancellation ends.
	Commit func(ctx context.Context, uploads [][]Entry) ([]int, error)
	// Delay is how long the first Put of a group waits for others to
	// join it; 0 commits at once (uploads that arrive during a commit
	// still share the next one).
	Delay time.Duration
	// MaxDelay, if over Delay, lets the group keep waiting while uploads
	// keep joining: it commits once none has joined for Delay, or
	// MaxDelay after its first Put, whichever comes first. Uploads that
	// a fleet sends at a window's end then share one commit rather than
	// a few early ones paying a commit of their own.
	MaxDelay time.Duration
	// Timeout bounds one commit (default one minute).
	Timeout time.Duration

	mu      sync.Mutex
	queue   []*pendingPut // guarded by mu
	running bool          // guarded by mu
	joined  time.Time     // guarded by mu: the last Put's arrival
}

type pendingPut struct {
	ctx     context.Context
	entries []Entry
	done    chan putResult
}

type putResult struct {
	stored int
	err    error
}

// Put queues entries for a group commit and waits for its result, or
// for ctx to end (the upload may then still be stored: a retry finds it
// a duplicate).
func (g *GroupCommit) Put(ctx context.Context, entries []Entry) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if len(entries) == 0 {
		return 0, nil
	}
	p := &pendingPut{ctx: ctx, entries: entries, done: make(chan putResult, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, p)
	if g.MaxDelay > g.Delay {
		g.joined = time.Now()
	}
	lead := !g.running
	g.running = true
	g.mu.Unlock()
	if lead {
		g.lead()
	}
	select {
	case r := <-p.done:
		return r.stored, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// lead commits groups until the queue is empty.
func (g *GroupCommit) lead() {
	if g.Delay > 0 {
		start := time.Now()
		time.Sleep(g.Delay)
		for g.MaxDelay > g.Delay {
			g.mu.Lock()
			quiet := time.Since(g.joined)
			g.mu.Unlock()
			left := g.MaxDelay - time.Since(start)
			if quiet >= g.Delay || left <= 0 {
				break
			}
			time.Sleep(min(g.Delay-quiet, left))
		}
	}
	for {
		g.mu.Lock()
		group := g.queue
		g.queue = nil
		if len(group) == 0 {
			g.running = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		g.commit(group)
	}
}

func (g *GroupCommit) commit(group []*pendingPut) {
	live := group[:0:0]
	uploads := make([][]Entry, 0, len(group))
	for _, p := range group {
		if err := p.ctx.Err(); err != nil {
			p.done <- putResult{err: err}
			continue
		}
		live = append(live, p)
		uploads = append(uploads, p.entries)
	}
	if len(live) == 0 {
		return
	}
	timeout := g.Timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	stored, err := g.Commit(ctx, uploads)
	cancel()
	for i, p := range live {
		if err != nil {
			p.done <- putResult{err: err}
		} else {
			p.done <- putResult{stored: stored[i]}
		}
	}
}
