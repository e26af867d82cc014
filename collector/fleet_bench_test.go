package collector_test

import (
	"path/filepath"
	"testing"

	"github.com/wgsidecar/sidecar/collector"
	"github.com/wgsidecar/sidecar/collector/storagetest"
)

// BenchmarkFleetIngest: one op is one 5 s window of 100 nodes × 1,000
// flows into the embedded store (fsync per upload).
func BenchmarkFleetIngest(b *testing.B) {
	st, err := collector.OpenBolt(filepath.Join(b.TempDir(), "collector.db"))
	if err != nil {
		b.Fatal(err)
	}
	storagetest.BenchIngest(b, st)
}
