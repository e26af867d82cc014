package netlog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// A Sink receives flow-log messages. An implementation need only be safe
// for use by one goroutine at a time: the logger calls Write and Close from
// its one goroutine. Write must not keep m after it returns.
type Sink interface {
	// Write writes one message. ctx bounds how long it may take, as far as
	// the destination allows.
	Write(ctx context.Context, m *Message) error
	// Close releases the sink; Write fails afterwards.
	Close() error
}

// ErrClosed is returned by Write on a closed sink.
var ErrClosed = errors.New("netlog: sink closed")

// NDJSONSink writes each message as one line of JSON (newline-delimited
// JSON) to a writer: standard output or a file. Times are written in UTC,
// RFC 3339 with up to nine fractional digits, as encoding/json writes a
// time.Time. Each line goes to the writer in one Write call, so lines from
// several processes appending to one file do not interleave.
//
// An NDJSONSink is for one goroutine at a time.
type NDJSONSink struct {
	w      io.Writer
	file   *os.File // the file NewFileSink opened; nil otherwise
	buf    bytes.Buffer
	enc    *json.Encoder // writes to buf
	closed bool
}

var _ Sink = (*NDJSONSink)(nil)

// NewNDJSONSink returns a sink that writes to w. Its Close does not close w,
// which stays the caller's (os.Stdout, typically).
func NewNDJSONSink(w io.Writer) *NDJSONSink {
	s := &NDJSONSink{w: w}
	s.enc = json.NewEncoder(&s.buf)
	return s
}

// NewFileSink returns a sink that appends to the file at path, created if
// missing with mode 0600 (before the umask): flow logs say who talked to
// whom, so only the owner may read them by default. An existing file keeps
// its mode. Close closes the file.
func NewFileSink(path string) (*NDJSONSink, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("flow log: %w", err)
	}
	s := NewNDJSONSink(f)
	s.file = f
	return s, nil
}

// Write writes m as one line. It fails without writing when ctx is already
// done; a write in progress is not interrupted.
func (s *NDJSONSink) Write(ctx context.Context, m *Message) error {
	if s.closed {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	utc := *m
	utc.Start, utc.End = m.Start.UTC(), m.End.UTC()
	if m.Logged != nil {
		logged := m.Logged.UTC()
		utc.Logged = &logged
	}
	s.buf.Reset()
	if err := s.enc.Encode(&utc); err != nil { // Encode ends the line
		return fmt.Errorf("flow log: %w", err)
	}
	if _, err := s.w.Write(s.buf.Bytes()); err != nil {
		return fmt.Errorf("flow log: %w", err)
	}
	return nil
}

// Close marks the sink closed and, for a file sink, closes the file.
// Closing twice returns ErrClosed.
func (s *NDJSONSink) Close() error {
	if s.closed {
		return ErrClosed
	}
	s.closed = true
	s.buf = bytes.Buffer{}
	if s.file == nil {
		return nil
	}
	if err := s.file.Close(); err != nil {
		return fmt.Errorf("flow log: %w", err)
	}
	return nil
}
