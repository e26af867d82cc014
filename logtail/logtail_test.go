package logtail

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/wgsidecar/sidecar/internal/leaktest"
)

// fakeCollector records uploads. Its answer function, if set, chooses the
// status of each upload (and may set headers); the default is 200.
type fakeCollector struct {
	*httptest.Server
	mu        sync.Mutex
	entries   map[string][]map[string]any // by URL path
	encodings []string
	times     []time.Time
	answer    func(w http.ResponseWriter, n int) int // n counts uploads from 0
}

func newFakeCollector(t *testing.T) *fakeCollector {
	f := &fakeCollector{entries: map[string][]map[string]any{}}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeCollector) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.times)
	f.times = append(f.times, time.Now())
	f.encodings = append(f.encodings, r.Header.Get("Content-Encoding"))
	if f.answer != nil {
		if code := f.answer(w, n); code != http.StatusOK {
			w.WriteHeader(code)
			return
		}
	}
	d, err := zstd.NewReader(r.Body, zstd.WithDecoderConcurrency(1))
	if err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	defer d.Close()
	var batch []map[string]any
	if err := json.NewDecoder(d).Decode(&batch); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	f.entries[r.URL.Path] = append(f.entries[r.URL.Path], batch...)
}

// got returns the entries uploaded to stream id.
func (f *fakeCollector) got(id PrivateID) []map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.entries["/c/test/"+id.Hex()]
}

func testConfig(t *testing.T, base string) Config {
	id, err := NewPrivateID()
	if err != nil {
		t.Fatal(err)
	}
	return Config{
		BaseURL:       base,
		Collection:    "test",
		PrivateID:     id,
		BufferDir:     t.TempDir(),
		FlushInterval: 10 * time.Millisecond,
		MaxRetryDelay: 100 * time.Millisecond,
	}
}

