package logtail

import "github.com/wgsidecar/sidecar/metrics"

// RegisterMetrics registers the log stream's counters (see Counts) on r.
func (l *Logger) RegisterMetrics(r *metrics.Registry) {
	r.Register(func() []metrics.Family {
		c := l.Counts()
		pending := metrics.One("wgsidecar_logstream_pending_bytes", metrics.Gauge, "Bytes of log-stream entries waiting in the disk buffer for upload.", float64(c.PendingBytes))
		uploads := metrics.One("wgsidecar_logstream_uploads_total", metrics.Counter, "Log-stream batches the collector accepted.", float64(c.Uploads))
		entries := metrics.One("wgsidecar_logstream_uploaded_entries_total", metrics.Counter, "Log-stream entries the collector accepted.", float64(c.UploadedEntries))
		failures := metrics.One("wgsidecar_logstream_upload_failures_total", metrics.Counter, "Log-stream upload attempts that failed; each is retried with backoff.", float64(c.Failures))
		dropped := metrics.One("wgsidecar_logstream_dropped_entries_total", metrics.Counter, "Log-stream entries dropped unsent because the disk buffer was full.", float64(c.Dropped))
		return []metrics.Family{pending, uploads, entries, failures, dropped}
	})
}
