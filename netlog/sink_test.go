package netlog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// sinkMessages are messages to write: a built window, and one with a
// logged time and times outside UTC.
func sinkMessages() []Message {
	msgs := Build("nTestNode", windowStart, windowEnd, scenarioVirtual, scenarioPhysical, false, scenario.IsNode)
	logged := windowEnd.Add(time.Second)
	return append(msgs, Message{
		NodeID: "nOther", Logged: &logged, Start: windowStart, End: windowEnd,
		VirtualTraffic: []ConnectionCounts{cc(protoTCP, "10.0.0.5:1", "10.0.0.6:2", 1, 2, 3, 4)},
	})
}

// utc returns m with its times in UTC, as a sink writes them.
func utc(m Message) Message {
	m.Start, m.End = m.Start.UTC(), m.End.UTC()
	if m.Logged != nil {
		l := m.Logged.UTC()
		m.Logged = &l
	}
	return m
}

// readLines parses NDJSON output.
func readLines(t *testing.T, out []byte) []Message {
	t.Helper()
	if len(out) > 0 && out[len(out)-1] != '\n' {
		t.Errorf("output does not end in a newline: %q", out)
	}
	var msgs []Message
	for i, line := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		if line == "" {
			continue
		}
		var m Message
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %d: %v: %s", i+1, err, line)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

func TestNDJSONSink(t *testing.T) {
	var buf bytes.Buffer
	s := NewNDJSONSink(&buf)
	msgs := sinkMessages()
	for i := range msgs {
		if err := s.Write(context.Background(), &msgs[i]); err != nil {
			t.Fatal(err)
		}
	}
	out := buf.Bytes()
	if n := bytes.Count(out, []byte("\n")); n != len(msgs) {
		t.Errorf("wrote %d lines, want %d", n, len(msgs))
	}
	got := readLines(t, out)
	var want []Message
	for _, m := range msgs {
		want = append(want, utc(m))
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("lines parse back differently (-got +want):\n%s", diff(render(got), render(want)))
	}
	for _, s := range []string{
		`"start":"2025-03-14T15:26:50.123456789Z"`,
		`"end":"2025-03-14T15:26:55.123456788Z"`,
		`"logged":"2025-03-14T15:26:56.123456788Z"`,
	} {
		if !bytes.Contains(out, []byte(s)) {
			t.Errorf("output lacks %s", s)
		}
	}
	// The sink changes nothing in the messages it writes.
	if msgs[1].Start.Location() == time.UTC {
		t.Error("Write changed the message's times")
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(context.Background(), &msgs[0]); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close = %v, want ErrClosed", err)
	}
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close = %v, want ErrClosed", err)
	}
}

// writeRecorder records each Write call.
type writeRecorder struct{ calls [][]byte }

func (w *writeRecorder) Write(p []byte) (int, error) {
	w.calls = append(w.calls, bytes.Clone(p))
	return len(p), nil
}

func TestNDJSONSinkOneWritePerLine(t *testing.T) {
	var w writeRecorder
	s := NewNDJSONSink(&w)
	msgs := sinkMessages()
	for i := range msgs {
		if err := s.Write(context.Background(), &msgs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if len(w.calls) != len(msgs) {
		t.Fatalf("%d Write calls for %d messages", len(w.calls), len(msgs))
	}
	for i, c := range w.calls {
		if bytes.Count(c, []byte("\n")) != 1 || c[len(c)-1] != '\n' {
			t.Errorf("call %d is not one line: %q", i, c)
		}
	}
}

func TestNDJSONSinkErrors(t *testing.T) {
	msgs := sinkMessages()

	var buf bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := NewNDJSONSink(&buf).Write(ctx, &msgs[0]); !errors.Is(err, context.Canceled) {
		t.Errorf("Write with a done context = %v, want context.Canceled", err)
	}
	if buf.Len() != 0 {
		t.Errorf("Write with a done context wrote %q", buf.Bytes())
	}

	broken := errors.New("disk on fire")
	if err := NewNDJSONSink(failWriter{broken}).Write(context.Background(), &msgs[0]); !errors.Is(err, broken) {
		t.Errorf("Write to a failing writer = %v, want %v", err, broken)
	}
}

type failWriter struct{ err error }

func (w failWriter) Write([]byte) (int, error) { return 0, w.err }

func TestFileSink(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flows.ndjson")
	msgs := sinkMessages()
	// Two sinks one after the other: the second appends.
	for _, m := range msgs {
		s, err := NewFileSink(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Write(context.Background(), &m); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm&^0o600 != 0 {
		t.Errorf("file mode %v, want at most 0600", perm)
	}
	out, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got := readLines(t, out)
	var want []Message
	for _, m := range msgs {
		want = append(want, utc(m))
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("file parses back differently (-got +want):\n%s", diff(render(got), render(want)))
	}
}

func TestFileSinkError(t *testing.T) {
	if _, err := NewFileSink(t.TempDir()); err == nil {
		t.Error("NewFileSink(a directory) succeeded")
	}
	if _, err := NewFileSink(filepath.Join(t.TempDir(), "missing", "flows.ndjson")); err == nil {
		t.Error("NewFileSink(in a missing directory) succeeded")
	}
}
