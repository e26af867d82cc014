package logtail

import "github.com/wgsidecar/sidecar/metrics"

// RegisterMetrics registers the log stream's counters (see Counts) on r.
func (l *Logger) RegisterMetrics(r *metrics.Registry) {
	r.Register(func() []metrics.Family {
		c := l.Counts()
		pending := metrics.Family{Name: "wgsidecar_logstream_pending_bytes", Type: metrics.Gauge, Help: "Bytes of log-stream entries waiting in the disk buffer for upload."}
		pending.Add(float64(c.PendingBytes))
		uploads := metrics.Family{Name: "wgsidecar_logstream_uploads_total", Type: metrics.Counter, Help: "Log-stream batches the collector accepted."}
		uploads.Add(float64(c.Uploads))
		entries := metrics.Family{Name: "wgsidecar_logstream_uploaded_entries_total", Type: metrics.Counter, Help: "Log-stream entries the collector accepted."}
		entries.Add(float64(c.UploadedEntries))
		failures := metrics.Family{Name: "wgsidecar_logstream_upload_failures_total", Type: metrics.Counter, Help: "Log-stream upload attempts that failed; each is retried with backoff."}
		failures.Add(float64(c.Failures))
		dropped := metrics.Family{Name: "wgsidecar_logstream_dropped_entries_total", Type: metrics.Counter, Help: "Log-stream entries dropped unsent because the disk buffer was full."}
		dropped.Add(float64(c.Dropped))
		return []metrics.Family{pending, uploads, entries, failures, dropped}
	})
}
