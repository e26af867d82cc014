package netlog

import (
	"context"
	"slices"
	"sync"
)

// MemorySink keeps messages in memory, for programs and tests that read
// their flow log in process. The zero value is ready for use; it is safe
// for concurrent use.
type MemorySink struct {
	mu     sync.Mutex
	msgs   []Message
	closed bool
}

var _ Sink = (*MemorySink)(nil)

// Write keeps a copy of m.
func (s *MemorySink) Write(ctx context.Context, m *Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	c := *m
	c.VirtualTraffic = slices.Clone(m.VirtualTraffic)
	c.SubnetTraffic = slices.Clone(m.SubnetTraffic)
	c.ExitTraffic = slices.Clone(m.ExitTraffic)
	c.PhysicalTraffic = slices.Clone(m.PhysicalTraffic)
	s.msgs = append(s.msgs, c)
	return nil
}

// Close stops accepting messages; those kept stay readable.
func (s *MemorySink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

// Messages returns the messages written so far, oldest first.
func (s *MemorySink) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}
