package logtail

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testLog returns a logger writing into the returned buffer.
func testLog() (*slog.Logger, *bytes.Buffer) {
	var b bytes.Buffer
	return slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug})), &b
}

func openTestBuffer(t *testing.T, dir string, max int64) *buffer {
	t.Helper()
	log, _ := testLog()
	b, err := openBuffer(dir, max, log)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// appendN appends entries {"i":from}…{"i":from+n-1}.
func appendN(t *testing.T, b *buffer, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		line := fmt.Appendf(nil, `{"i":%d}`, i)
		if _, err := b.makeRoom(int64(len(line) + 1)); err != nil {
			t.Fatal(err)
		}
		if _, err := b.append(line); err != nil {
			t.Fatal(err)
		}
	}
}

// drainAll reads every pending entry, acking as it goes, and returns the
// JSON arrays' contents joined.
func drainAll(t *testing.T, b *buffer, maxBody int) string {
	t.Helper()
	var all []string
	for {
		bt, err := b.next(nil, maxBody)
		if err != nil {
			t.Fatal(err)
		}
		if bt.n > 0 {
			all = append(all, string(bt.body[1:len(bt.body)-1]))
		}
		if !b.ack(bt.end) {
			break
		}
	}
	return strings.Join(all, ",")
}

func seqList(from, to int) string {
	var s []string
	for i := from; i <= to; i++ {
		s = append(s, fmt.Sprintf(`{"i":%d}`, i))
	}
	return strings.Join(s, ",")
}

func segmentFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+segmentSuffix))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestBufferBatchesAndAcks(t *testing.T) {
	dir := t.TempDir()
	b := openTestBuffer(t, dir, 1<<20)
	defer b.close()
	appendN(t, b, 1, 10)
	bt, err := b.next(nil, 30) // room for 3 entries of 8 bytes
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(bt.body), "["+seqList(1, 3)+"]"; got != want || bt.n != 3 {
		t.Fatalf("first batch %s (n=%d), want %s", got, bt.n, want)
	}
	// Not acked: the same batch comes again.
	if again, _ := b.next(nil, 30); string(again.body) != string(bt.body) {
		t.Fatalf("unacked batch came back as %s", again.body)
	}
	b.ack(bt.end)
	if got := drainAll(t, b, 1<<20); got != seqList(4, 10) {
		t.Errorf("rest = %s", got)
	}
	if n := b.pendingBytes(); n != 0 {
		t.Errorf("pending %d bytes after draining", n)
	}
}

func TestBufferSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	b := openTestBuffer(t, dir, 1<<20)
	appendN(t, b, 1, 10)
	bt, _ := b.next(nil, 30)
	b.ack(bt.end)
	if err := b.close(); err != nil {
		t.Fatal(err)
	}
	// Without close, as after SIGKILL: the lock file stays; flock does not.
	b = openTestBuffer(t, dir, 1<<20)
	appendN(t, b, 11, 2)
	if got := drainAll(t, b, 1<<20); got != seqList(4, 12) {
		t.Errorf("after reopen = %s", got)
	}
	b.close()
	if files := segmentFiles(t, dir); len(files) != 1 {
		t.Errorf("delivered segments left behind: %v", files)
	}
}

func TestBufferLocked(t *testing.T) {
	dir := t.TempDir()
	b := openTestBuffer(t, dir, 1<<20)
	defer b.close()
	if _, err := openBuffer(dir, 1<<20, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second open: %v, want in use", err)
	}
}

