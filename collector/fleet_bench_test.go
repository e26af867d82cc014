package collector_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/collector"
	"github.com/wgsidecar/sidecar/collector/storagetest"
)

// BenchmarkFleetIngest: one op is one 5 s window of 100 nodes × 1,000
// flows into the embedded store, the uploads one after another (a
// transaction and an fsync each) or all at once (sharing commits).
func BenchmarkFleetIngest(b *testing.B) {
	storagetest.BenchIngestModes(b, func(b *testing.B) collector.Storage {
		st, err := collector.OpenBolt(filepath.Join(b.TempDir(), "collector.db"))
		if err != nil {
			b.Fatal(err)
		}
		return st
	})
}

// BenchmarkFleetQuery: the top 10 destinations of the fleet over the
// last hour (and, named explicitly, the last 24 hours) from the
// embedded store; see storagetest.QueryFixture for the data.
func BenchmarkFleetQuery(b *testing.B) {
	st, err := collector.OpenBolt(filepath.Join(b.TempDir(), "collector.db"))
	if err != nil {
		b.Fatal(err)
	}
	storagetest.BenchQuery(b, st, time.Hour, 24*time.Hour)
}
