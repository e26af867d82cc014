package collector_test

import (
	"path/filepath"
	"testing"

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
