package logtail

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// The disk buffer of one stream is a directory holding:
//
//	0000000000000001.ndjson  segments: one entry per line, oldest first;
//	0000000000000002.ndjson  only the newest ("active") one is appended to
//	cursor                   "logtail-cursor v1 SEGMENT OFFSET": the first
//	                         byte not yet acknowledged by the collector
//	lock                     flock'ed while a process owns the directory
//
// Segments are named by a number that only grows. A process never appends
// to a segment it did not create: it starts a new one on open, so a line
// torn by a crash can only be the last line of an older segment, where the
// reader detects it (no newline before the end of the file) and skips it.
// Lines that are not a JSON object (a disk that lost data) are skipped too.
//
// The cursor moves forward only, after the collector answered 200 or when
// the bound forces the oldest entries out. It is replaced by rename. It
// needs no fsync: a cursor that is lost, stale or unreadable only sends
// entries again, which the collector drops as duplicates; a fully
// acknowledged segment is deleted after the cursor has passed it.
//
// Durability: each entry goes to its segment in one write(2), so it
// survives the process being killed once Write has returned. Segments are
// fsynced by the uploader before it reads a batch (so at most one flush
// interval of entries waits in the page cache), when they are rotated, and
// on close; that bounds what a machine crash can take.

const (
	cursorName    = "cursor"
	lockName      = "lock"
	segmentSuffix = ".ndjson"

	// readWindow is how much of a segment one read looks at. A line is
	// never longer, so a window always holds at least one whole line.
	readWindow = maxLineBytes + 1
)

// pos is a place in the buffer: a byte offset in a segment.
type pos struct {
	seg uint64
	off int64
}

func (p pos) before(q pos) bool {
	return p.seg < q.seg || p.seg == q.seg && p.off < q.off
}

type segment struct {
	num  uint64
	size int64
}

// A buffer is the bounded disk buffer of one stream. Its methods are safe
// for concurrent use.
type buffer struct {
	dir    string
	max    int64 // bound on pending bytes
	segMax int64 // the active segment is rotated once it is this long
	log    *slog.Logger

	mu      sync.Mutex
	lock    *os.File  // holds the flock on dir
	segs    []segment // oldest first; the last one is active
	active  *os.File  // the last segment, open for appending
	dirty   bool      // active was written since its last fsync
	cur     pos       // first byte not yet acknowledged
	pending int64     // bytes from cur to the end of the active segment
	closed  bool
	scratch []byte // read buffer, guarded by mu
}

// openBuffer opens (creating it if needed) the buffer in dir, recovers
// what an earlier process left there and starts a new active segment.
func openBuffer(dir string, maxBytes int64, log *slog.Logger) (*buffer, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("logtail: buffer: %w", err)
	}
	lock, err := lockDir(filepath.Join(dir, lockName))
	if err != nil {
		return nil, fmt.Errorf("logtail: buffer: %w", err)
	}
	b := &buffer{
		dir:    dir,
		max:    maxBytes,
		segMax: min(max(maxBytes/8, 4<<10), 4<<20),
		log:    log,
		lock:   lock,
	}
	if err := b.recover(); err != nil {
		lock.Close()
		return nil, err
	}
	if err := b.startSegment(); err != nil {
		lock.Close()
		return nil, err
	}
	return b, nil
}

