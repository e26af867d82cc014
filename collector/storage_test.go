package collector_test

import (
	"path/filepath"
	"testing"

	"github.com/wgsidecar/sidecar/collector"
	"github.com/wgsidecar/sidecar/collector/storagetest"
)

// openBolt opens a fresh embedded store in the test's directory.
func openBolt(t *testing.T) collector.Storage {
	st, err := collector.OpenBolt(filepath.Join(t.TempDir(), "collector.db"))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestBoltFlowQueries runs the storage suite's query cases on the
// embedded store.
func TestBoltFlowQueries(t *testing.T) { storagetest.Run(t, 1, openBolt) }

func TestBoltRetention(t *testing.T) { storagetest.RunRetention(t, openBolt) }
