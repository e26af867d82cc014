// Package logtail is the client of a log stream: it stamps JSON entries,
// keeps them in a bounded disk buffer and uploads them, zstd-compressed and
// in batches, to a collector, until the collector has acknowledged them.
//
// It carries any JSON object and knows nothing of what the entries say
// (flows, say): the caller marshals, logtail delivers. It shares only the
// wire protocol (package logproto, which also holds the stream IDs) with
// the collector:
//
//	POST {BaseURL}/c/{collection}/{private ID, 64 hex digits}
//	Content-Type: application/json
//	Content-Encoding: zstd
//
//	[{"logtail":{"client_time":"…","proc_id":"…","proc_seq":1},…}, …]
//
// A stream is named by a collection and a 32-byte private ID; its public
// ID, the SHA-256 of the private ID, names it to readers. Each entry gets a
// "logtail" member: client_time (RFC 3339, nanoseconds, UTC), proc_id (16
// hex digits, random per Logger) and proc_seq (1, 2, 3, … per stream and
// Logger), so that a reader finds gaps and the collector drops an entry
// sent twice. 200 is success; any other answer, or none, is retried with
// capped exponential backoff and jitter, honouring Retry-After.
//
// Entries leave the disk buffer only once the collector has answered 200,
// so neither a collector outage nor the death of this process (SIGKILL
// included) loses what the buffer held: the next process that opens the
// same BufferDir sends it first. Duplicates are possible after a crash;
// the collector drops them. When the buffer reaches its bound, the oldest
// entries go and an entry {"logtail":{…},"dropped_entries":N} says how
// many (at most: an upload already under way may still deliver some of
// them). See buffer.go for the format on disk and the fsync policy.
package logtail

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/wgsidecar/sidecar/logproto"
)

// MaxEntryBytes bounds one entry, compacted, as given to Write (a quarter
// of MaxBuffer, if that is less). The collector accepts entries up to at
// least twice this size.
const MaxEntryBytes = logproto.MaxEntryBytes

const (
	// stampReserve bounds the "logtail" member that Write adds.
	stampReserve = 256
	// maxLineBytes bounds one line of the buffer.
	maxLineBytes = MaxEntryBytes + stampReserve
	// maxBatchBytes bounds an upload's JSON array (before compression)
	// unless it holds a single longer entry. A zstd frame of this size
	// needs a window the collector is bound to accept
	// (logproto.MaxZstdWindow).
	maxBatchBytes = 1 << 20
	// uploadTimeout bounds one upload, request and answer.
	uploadTimeout = time.Minute
	// maxRetryAfter caps a collector's Retry-After.
	maxRetryAfter = 10 * time.Minute

	defaultMaxBuffer     = 64 << 20
	defaultFlushInterval = time.Second
	defaultMaxRetryDelay = 30 * time.Second
)

// Config configures a Logger. BaseURL, Collection, PrivateID and BufferDir
// are required.
type Config struct {
	// BaseURL is the collector's base URL, e.g. http://127.0.0.1:8080.
	BaseURL string
	// Collection names the collection the stream belongs to: letters,
	// digits, '.', '_' and '-'.
	Collection string
	// PrivateID names the stream and authorises writing to it.
	PrivateID PrivateID
	// CopyID, if set, names a second stream (same collection) that gets a
	// copy of every entry, with its own buffer and sequence numbers.
	CopyID *PrivateID
	// BufferDir holds the disk buffers, one subdirectory per stream named
	// by its public ID (created with mode 0700); one process at a time
	// may use a stream's buffer. Entries buffered for another private ID
	// wait in that ID's subdirectory until a Logger with that ID runs.
	BufferDir string
	// MaxBuffer bounds each stream's buffer, in bytes (default 64 MiB).
	MaxBuffer int64
	// HTTPClient sends the uploads; nil means a client of the Logger's
	// own, whose idle connections Shutdown closes.
	HTTPClient *http.Client
	// FlushInterval is how long an entry may wait for others to join its
	// upload (default 1 s).
	FlushInterval time.Duration
	// MaxRetryDelay caps the backoff between failed uploads (default 30 s).
	// A longer Retry-After is still honoured, up to 10 minutes.
	MaxRetryDelay time.Duration
	// Logger receives the Logger's own diagnostics; nil discards them.
	Logger *slog.Logger
}