// recover lists the segments and the cursor left by an earlier process.
func (b *buffer) recover() error {
	ents, err := os.ReadDir(b.dir)
	if err != nil {
		return fmt.Errorf("logtail: buffer: %w", err)
	}
	for _, e := range ents {
		num, ok := parseSegmentName(e.Name())
		if !ok || !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return fmt.Errorf("logtail: buffer: %w", err)
		}
		b.segs = append(b.segs, segment{num: num, size: info.Size()})
	}
	slices.SortFunc(b.segs, func(x, y segment) int { return compareUint(x.num, y.num) })

	cur, err := b.readCursor()
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		b.log.Warn("logtail: unreadable buffer cursor; sending the whole buffer again", "dir", b.dir, "err", err)
	}
	// Segments before the cursor's were acknowledged; a crash came between
	// moving the cursor and deleting them. The cursor's segment always
	// exists (the newest is never deleted), so a cursor naming a missing
	// one is damaged: then nothing is taken for delivered.
	if b.segIndexLocked(cur.seg) >= 0 {
		for b.segs[0].num < cur.seg {
			b.removeSegment(b.segs[0].num)
			b.segs = b.segs[1:]
		}
	}
	switch {
	case len(b.segs) == 0:
		cur = pos{seg: max(cur.seg, 1), off: 0}
	case b.segs[0].num != cur.seg:
		if cur.seg != 0 {
			b.log.Warn("logtail: buffer cursor names a missing segment; sending the whole buffer again", "dir", b.dir)
		}
		cur = pos{seg: b.segs[0].num}
	case cur.off > b.segs[0].size:
		b.log.Warn("logtail: buffer cursor past the end of its segment; sending it again", "dir", b.dir)
		cur.off = 0
	}
	b.cur = cur
	for _, s := range b.segs {
		b.pending += s.size
	}
	b.pending -= cur.off
	return nil
}

// startSegment creates a new, empty active segment.
func (b *buffer) startSegment() error {
	num := b.cur.seg
	if n := len(b.segs); n > 0 {
		num = b.segs[n-1].num + 1
	}
	f, err := os.OpenFile(filepath.Join(b.dir, segmentName(num)), os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("logtail: buffer: %w", err)
	}
	syncDir(b.dir)
	b.segs = append(b.segs, segment{num: num})
	b.active = f
	b.dirty = false
	return nil
}

// rotateLocked closes the active segment and starts a new one.
func (b *buffer) rotateLocked() error {
	if err := b.active.Sync(); err != nil {
		return fmt.Errorf("logtail: buffer: %w", err)
	}
	if err := b.active.Close(); err != nil {
		return fmt.Errorf("logtail: buffer: %w", err)
	}
	b.active = nil
	return b.startSegment()
}

// errBufferClosed is returned by a closed buffer.
var errBufferClosed = errors.New("logtail: buffer closed")

// append writes one line (without its newline; append may use line's
// spare capacity for it) at the end of the buffer and returns how many
// bytes are then pending. The caller must have made room (makeRoom).
func (b *buffer) append(line []byte) (pending int64, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, errBufferClosed
	}
	last := &b.segs[len(b.segs)-1]
	if last.size >= b.segMax {
		if err := b.rotateLocked(); err != nil {
			return 0, err
		}
		last = &b.segs[len(b.segs)-1]
	}
	// One write(2) with the newline: once it returns, the line is in the
	// page cache and survives the process.
	line = append(line, '\n')
	n, err := b.active.Write(line)
	if err != nil {
		// Take back a partial line so the segment stays whole lines.
		if n > 0 {
			if terr := b.active.Truncate(last.size); terr != nil {
				b.log.Warn("logtail: cannot take back a partial line; starting a new segment", "err", terr)
				last.size += int64(n)
				b.pending += int64(n)
				b.rotateLocked()
			}
		}
		return b.pending, fmt.Errorf("logtail: buffer: %w", err)
	}
	last.size += int64(n)
	b.pending += int64(n)
	b.dirty = true
	return b.pending, nil
}

// makeRoom drops the oldest entries, if need be, so that n more bytes fit
// under the bound. It frees at least an eighth of the bound at once, so
// that a full buffer does not drop at every write. It returns how many
// entries it dropped.
func (b *buffer) makeRoom(n int64) (dropped int, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, errBufferClosed
	}
	if b.pending+n <= b.max {
		return 0, nil
	}
	target := max(b.pending+n-b.max, b.max/8)
	var freed int64
	p := b.cur
	for freed < target {
		i := b.segIndexLocked(p.seg)
		if i < 0 {
			break
		}
		s := b.segs[i]
		if p.off >= s.size {
			if i == len(b.segs)-1 {
				break // everything is gone
			}
			p = pos{seg: b.segs[i+1].num}
			continue
		}
		chunk, err := b.readLocked(s, p.off)
		if err != nil {
			return dropped, err
		}
		nl := bytes.IndexByte(chunk, '\n')
		if nl < 0 {
			// A torn last line or a corrupt stretch: it goes too, but it
			// was no entry.
			freed += int64(len(chunk))
			p.off += int64(len(chunk))
			continue
		}
		for nl >= 0 && freed < target {
			freed += int64(nl + 1)
			p.off += int64(nl + 1)
			dropped++
			chunk = chunk[nl+1:]
			nl = bytes.IndexByte(chunk, '\n')
		}
	}
	b.advanceLocked(p)
	return dropped, nil
}

