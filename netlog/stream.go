package netlog

import (
	"context"
	"encoding/json"
	"time"
)

// EntryWriter takes one JSON object per call: a log stream client
// (logtail.Logger) is one.
type EntryWriter interface {
	Write(entry []byte) error
	Shutdown(ctx context.Context) error
}

// StreamSink writes each message as one entry to a log stream, and shuts
// the stream down (flushing what it buffered) when closed.
type StreamSink struct {
	w       EntryWriter
	timeout time.Duration
}

var _ Sink = (*StreamSink)(nil)

// NewStreamSink makes a sink of w. Close gives w's final flush at most
// flushTimeout; what it could not upload stays in the stream's disk buffer
// for the next start.
func NewStreamSink(w EntryWriter, flushTimeout time.Duration) *StreamSink {
	return &StreamSink{w: w, timeout: flushTimeout}
}

// Write encodes m and hands it to the stream.
func (s *StreamSink) Write(ctx context.Context, m *Message) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return s.w.Write(b)
}

// Close shuts the stream down.
func (s *StreamSink) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	return s.w.Shutdown(ctx)
}
