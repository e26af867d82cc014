package collector

import (
	"context"
	"time"
)

// retentionEvery is how often the retention loop expires old days.
const retentionEvery = time.Hour

// startRetention runs Storage.Expire with now - Config.Retention at once
// and every retentionEvery until Close.
func (s *Server) startRetention() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	s.stopRetention = func() { cancel(); <-done }
	go func() {
		defer close(done)
		t := time.NewTicker(retentionEvery)
		defer t.Stop()
		for {
			s.expire(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// expire drops the days before now - Config.Retention, logging a failure.
func (s *Server) expire(ctx context.Context) {
	cutoff := s.now().Add(-s.cfg.Retention)
	if err := s.store.Expire(ctx, cutoff); err != nil && ctx.Err() == nil {
		s.log.Error("collector: retention failed", "cutoff", cutoff, "err", err)
		return
	}
	s.log.Debug("collector: expired old days", "cutoff", cutoff)
}