// batch is a run of the oldest pending entries, ready to upload.
type batch struct {
	body []byte // the entries as a JSON array
	n    int    // how many entries body holds
	end  pos    // where the batch ends; ack it once uploaded
}

// next reads the oldest pending entries into a JSON array in dst's storage,
// at most maxBody bytes long unless a single entry is longer. A batch with
// n == 0 and end past the cursor holds only skipped, damaged data: ack it.
func (b *buffer) next(dst []byte, maxBody int) (batch, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return batch{}, errBufferClosed
	}
	body := append(dst[:0], '[')
	n := 0
	p := b.cur
fill:
	for {
		i := b.segIndexLocked(p.seg)
		if i < 0 {
			break
		}
		s := b.segs[i]
		if p.off >= s.size {
			if i == len(b.segs)-1 {
				break
			}
			p = pos{seg: b.segs[i+1].num}
			continue
		}
		chunk, err := b.readLocked(s, p.off)
		if err != nil {
			return batch{}, err
		}
		nl := bytes.IndexByte(chunk, '\n')
		if nl < 0 {
			if p.off+int64(len(chunk)) == s.size {
				if i == len(b.segs)-1 {
					break // cannot happen: the active segment holds whole lines
				}
				b.log.Warn("logtail: skipping a torn last line (the process writing it was killed)",
					"segment", segmentName(s.num), "bytes", len(chunk))
			} else {
				b.log.Warn("logtail: skipping a damaged stretch of the buffer",
					"segment", segmentName(s.num), "offset", p.off, "bytes", len(chunk))
			}
			p.off += int64(len(chunk))
			continue
		}
		for nl >= 0 {
			line := chunk[:nl]
			if !isJSONObject(line) {
				b.log.Warn("logtail: skipping a damaged line of the buffer",
					"segment", segmentName(s.num), "offset", p.off, "bytes", len(line))
			} else {
				if n > 0 && len(body)+len(line)+2 > maxBody {
					break fill
				}
				if n > 0 {
					body = append(body, ',')
				}
				body = append(body, line...)
				n++
			}
			p.off += int64(nl + 1)
			chunk = chunk[nl+1:]
			nl = bytes.IndexByte(chunk, '\n')
		}
	}
	body = append(body, ']')
	return batch{body: body, n: n, end: p}, nil
}

// ack marks everything before end as delivered: it leaves the buffer. It
// reports whether the cursor moved.
func (b *buffer) ack(end pos) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	return b.advanceLocked(end)
}

// advanceLocked moves the cursor forward to p (never back: an upload that
// overlapped a drop acknowledges a place already passed), deletes the
// segments it has passed and saves it.
func (b *buffer) advanceLocked(p pos) bool {
	if !b.cur.before(p) {
		return false
	}
	b.cur = p
	for len(b.segs) > 1 {
		s := b.segs[0]
		if s.num > b.cur.seg || s.num == b.cur.seg && b.cur.off < s.size {
			break
		}
		b.removeSegment(s.num)
		b.segs = b.segs[1:]
		if s.num >= b.cur.seg {
			b.cur = pos{seg: b.segs[0].num}
		}
	}
	b.pending = -b.cur.off
	for _, s := range b.segs {
		if s.num >= b.cur.seg {
			b.pending += s.size
		}
	}
	if err := b.writeCursorLocked(); err != nil {
		b.log.Warn("logtail: cannot save the buffer cursor; entries may be sent twice", "err", err)
	}
	return true
}