// TestBufferTornLastLine simulates a process killed in the middle of a
// write: the segment ends without a newline. The reader skips that line,
// keeps the rest, and later entries go through.
func TestBufferTornLastLine(t *testing.T) {
	dir := t.TempDir()
	b := openTestBuffer(t, dir, 1<<20)
	appendN(t, b, 1, 3)
	b.close()
	files := segmentFiles(t, dir)
	f, err := os.OpenFile(files[len(files)-1], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"logtail":{"client_ti`)
	f.Close()

	log, out := testLog()
	b, err = openBuffer(dir, 1<<20, log)
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	appendN(t, b, 4, 2)
	if got := drainAll(t, b, 1<<20); got != seqList(1, 5) {
		t.Errorf("got %s", got)
	}
	if !strings.Contains(out.String(), "torn last line") {
		t.Errorf("no warning about the torn line in the log:\n%s", out)
	}
}

// TestBufferDamagedLines simulates lost data inside a segment (zeros, a
// cut line): damaged lines are skipped, whole ones kept.
func TestBufferDamagedLines(t *testing.T) {
	dir := t.TempDir()
	b := openTestBuffer(t, dir, 1<<20)
	appendN(t, b, 1, 1)
	b.close()
	files := segmentFiles(t, dir)
	f, _ := os.OpenFile(files[0], os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString("\x00\x00\x00\x00\n" + `{"i":` + "\n" + `[1,2]` + "\n" + `{"i":2}` + "\n")
	f.Close()
	log, out := testLog()
	b, err := openBuffer(dir, 1<<20, log)
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	if got := drainAll(t, b, 1<<20); got != seqList(1, 2) {
		t.Errorf("got %s", got)
	}
	if n := strings.Count(out.String(), "damaged line"); n != 3 {
		t.Errorf("%d warnings about damaged lines, want 3:\n%s", n, out)
	}
}

// TestBufferBadCursor: an unreadable cursor sends everything again
// (duplicates, which the collector drops) rather than losing anything.
func TestBufferBadCursor(t *testing.T) {
	for _, cursor := range []string{"garbage", "logtail-cursor v1 1 999999\n", "logtail-cursor v1 99 0\n", ""} {
		dir := t.TempDir()
		b := openTestBuffer(t, dir, 1<<20)
		appendN(t, b, 1, 5)
		bt, _ := b.next(nil, 30)
		b.ack(bt.end)
		b.close()
		os.WriteFile(filepath.Join(dir, cursorName), []byte(cursor), 0o600)
		b = openTestBuffer(t, dir, 1<<20)
		if got := drainAll(t, b, 1<<20); got != seqList(1, 5) {
			t.Errorf("cursor %q: got %s, want all", cursor, got)
		}
		b.close()
	}
}

// TestBufferRotates checks that a long buffer spans several segments,
// read in order, and that delivered segments are deleted.
func TestBufferRotates(t *testing.T) {
	dir := t.TempDir()
	b := openTestBuffer(t, dir, 64<<10) // 8 KiB segments
	defer b.close()
	appendN(t, b, 1, 3000) // ~30 KiB
	if files := segmentFiles(t, dir); len(files) < 3 {
		t.Fatalf("%d segments, want several", len(files))
	}
	if got := drainAll(t, b, 5000); got != seqList(1, 3000) {
		t.Errorf("got %d bytes, want 1…3000 in order", len(got))
	}
	if files := segmentFiles(t, dir); len(files) != 1 {
		t.Errorf("%d segments after draining, want the active one", len(files))
	}
}

// TestBufferDropsOldest fills a small buffer: the oldest entries go, the
// bound holds, and dropped plus kept is everything.
func TestBufferDropsOldest(t *testing.T) {
	dir := t.TempDir()
	const max = 8 << 10
	b := openTestBuffer(t, dir, max)
	defer b.close()
	dropped := 0
	const total = 5000
	for i := 1; i <= total; i++ {
		line := fmt.Appendf(nil, `{"i":%d}`, i)
		n, err := b.makeRoom(int64(len(line) + 1))
		if err != nil {
			t.Fatal(err)
		}
		dropped += n
		if _, err := b.append(line); err != nil {
			t.Fatal(err)
		}
		if p := b.pendingBytes(); p > max {
			t.Fatalf("pending %d bytes over the bound %d", p, max)
		}
	}
	got := drainAll(t, b, 1<<20)
	kept := strings.Count(got, "{")
	if dropped == 0 || dropped+kept != total || got != seqList(dropped+1, total) {
		t.Errorf("dropped %d, kept %d (from %.20s), want the newest of %d", dropped, kept, got, total)
	}
}