// ErrClosed is returned by Write after Shutdown.
var ErrClosed = errors.New("logtail: logger shut down")

// A Logger stamps entries, buffers them on disk and uploads them. Its
// methods are safe for concurrent use.
type Logger struct {
	log       *slog.Logger
	procID    string // 16 hex digits, random per Logger
	client    *http.Client
	ownClient bool // client is ours: Shutdown closes its idle connections
	flushIvl  time.Duration
	maxRetry  time.Duration
	maxEntry  int
	streams   []*stream

	flush  chan struct{}      // closed by Shutdown: send what is left, then stop
	ctx    context.Context    // cancelled when Shutdown gives up waiting
	cancel context.CancelFunc // cancels ctx
	wg     sync.WaitGroup     // the uploaders

	mu     sync.RWMutex // held for reading by Write, for writing by Shutdown
	closed bool         // guarded by mu

	compact sync.Pool // *bytes.Buffer scratch for Write

	// Counters for Counts.
	uploads, uploadedEntries, failures, dropped atomic.Uint64
}

// Counts are a Logger's running totals, over all its streams.
type Counts struct {
	Uploads         uint64 // batches the collector accepted
	UploadedEntries uint64 // entries in those batches
	Failures        uint64 // upload attempts that failed (each is retried)
	Dropped         uint64 // entries dropped unsent because the buffer was full
	PendingBytes    int64  // bytes of entries waiting in the buffers
}

// Counts returns the Logger's totals so far. It is safe to call at any
// time, also during and after Shutdown.
func (l *Logger) Counts() Counts {
	return Counts{
		Uploads: l.uploads.Load(), UploadedEntries: l.uploadedEntries.Load(),
		Failures: l.failures.Load(), Dropped: l.dropped.Load(), PendingBytes: l.Pending(),
	}
}

// stream is one log stream: its buffer, its sequence and its uploader.
type stream struct {
	pub    PublicID
	url    string // upload URL; holds the private ID: never log it
	logURL string // url with the private ID redacted
	buf    *buffer
	enc    *zstd.Encoder // used by the uploader goroutine only
	wake   chan struct{} // an entry was written (capacity 1)
	full   chan struct{} // a whole batch waits (capacity 1)

	mu   sync.Mutex // serialises writers: seq, line, the order of lines
	seq  uint64     // last proc_seq given; guarded by mu
	line []byte     // scratch line; guarded by mu
}