// sync fsyncs what was written since the last sync. The fsync itself runs
// without the lock, so writers are not held up.
func (b *buffer) sync() error {
	b.mu.Lock()
	if b.closed || !b.dirty {
		b.mu.Unlock()
		return nil
	}
	f := b.active
	b.dirty = false
	b.mu.Unlock()
	if err := f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("logtail: buffer: %w", err)
	}
	return nil
}

// pendingBytes returns how many bytes wait to be delivered.
func (b *buffer) pendingBytes() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pending
}

// close syncs and closes the buffer and releases its directory.
func (b *buffer) close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	err := b.active.Sync()
	if cerr := b.active.Close(); err == nil {
		err = cerr
	}
	// An empty active segment is of no use to the next process.
	if last := b.segs[len(b.segs)-1]; last.size == 0 && len(b.segs) > 1 {
		b.removeSegment(last.num)
	}
	if cerr := b.lock.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("logtail: buffer: %w", err)
	}
	return nil
}

// readLocked reads up to readWindow bytes of segment s from off, into
// b.scratch: the result is valid until the next read.
func (b *buffer) readLocked(s segment, off int64) ([]byte, error) {
	n := min(s.size-off, readWindow)
	if int64(cap(b.scratch)) < n {
		b.scratch = make([]byte, n)
	}
	buf := b.scratch[:n]
	f, err := os.Open(filepath.Join(b.dir, segmentName(s.num)))
	if err != nil {
		return nil, fmt.Errorf("logtail: buffer: %w", err)
	}
	defer f.Close()
	m, err := f.ReadAt(buf, off)
	if err != nil && !(errors.Is(err, io.EOF) && m > 0) {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("segment %s shorter than expected", segmentName(s.num))
		}
		return nil, fmt.Errorf("logtail: buffer: %w", err)
	}
	return buf[:m], nil
}

func (b *buffer) segIndexLocked(num uint64) int {
	i, ok := slices.BinarySearchFunc(b.segs, num, func(s segment, n uint64) int { return compareUint(s.num, n) })
	if !ok {
		return -1
	}
	return i
}

func (b *buffer) removeSegment(num uint64) {
	if err := os.Remove(filepath.Join(b.dir, segmentName(num))); err != nil && !errors.Is(err, os.ErrNotExist) {
		b.log.Warn("logtail: cannot remove a delivered buffer segment", "err", err)
	}
}

const cursorMagic = "logtail-cursor v1"

func (b *buffer) readCursor() (pos, error) {
	data, err := os.ReadFile(filepath.Join(b.dir, cursorName))
	if err != nil {
		return pos{}, err
	}
	f := strings.Fields(strings.TrimPrefix(string(data), cursorMagic+" "))
	if !strings.HasPrefix(string(data), cursorMagic+" ") || !strings.HasSuffix(string(data), "\n") || len(f) != 2 {
		return pos{}, fmt.Errorf("malformed cursor %q", data)
	}
	seg, err1 := strconv.ParseUint(f[0], 10, 64)
	off, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil || off < 0 {
		return pos{}, fmt.Errorf("malformed cursor %q", data)
	}
	return pos{seg: seg, off: off}, nil
}

func (b *buffer) writeCursorLocked() error {
	tmp := filepath.Join(b.dir, cursorName+".tmp")
	data := fmt.Appendf(nil, "%s %d %d\n", cursorMagic, b.cur.seg, b.cur.off)
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(b.dir, cursorName))
}

func segmentName(num uint64) string { return fmt.Sprintf("%016x%s", num, segmentSuffix) }

func parseSegmentName(name string) (uint64, bool) {
	hex, ok := strings.CutSuffix(name, segmentSuffix)
	if !ok || len(hex) != 16 {
		return 0, false
	}
	num, err := strconv.ParseUint(hex, 16, 64)
	return num, err == nil
}

func compareUint(x, y uint64) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

// isJSONObject reports whether line is one well-formed JSON object.
func isJSONObject(line []byte) bool {
	return len(line) > 1 && line[0] == '{' && json.Valid(line)
}

// syncDir fsyncs a directory so that a file created in it survives a
// machine crash. Failure is not fatal: the file exists for this process.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
