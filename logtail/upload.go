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
	retry := backoff{min: min(time.Second/2, l.maxRetry), max: l.maxRetry}
	var body, zbody []byte
	failures := 0
	// batchMax is halved after each 413 (a collector with lower limits)
	// and doubled back after every 64 uploads that went through.
	batchMax, sinceTooLarge := maxBatchBytes, 0
	idle := s.buf.pendingBytes() == 0
	for {
		if idle {
			if l.flushing() {
				return
			}
			select {
			case <-s.wake:
			case <-l.flush:
			}
			// Let a batch gather, unless one is already whole.
			if !l.flushing() {
				t := time.NewTimer(l.flushIvl)
				select {
				case <-t.C:
				case <-s.full:
				case <-l.flush:
				}
				t.Stop()
			}
			idle = false
		}
		if err := s.buf.sync(); err != nil {
			l.log.Warn("logtail: fsync of the buffer failed", "err", err)
		}
		b, err := s.buf.next(body, batchMax)
		if err != nil {
			l.log.Error("logtail: reading the buffer", "err", err)
			if !l.sleep(retry.next(0)) {
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
			l.uploads.Add(1)
			l.uploadedEntries.Add(uint64(b.n))
			retry.reset()
			if sinceTooLarge++; sinceTooLarge%64 == 0 {
				batchMax = min(2*batchMax, maxBatchBytes)
			}
			if failures > 0 {
				l.log.Info("logtail: upload succeeded again", "stream", s.pub.String()[:16], "failures", failures)
				failures = 0
			}
			continue
		}
		if l.ctx.Err() != nil {
			return
		}
		if code == http.StatusRequestEntityTooLarge {
			batchMax, sinceTooLarge = max(batchMax/2, 1), 0 // at least one entry goes
		}
		wait := retry.next(retryAfter)
		failures++
		l.failures.Add(1)
		l.log.Log(l.ctx, failureLevel(failures), "logtail: upload failed; will retry", "stream", s.pub.String()[:16],
			"entries", b.n, "retry_in", wait.Round(time.Millisecond), "err", err)
		if !l.sleep(wait) {
			return
		}
	}
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