// New opens (or recovers) the disk buffers in cfg.BufferDir and starts one
// uploader per stream. Entries that an earlier process left in the buffer
// are uploaded first.
func New(cfg Config) (*Logger, error) {
	if err := checkConfig(&cfg); err != nil {
		return nil, err
	}
	var pid [8]byte
	if _, err := rand.Read(pid[:]); err != nil {
		return nil, fmt.Errorf("logtail: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Logger{
		log:      cfg.Logger,
		procID:   hex.EncodeToString(pid[:]),
		client:   cfg.HTTPClient,
		flushIvl: cfg.FlushInterval,
		maxRetry: cfg.MaxRetryDelay,
		maxEntry: int(min(MaxEntryBytes, cfg.MaxBuffer/4)),
		flush:    make(chan struct{}),
		ctx:      ctx,
		cancel:   cancel,
	}
	if l.client == nil {
		l.client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
		l.ownClient = true
	}
	ids := []PrivateID{cfg.PrivateID}
	if cfg.CopyID != nil {
		ids = append(ids, *cfg.CopyID)
	}
	base := strings.TrimRight(cfg.BaseURL, "/") + logproto.UploadPrefix + url.PathEscape(cfg.Collection) + "/"
	for _, id := range ids {
		s, err := l.openStream(cfg, id, base)
		if err != nil {
			for _, s := range l.streams {
				s.buf.close()
				s.enc.Close()
			}
			cancel()
			return nil, err
		}
		l.streams = append(l.streams, s)
	}
	for _, s := range l.streams {
		if n := s.buf.pendingBytes(); n > 0 {
			l.log.Info("logtail: sending entries left by an earlier process", "stream", s.pub.String()[:16], "bytes", n)
		}
		l.wg.Add(1)
		go l.upload(s)
	}
	return l, nil
}

func (l *Logger) openStream(cfg Config, id PrivateID, base string) (*stream, error) {
	pub := id.Public()
	buf, err := openBuffer(filepath.Join(cfg.BufferDir, pub.String()), cfg.MaxBuffer, cfg.Logger)
	if err != nil {
		return nil, err
	}
	enc, err := newEncoder()
	if err != nil {
		buf.close()
		return nil, fmt.Errorf("logtail: %w", err)
	}
	return &stream{
		pub:    pub,
		url:    base + id.Hex(),
		logURL: base + "REDACTED",
		buf:    buf,
		enc:    enc,
		wake:   make(chan struct{}, 1),
		full:   make(chan struct{}, 1),
	}, nil
}

// newEncoder returns the zstd encoder of one uploader: synchronous (no
// goroutines), default level, a window no larger than a batch.
func newEncoder() (*zstd.Encoder, error) {
	return zstd.NewWriter(nil,
		zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(1<<20),
		zstd.WithEncoderLevel(zstd.SpeedDefault))
}

func checkConfig(cfg *Config) error {
	u, err := url.Parse(cfg.BaseURL)
	switch {
	case cfg.BaseURL == "":
		return errors.New("logtail: Config.BaseURL is required")
	case err != nil:
		return fmt.Errorf("logtail: Config.BaseURL: %w", err)
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		return fmt.Errorf("logtail: Config.BaseURL %q: want http://HOST[:PORT] or https://…", cfg.BaseURL)
	case !logproto.ValidCollection(cfg.Collection):
		return fmt.Errorf("logtail: Config.Collection %q: want 1 to %d letters, digits, '.', '_' or '-'", cfg.Collection, logproto.MaxCollectionLen)
	case cfg.PrivateID.IsZero():
		return errors.New("logtail: Config.PrivateID is required")
	case cfg.CopyID != nil && *cfg.CopyID == cfg.PrivateID:
		return errors.New("logtail: Config.CopyID equals PrivateID")
	case cfg.CopyID != nil && cfg.CopyID.IsZero():
		return errors.New("logtail: Config.CopyID is the zero ID")
	case cfg.BufferDir == "":
		return errors.New("logtail: Config.BufferDir is required")
	case cfg.MaxBuffer < 0 || cfg.FlushInterval < 0 || cfg.MaxRetryDelay < 0:
		return errors.New("logtail: negative Config.MaxBuffer, FlushInterval or MaxRetryDelay")
	}
	if cfg.MaxBuffer == 0 {
		cfg.MaxBuffer = defaultMaxBuffer
	}
	if cfg.MaxBuffer < 4<<10 {
		return fmt.Errorf("logtail: Config.MaxBuffer %d is below the minimum of 4096 bytes", cfg.MaxBuffer)
	}
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = defaultFlushInterval
	}
	if cfg.MaxRetryDelay == 0 {
		cfg.MaxRetryDelay = defaultMaxRetryDelay
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Write stamps entry, one JSON object, with a "logtail" member and stores
// it in each stream's disk buffer. When Write returns nil the entry is in
// the buffer and survives the process being killed. The member name
// "logtail" is reserved: an entry that has one is refused. Write does not
// keep entry.
func (l *Logger) Write(entry []byte) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return ErrClosed
	}
	buf, _ := l.compact.Get().(*bytes.Buffer)
	if buf == nil {
		buf = new(bytes.Buffer)
	}
	defer l.compact.Put(buf)
	buf.Reset()
	if err := json.Compact(buf, entry); err != nil {
		return fmt.Errorf("logtail: entry is not valid JSON: %w", err)
	}
	obj := buf.Bytes()
	switch {
	case obj[0] != '{':
		return errors.New("logtail: entry is not a JSON object")
	case len(obj) > l.maxEntry:
		return fmt.Errorf("logtail: entry of %d bytes is over the limit of %d", len(obj), l.maxEntry)
	case bytes.Contains(obj, []byte(`"`+logproto.StampMember+`"`)) && hasMember(obj, logproto.StampMember):
		return errors.New(`logtail: entry has a "logtail" member, which is reserved`)
	}
	now := time.Now()
	var errs []error
	for _, s := range l.streams {
		if err := l.write(s, obj, now); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// write stamps obj and appends it to s's buffer, first dropping the oldest
// entries (and recording how many) if the buffer is full.
func (l *Logger) write(s *stream, obj []byte, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	dropped, err := s.buf.makeRoom(int64(len(obj)+stampReserve) + 2*stampReserve)
	if err != nil {
		return err
	}
	if dropped > 0 {
		l.dropped.Add(uint64(dropped))
		l.log.Warn("logtail: buffer full; dropped the oldest entries", "stream", s.pub.String()[:16], "entries", dropped)
		rec := fmt.Appendf(nil, `{"dropped_entries":%d}`, dropped)
		s.seq++
		s.line = l.stamp(s.line[:0], rec, s.seq, now)
		if _, err := s.buf.append(s.line); err != nil {
			return err
		}
	}
	s.seq++
	s.line = l.stamp(s.line[:0], obj, s.seq, now)
	pending, err := s.buf.append(s.line)
	if err != nil {
		return err
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	if pending >= maxBatchBytes {
		select {
		case s.full <- struct{}{}:
		default:
		}
	}
	return nil
}

// stamp appends obj to dst with the "logtail" member as its first member.
func (l *Logger) stamp(dst, obj []byte, seq uint64, now time.Time) []byte {
	dst = append(dst, `{"`+logproto.StampMember+`":{"`+logproto.ClientTime+`":"`...)
	dst = now.UTC().AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","`+logproto.ProcID+`":"`...)
	dst = append(dst, l.procID...)
	dst = append(dst, `","`+logproto.ProcSeq+`":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, '}')
	if len(obj) > 2 { // not {}
		dst = append(dst, ',')
	}
	return append(dst, obj[1:]...)
}

// hasMember reports whether the JSON object obj has a top-level member
// named name.
func hasMember(obj []byte, name string) bool {
	dec := json.NewDecoder(bytes.NewReader(obj))
	if _, err := dec.Token(); err != nil { // {
		return false
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return false
		}
		if key == name {
			return true
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return false
		}
	}
	return false
}

// Shutdown stops taking entries, uploads what the buffers hold until they
// are empty or ctx is done, then stops the uploaders and closes the
// buffers; it leaves no goroutine behind. It returns an error if entries
// are left in a buffer (they wait there for the next process).
func (l *Logger) Shutdown(ctx context.Context) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()

	close(l.flush)
	done := make(chan struct{})
	go func() {
		l.wg.Wait()
		close(done)
	}()
	var stopErr error
	select {
	case <-done:
	case <-ctx.Done():
		stopErr = ctx.Err()
		l.cancel()
		<-done
	}
	l.cancel()

	var left int64
	var errs []error
	for _, s := range l.streams {
		left += s.buf.pendingBytes()
		errs = append(errs, s.buf.close(), s.enc.Close())
	}
	if l.ownClient {
		l.client.CloseIdleConnections()
	}
	if left > 0 {
		if stopErr == nil {
			stopErr = errors.New("stopped")
		}
		errs = append(errs, fmt.Errorf("logtail: %d bytes of entries stay in the buffer for the next start: %w", left, stopErr))
	}
	return errors.Join(errs...)
}

// Pending returns how many bytes of entries wait in the buffers.
func (l *Logger) Pending() int64 {
	var n int64
	for _, s := range l.streams {
		n += s.buf.pendingBytes()
	}
	return n
}

// PublicID returns the public ID of the main stream.
func (l *Logger) PublicID() PublicID { return l.streams[0].pub }

// ProcID returns this Logger's proc_id, as stamped on its entries.
func (l *Logger) ProcID() string { return l.procID }

// drain reads and discards up to n bytes of r.
func drain(r io.Reader, n int64) { io.Copy(io.Discard, io.LimitReader(r, n)) }