func newLogger(t *testing.T, cfg Config) *Logger {
	t.Helper()
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func shutdown(t *testing.T, l *Logger, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := l.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

func TestWriteStampsAndUploads(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	fc := newFakeCollector(t)
	cfg := testConfig(t, fc.URL)
	l := newLogger(t, cfg)
	before := time.Now().UTC()
	entries := []string{
		`{"nodeId":"n1", "start": "2026-01-01T00:00:00Z",` + "\n" + ` "virtualTraffic":[{"proto":6}]}`,
		`{}`,
		`{"nested":{"logtail":"not top level"}}`,
	}
	for _, e := range entries {
		if err := l.Write([]byte(e)); err != nil {
			t.Fatalf("Write(%s): %v", e, err)
		}
	}
	shutdown(t, l, 5*time.Second)

	got := fc.got(cfg.PrivateID)
	if len(got) != len(entries) {
		t.Fatalf("collector got %d entries, want %d", len(got), len(entries))
	}
	for i, e := range got {
		lt := e["logtail"].(map[string]any)
		ct, err := time.Parse(time.RFC3339Nano, lt["client_time"].(string))
		if err != nil || ct.Before(before) || ct.Location() != time.UTC {
			t.Errorf("entry %d: client_time %v", i, lt["client_time"])
		}
		if lt["proc_id"] != l.ProcID() || len(l.ProcID()) != 16 || lt["proc_seq"] != float64(i+1) {
			t.Errorf("entry %d: logtail %v, want proc_id %s proc_seq %d", i, lt, l.ProcID(), i+1)
		}
		delete(e, "logtail")
		var want map[string]any
		json.Unmarshal([]byte(entries[i]), &want)
		if fmt.Sprint(e) != fmt.Sprint(want) {
			t.Errorf("entry %d = %v, want %v", i, e, want)
		}
	}
	for _, enc := range fc.encodings {
		if enc != "zstd" {
			t.Errorf("upload with Content-Encoding %q", enc)
		}
	}
	if err := l.Write([]byte(`{}`)); err != ErrClosed {
		t.Errorf("Write after Shutdown: %v, want ErrClosed", err)
	}
}

func TestWriteRefuses(t *testing.T) {
	cfg := testConfig(t, "http://127.0.0.1:1")
	cfg.MaxBuffer = 64 << 10
	l := newLogger(t, cfg)
	defer l.Shutdown(context.Background())
	for _, e := range []string{
		``,
		`{"a":`,
		`[{"a":1}]`,
		`"text"`,
		`{"logtail":{}}`,
		`{"a":1, "logtail":null}`,
		`{"pad":"` + strings.Repeat("x", 16<<10) + `"}`, // over MaxBuffer/4
		`{"a":1} {"b":2}`,
	} {
		if err := l.Write([]byte(e)); err == nil {
			t.Errorf("Write(%.40s) succeeded", e)
		}
	}
	if p := l.Pending(); p != 0 {
		t.Errorf("refused entries left %d bytes in the buffer", p)
	}
}

func TestCopyID(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	fc := newFakeCollector(t)
	cfg := testConfig(t, fc.URL)
	copyID, _ := NewPrivateID()
	cfg.CopyID = &copyID
	l := newLogger(t, cfg)
	for i := range 5 {
		l.Write(fmt.Appendf(nil, `{"i":%d}`, i))
	}
	shutdown(t, l, 5*time.Second)
	main, cp := fc.got(cfg.PrivateID), fc.got(copyID)
	if len(main) != 5 || len(cp) != 5 {
		t.Fatalf("main stream got %d, copy %d; want 5 each", len(main), len(cp))
	}
	for i := range 5 {
		if main[i]["i"] != cp[i]["i"] || cp[i]["logtail"].(map[string]any)["proc_seq"] != float64(i+1) {
			t.Errorf("entry %d: main %v, copy %v", i, main[i], cp[i])
		}
	}
}

// TestRetryAfter: the collector answers 503 with Retry-After: 1, then
// 200; the client must wait the second it was asked to.
func TestRetryAfter(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	fc := newFakeCollector(t)
	fc.answer = func(w http.ResponseWriter, n int) int {
		if n == 0 {
			w.Header().Set("Retry-After", "1")
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	}
	cfg := testConfig(t, fc.URL)
	cfg.MaxRetryDelay = 10 * time.Millisecond // the backoff alone would retry at once
	l := newLogger(t, cfg)
	l.Write([]byte(`{"a":1}`))
	shutdown(t, l, 10*time.Second)
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if len(fc.times) != 2 {
		t.Fatalf("%d uploads, want 2", len(fc.times))
	}
	if gap := fc.times[1].Sub(fc.times[0]); gap < time.Second || gap > 3*time.Second {
		t.Errorf("retried after %v, want 1 s (Retry-After)", gap)
	}
	if len(fc.entries) != 1 {
		t.Errorf("entries not delivered after the retry")
	}
}

// TestRetriesUntilAccepted: every answer but 200 is retried.
func TestRetriesUntilAccepted(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	fc := newFakeCollector(t)
	codes := []int{500, 400, 404, 413, 429, 302}
	fc.answer = func(w http.ResponseWriter, n int) int {
		if n < len(codes) {
			return codes[n]
		}
		return http.StatusOK
	}
	cfg := testConfig(t, fc.URL)
	cfg.MaxRetryDelay = 5 * time.Millisecond
	log, out := testLog()
	cfg.Logger = log
	l := newLogger(t, cfg)
	l.Write([]byte(`{"a":1}`))
	shutdown(t, l, 10*time.Second)
	if got := fc.got(cfg.PrivateID); len(got) != 1 {
		t.Errorf("got %d entries after %d failures, want 1", len(got), len(codes))
	}
	if strings.Contains(out.String(), cfg.PrivateID.Hex()) {
		t.Errorf("the private ID is in the log:\n%s", out)
	}
	if !strings.Contains(out.String(), "upload succeeded again") {
		t.Errorf("no recovery message in the log:\n%s", out)
	}
	if c := l.Counts(); c.Failures != uint64(len(codes)) || c.Uploads != 1 || c.UploadedEntries != 1 || c.Dropped != 0 || c.PendingBytes != 0 {
		t.Errorf("Counts() = %+v; want %d failures, 1 upload of 1 entry, nothing dropped or pending", c, len(codes))
	}
}

// TestShutdownGivesUp: with a collector that never answers, Shutdown
// returns at its deadline, leaves no goroutine, and the entries wait in
// the buffer for the next Logger, which delivers them.
func TestShutdownGivesUp(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(hang.Close)
	t.Cleanup(func() { close(release) })
	cfg := testConfig(t, hang.URL)
	l := newLogger(t, cfg)
	for i := range 10 {
		l.Write(fmt.Appendf(nil, `{"i":%d}`, i))
	}
	time.Sleep(50 * time.Millisecond) // an upload is in flight
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := l.Shutdown(ctx)
	if err == nil || !strings.Contains(err.Error(), "stay in the buffer") {
		t.Errorf("Shutdown = %v, want entries left", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown took %v past a 200 ms deadline", d)
	}

	fc := newFakeCollector(t)
	cfg.BaseURL = fc.URL
	l = newLogger(t, cfg)
	shutdown(t, l, 5*time.Second)
	if got := fc.got(cfg.PrivateID); len(got) != 10 {
		t.Errorf("next Logger delivered %d entries, want 10", len(got))
	}
}

func TestConfigErrors(t *testing.T) {
	good := testConfig(t, "http://127.0.0.1:1")
	tests := []struct {
		name string
		edit func(*Config)
	}{
		{"no BaseURL", func(c *Config) { c.BaseURL = "" }},
		{"BaseURL without scheme", func(c *Config) { c.BaseURL = "127.0.0.1:8080" }},
		{"bad collection", func(c *Config) { c.Collection = "a/b" }},
		{"no PrivateID", func(c *Config) { c.PrivateID = PrivateID{} }},
		{"CopyID equals PrivateID", func(c *Config) { c.CopyID = &c.PrivateID }},
		{"no BufferDir", func(c *Config) { c.BufferDir = "" }},
		{"tiny MaxBuffer", func(c *Config) { c.MaxBuffer = 100 }},
	}
	for _, tt := range tests {
		cfg := good
		tt.edit(&cfg)
		if l, err := New(cfg); err == nil {
			l.Shutdown(context.Background())
			t.Errorf("%s: New succeeded", tt.name)
		}
	}
}

func TestPrivateIDRedacted(t *testing.T) {
	id, _ := NewPrivateID()
	secret := id.Hex()
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "id", id, "cfg", Config{PrivateID: id})
	for _, s := range []string{
		fmt.Sprint(id), fmt.Sprintf("%v %s %x %X %+v %#v %q", id, id, id, id, id, id, id),
		fmt.Sprintf("%+v", Config{PrivateID: id}), logged.String(),
	} {
		if strings.Contains(strings.ToLower(s), secret) {
			t.Errorf("private ID shown in %q", s)
		}
	}
	back, err := ParsePrivateID(strings.ToUpper(secret))
	if err != nil || back != id {
		t.Errorf("ParsePrivateID(Hex()) = %v, %v", back, err)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"1", time.Second},
		{" 120 ", 2 * time.Minute},
		{"99999999999", maxRetryAfter},
		{"-1", 0},
		{"soon", 0},
		{now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{now.Add(24 * time.Hour).Format(http.TimeFormat), maxRetryAfter},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{min: 100 * time.Millisecond, max: time.Second}
	ceilings := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, c := range ceilings {
		c *= time.Millisecond
		if d := b.next(0); d < c/2 || d > c {
			t.Errorf("try %d: wait %v, want in [%v, %v]", i, d, c/2, c)
		}
	}
	if d := b.next(5 * time.Second); d != 5*time.Second {
		t.Errorf("with Retry-After 5s: %v", d)
	}
	b.reset()
	if d := b.next(0); d > 100*time.Millisecond {
		t.Errorf("after reset: %v", d)
	}
}
