package collector

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/wgsidecar/sidecar/logproto"
)

const (
	// MaxEntryBytes bounds one entry of an upload as received. It is
	// twice what the logtail client sends.
	MaxEntryBytes = 2 * logproto.MaxEntryBytes
	// entryOverhead is what an entry costs in memory beyond its JSON; it
	// counts against MaxDecodedBytes, so that an upload of many tiny
	// entries is bounded too.
	entryOverhead = 128
)

// An httpError is a refusal: an HTTP status and a message for the client.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return fmt.Sprintf("%d %s", e.code, e.msg) }

func badRequest(format string, args ...any) *httpError {
	return &httpError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

func tooLarge(format string, args ...any) *httpError {
	return &httpError{http.StatusRequestEntityTooLarge, fmt.Sprintf(format, args...)}
}

// handleUpload serves POST /c/{collection}/{privateID}.
func (s *Server) handleUpload(w http.ResponseWriter, r *http.Request) {
	coll := r.PathValue("collection")
	if herr := s.checkCollection(coll); herr != nil {
		s.refuse(w, r, herr)
		return
	}
	priv, perr := logproto.ParsePrivateID(r.PathValue("id"))
	if perr != nil {
		s.refuse(w, r, badRequest("the private ID must be 64 hexadecimal digits"))
		return
	}
	raw, herr := s.readBody(w, r)
	if herr != nil {
		s.refuse(w, r, herr)
		return
	}
	// Bound the memory of uploads being decoded: each may hold up to
	// MaxDecodedBytes of entries. The slot is given back once the entries
	// are parsed; while they wait to be stored they count against the
	// storing budget instead, by their size, so that many uploads can
	// share one commit (GroupCommit) within the same bound.
	select {
	case s.uploads <- struct{}{}:
	case <-r.Context().Done():
		return
	}
	decoding := true
	defer func() {
		if decoding {
			<-s.uploads
		}
	}()
	src, done, herr := s.decodedBody(raw, r.Header.Get("Content-Encoding"))
	if herr != nil {
		s.refuse(w, r, herr)
		return
	}
	defer done()

	template := Entry{Collection: coll, Stream: [32]byte(priv.Public()), Logged: s.now().UTC()}
	entries, err := parseUpload(src, s.maxDecoded, template)
	if err != nil {
		s.refuse(w, r, asHTTPError(err))
		return
	}
	size := entriesSize(entries)
	if !s.storing.acquire(r.Context(), size) {
		return
	}
	defer s.storing.release(size)
	<-s.uploads
	decoding = false
	stored, err := s.store.Put(r.Context(), entries)
	if err != nil {
		s.log.Error("collector: storing an upload failed", "collection", coll, "entries", len(entries), "err", err)
		s.refuse(w, r, &httpError{http.StatusServiceUnavailable, "storage failed; try again"})
		return
	}
	s.log.Debug("collector: upload stored", "collection", coll, "stream", hex.EncodeToString(template.Stream[:8]),
		"entries", len(entries), "duplicates", len(entries)-stored)
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"stored":%d,"duplicates":%d}`+"\n", stored, len(entries)-stored)
}

// readBody reads the body as sent, whole, within MaxBodyBytes: a slow
// client then holds no decoding slot.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *httpError) {
	if r.ContentLength > s.maxBody {
		return nil, tooLarge("body of %d bytes is over the limit of %d", r.ContentLength, s.maxBody)
	}
	body := &limitReader{r: http.MaxBytesReader(w, r.Body, s.maxBody), n: s.maxBody}
	raw, err := io.ReadAll(body)
	switch {
	case err != nil && body.exceeded:
		return nil, tooLarge("body is over the limit of %d bytes", s.maxBody)
	case err != nil:
		return nil, badRequest("cannot read the body: %v", err)
	}
	return raw, nil
}

// decodedBody is the body raw as its Content-Encoding says to read it
// (identity or zstd); done gives back what reading it borrowed.
func (s *Server) decodedBody(raw []byte, encoding string) (src io.Reader, done func(), herr *httpError) {
	switch enc := strings.ToLower(strings.TrimSpace(encoding)); enc {
	case "", "identity":
		return bytes.NewReader(raw), func() {}, nil
	case logproto.EncodingZstd:
		// A bytes.Reader, not a bytes.Buffer: the decoder would decode a
		// Buffer in one piece rather than as a stream.
		dec := s.getDecoder(bytes.NewReader(raw))
		return zstdReader{dec}, func() { s.putDecoder(dec) }, nil
	default:
		return nil, nil, &httpError{http.StatusUnsupportedMediaType, fmt.Sprintf("unsupported Content-Encoding %q (want zstd or identity)", enc)}
	}
}

// entriesSize is what entries count against MaxDecodedBytes.
func entriesSize(entries []Entry) int64 {
	var n int64
	for i := range entries {
		n += int64(len(entries[i].JSON) + entryOverhead)
	}
	return n
}

// A budget is a bound on bytes held, taken and given back in any
// amounts up to its size. One taker waits at a time, so that two large
// takers cannot each hold a part and wait for the rest.
type budget struct {
	mu     sync.Mutex    // held by the one taker that waits
	tokens chan struct{} // one per budgetUnit held
}

const budgetUnit = 64 << 10

func newBudget(bytes int64) *budget {
	return &budget{tokens: make(chan struct{}, max(1, bytes/budgetUnit))}
}

func (b *budget) units(n int64) int { return int(min(int64(cap(b.tokens)), n/budgetUnit+1)) }

// acquire takes n bytes of the budget, or reports false if ctx ends
// first.
func (b *budget) acquire(ctx context.Context, n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	u := b.units(n)
	for i := range u {
		select {
		case b.tokens <- struct{}{}:
		case <-ctx.Done():
			b.releaseUnits(i)
			return false
		}
	}
	return true
}

// release gives back n bytes taken by acquire.
func (b *budget) release(n int64) { b.releaseUnits(b.units(n)) }

func (b *budget) releaseUnits(u int) {
	for range u {
		<-b.tokens
	}
}

// refuse answers with an error and logs it at debug level. It never logs
// the request path, which holds a private ID.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, herr *httpError) {
	s.log.Debug("collector: request refused", "method", r.Method, "remote", r.RemoteAddr, "status", herr.code, "reason", herr.msg)
	if herr.code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "5")
	}
	http.Error(w, herr.msg, herr.code)
}

// parseUpload reads a JSON array of objects from src, which must hold no
// more than maxDecoded bytes, and returns one stamped Entry per object,
// each a copy of template with the entry's fields filled. It decodes one
// entry at a time and refuses an entry over MaxEntryBytes as soon as it is
// read past that size, so a decompression bomb costs no more memory than
// one entry. Its errors are *httpError.
func parseUpload(src io.Reader, maxDecoded int64, template Entry) ([]Entry, error) {
	lr := &entryLimitReader{r: src, max: maxDecoded, maxAhead: MaxEntryBytes + 64<<10}
	dec := json.NewDecoder(lr)
	lr.dec = dec
	fail := func(err error) error {
		switch {
		case lr.overMax:
			return tooLarge("decoded body is over the limit of %d bytes", maxDecoded)
		case lr.overEntry:
			return tooLarge("an entry is over the limit of %d bytes", MaxEntryBytes)
		}
		return asHTTPError(err)
	}

	tok, err := dec.Token()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, badRequest("empty body (want a JSON array of objects)")
		}
		return nil, fail(err)
	}
	if tok != json.Delim('[') {
		return nil, badRequest("body is not a JSON array")
	}
	st := newStamper(template.Logged)
	var entries []Entry
	var raw json.RawMessage
	var used int64
	for dec.More() {
		if err := dec.Decode(&raw); err != nil {
			return nil, fail(err)
		}
		if raw[0] != '{' {
			return nil, badRequest("entry %d is not a JSON object", len(entries))
		}
		if len(raw) > MaxEntryBytes {
			return nil, tooLarge("entry %d is over the limit of %d bytes", len(entries), MaxEntryBytes)
		}
		e := template
		if err := st.stamp(&e, raw); err != nil {
			return nil, badRequest("entry %d: %v", len(entries), err)
		}
		if used += int64(len(e.JSON) + entryOverhead); used > maxDecoded {
			return nil, tooLarge("decoded entries are over the limit of %d bytes (an entry counts %d bytes more than its length)", maxDecoded, entryOverhead)
		}
		entries = append(entries, e)
	}
	if _, err := dec.Token(); err != nil { // ]
		return nil, fail(err)
	}
	switch _, err := dec.Token(); {
	case errors.Is(err, io.EOF):
	case err == nil:
		return nil, badRequest("data after the JSON array")
	default:
		return nil, fail(err)
	}
	return entries, nil
}

// asHTTPError turns a decoding error into a refusal.
func asHTTPError(err error) *httpError {
	var (
		herr  *httpError
		zerr  zstdError
		syn   *json.SyntaxError
		maxBE *http.MaxBytesError
	)
	switch {
	case errors.As(err, &herr):
		return herr
	case errors.As(err, &maxBE):
		return tooLarge("body is over the limit of %d bytes", maxBE.Limit)
	case errors.As(err, &zerr):
		if errors.Is(zerr.err, zstd.ErrWindowSizeExceeded) || errors.Is(zerr.err, zstd.ErrDecoderSizeExceeded) {
			return tooLarge("zstd frame needs more memory than allowed (window over %d bytes or content over the limit)", logproto.MaxZstdWindow)
		}
		return badRequest("body is not valid zstd: %v", zerr.err)
	case errors.As(err, &syn):
		return badRequest("body is not valid JSON: %v (at byte %d)", syn, syn.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return badRequest("body ends in the middle of the JSON array")
	}
	return badRequest("cannot read the body: %v", err)
}

// limitReader reads at most n bytes from r and notes whether r held more.
type limitReader struct {
	r        io.Reader
	n        int64
	exceeded bool
}

func (l *limitReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.n -= int64(n)
	var maxBE *http.MaxBytesError
	if l.n < 0 || errors.As(err, &maxBE) {
		l.exceeded = true
		if err == nil {
			err = errors.New("body too large")
		}
	}
	return n, err
}

// entryLimitReader feeds a json.Decoder: it stops once more than max bytes
// were read in all, or once the decoder holds more than maxAhead bytes it
// has not consumed (one entry that is too long).
type entryLimitReader struct {
	r         io.Reader
	dec       *json.Decoder
	max       int64
	maxAhead  int64
	read      int64
	overMax   bool
	overEntry bool
}

var errLimit = errors.New("upload limit reached")

func (l *entryLimitReader) Read(p []byte) (int, error) {
	if l.read > l.max {
		l.overMax = true
		return 0, errLimit
	}
	if l.read-l.dec.InputOffset() > l.maxAhead {
		l.overEntry = true
		return 0, errLimit
	}
	p = p[:min(int64(len(p)), l.max+1-l.read)]
	n, err := l.r.Read(p)
	l.read += int64(n)
	return n, err
}

// zstdReader marks the errors of a zstd decoder as such.
type zstdReader struct{ d *zstd.Decoder }

type zstdError struct{ err error }

func (e zstdError) Error() string { return "zstd: " + e.err.Error() }
func (e zstdError) Unwrap() error { return e.err }

func (z zstdReader) Read(p []byte) (int, error) {
	n, err := z.d.Read(p)
	if err != nil && err != io.EOF {
		err = zstdError{err}
	}
	return n, err
}

// getDecoder returns a pooled zstd decoder reading from r. The decoders
// run synchronously (concurrency 1), so an idle one holds no goroutine.
func (s *Server) getDecoder(r io.Reader) *zstd.Decoder {
	if d, ok := s.decoders.Get().(*zstd.Decoder); ok {
		if d.Reset(r) == nil {
			return d
		}
	}
	d, err := zstd.NewReader(r,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxWindow(logproto.MaxZstdWindow),
		zstd.WithDecoderMaxMemory(uint64(s.maxDecoded)),
		zstd.WithDecoderLowmem(true))
	if err != nil {
		panic(err) // only bad options fail
	}
	return d
}

func (s *Server) putDecoder(d *zstd.Decoder) {
	d.Reset(nil)
	s.decoders.Put(d)
}

// now returns the collector's clock.
func (s *Server) now() time.Time { return s.cfg.Now() }
