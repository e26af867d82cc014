package logtail

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/wgsidecar/sidecar/logproto"
)

// upload is a stream's uploader goroutine: it waits for entries, lets a
// batch gather for the flush interval, sends the oldest entries and acks
// them once the collector answered 200, backing off after failures. After
// Shutdown it sends what is left without waiting and returns once the
// buffer is empty, or at once when Shutdown gives up.
func (l *Logger) upload(s *stream) {
	defer l.wg.Done()
	u := uploadState{retry: backoff{min: min(time.Second/2, l.maxRetry), max: l.maxRetry}, batchMax: maxBatchBytes}
	var body, zbody []byte
	idle := s.buf.pendingBytes() == 0
	for {
		if idle {
			if !l.gather(s) {
				return
			}
			idle = false
		}
		if err := s.buf.sync(); err != nil {
			l.log.Warn("logtail: fsync of the buffer failed", "err", err)
		}
		b, err := s.buf.next(body, u.batchMax)
		if err != nil {
			l.log.Error("logtail: reading the buffer", "err", err)
			if !l.sleep(u.retry.next(0)) {
				return
			}
			continue
		}
		body = b.body
		if b.n == 0 {
			// Nothing whole to send: a damaged stretch is passed over,
			// or the buffer is empty.
			if !s.buf.ack(b.end) {
				idle = true
			}
			continue
		}
		code, retryAfter, err := l.post(s, b.body, &zbody)
		if err == nil {
			s.buf.ack(b.end)
			l.succeeded(s, &u, b.n)
			continue
		}
		if l.ctx.Err() != nil {
			return
		}
		if !l.sleep(l.failed(s, &u, b.n, code, retryAfter, err)) {
			return
		}
	}
}

// uploadState is what a stream's upload goroutine keeps between uploads.
type uploadState struct {
	retry    backoff
	failures int // uploads failed in a row
	// batchMax is halved after each 413 (a collector with lower limits)
	// and doubled back after every 64 uploads that went through.
	batchMax, sinceTooLarge int
}

// gather waits for entries to send and lets a batch gather for the flush
// interval, unless one is already whole or Shutdown has begun. It reports
// false when Shutdown had begun before it waited: nothing is left to send.
func (l *Logger) gather(s *stream) bool {
	if l.flushing() {
		return false
	}
	select {
	case <-s.wake:
	case <-l.flush:
	}
	if !l.flushing() {
		t := time.NewTimer(l.flushIvl)
		select {
		case <-t.C:
		case <-s.full:
		case <-l.flush:
		}
		t.Stop()
	}
	return true
}

// succeeded counts an upload of n entries that the collector acknowledged.
func (l *Logger) succeeded(s *stream, u *uploadState, n int) {
	l.uploads.Add(1)
	l.uploadedEntries.Add(uint64(n))
	u.retry.reset()
	if u.sinceTooLarge++; u.sinceTooLarge%64 == 0 {
		u.batchMax = min(2*u.batchMax, maxBatchBytes)
	}
	if u.failures > 0 {
		l.log.Info("logtail: upload succeeded again", "stream", s.pub.String()[:16], "failures", u.failures)
		u.failures = 0
	}
}

// failed counts and logs a failed upload of n entries (code is the
// collector's status, 0 without an answer) and returns how long to wait
// before the next try.
func (l *Logger) failed(s *stream, u *uploadState, n, code int, retryAfter time.Duration, err error) time.Duration {
	if code == http.StatusRequestEntityTooLarge {
		u.batchMax, u.sinceTooLarge = max(u.batchMax/2, 1), 0 // at least one entry goes
	}
	wait := u.retry.next(retryAfter)
	u.failures++
	l.failures.Add(1)
	l.log.Log(l.ctx, failureLevel(u.failures), "logtail: upload failed; will retry", "stream", s.pub.String()[:16],
		"entries", n, "retry_in", wait.Round(time.Millisecond), "err", err)
	return wait
}

// flushing reports whether Shutdown has begun.
func (l *Logger) flushing() bool {
	select {
	case <-l.flush:
		return true
	default:
		return false
	}
}

// sleep waits d, or until Shutdown gives up; it reports whether the full
// wait passed.
func (l *Logger) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.ctx.Done():
		return false
	}
}

// post sends one batch and returns nil if the collector answered 200. On
// failure it returns the status (0 without an answer) and how long the
// collector asked us to wait, if it did.
func (l *Logger) post(s *stream, body []byte, zbody *[]byte) (code int, retryAfter time.Duration, err error) {
	*zbody = s.enc.EncodeAll(body, (*zbody)[:0])
	ctx, cancel := context.WithTimeout(l.ctx, uploadTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(*zbody))
	if err != nil {
		return 0, 0, redactURL(err, s.logURL)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", logproto.EncodingZstd)
	resp, err := l.client.Do(req)
	if err != nil {
		return 0, 0, redactURL(err, s.logURL)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		drain(resp.Body, 64<<10)
		return resp.StatusCode, 0, nil
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	drain(resp.Body, 64<<10)
	return resp.StatusCode, parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
		fmt.Errorf("collector answered %s: %s", resp.Status, strings.TrimSpace(string(msg)))
}

// redactURL rewrites an error from net/http so that it does not show the
// upload URL, which holds the private ID.
func redactURL(err error, logURL string) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s %s: %w", ue.Op, logURL, ue.Err)
	}
	return err
}

// parseRetryAfter parses a Retry-After header (seconds, or an HTTP date)
// into a wait, capped at maxRetryAfter. It returns 0 for none or garbage.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseUint(v, 10, 64); err == nil {
		d = time.Duration(min(secs, uint64(maxRetryAfter/time.Second))) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return max(0, min(d, maxRetryAfter))
}

// backoff computes waits between failed uploads: doubling from min up to
// max, each drawn at random from its upper half ("equal jitter") so that
// many clients that failed together do not retry together.
type backoff struct {
	min, max time.Duration
	cur      time.Duration // the last ceiling; 0 after success
}

// next returns the wait before the next try, at least retryAfter.
func (b *backoff) next(retryAfter time.Duration) time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	d := b.cur/2 + rand.N(b.cur/2+1)
	return max(d, retryAfter)
}

func (b *backoff) reset() { b.cur = 0 }

// failureLevel keeps a long outage from flooding the log: the 1st, 2nd,
// 4th, 8th, … failure in a row is a warning, the others debug.
func failureLevel(failures int) slog.Level {
	if failures&(failures-1) == 0 {
		return slog.LevelWarn
	}
	return slog.LevelDebug
}
