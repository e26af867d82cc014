package netlog

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Recent is a sink that counts the windows and messages written and, when
// Keep is set, keeps the latest window's messages. It is safe for
// concurrent use; Close keeps what it holds readable. Set Keep before the
// first Write.
type Recent struct {
	Keep bool

	mu        sync.Mutex
	lastStart time.Time // start of the latest window
	last      []Message // its messages when kept; never modified, only replaced
	windows   uint64
	messages  uint64
}

var _ Sink = (*Recent)(nil)

func (r *Recent) Write(ctx context.Context, m *Message) error {
	var c Message
	if r.Keep {
		c = *m
		c.VirtualTraffic = slices.Clone(m.VirtualTraffic)
		c.SubnetTraffic = slices.Clone(m.SubnetTraffic)
		c.ExitTraffic = slices.Clone(m.ExitTraffic)
		c.PhysicalTraffic = slices.Clone(m.PhysicalTraffic)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.messages++
	// The messages of one window (split for size) come one after another
	// and share its start.
	newWindow := r.windows == 0 || !r.lastStart.Equal(m.Start)
	if newWindow {
		r.windows++
		r.lastStart = m.Start
	}
	if !r.Keep {
		return nil
	}
	if newWindow {
		r.last = []Message{c}
	} else {
		// Copy on write: a snapshot handed out is never changed.
		r.last = append(slices.Clip(r.last), c)
	}
	return nil
}

func (r *Recent) Close() error { return nil }

// Latest returns the latest window's messages (nil unless Keep); the
// caller must not modify them.
func (r *Recent) Latest() []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// Counts returns the windows and messages written so far.
func (r *Recent) Counts() (windows, messages uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.windows, r.messages
}
