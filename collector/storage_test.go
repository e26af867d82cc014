package collector_test

import (
	"path/filepath"
	"testing"
	"time"

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

// TestBolt10mBackfill: a database written before the 10-minute rollups
// existed gets them built from its minute rollups when opened, and
// answers every query case as before.
func TestBolt10mBackfill(t *testing.T) {
	path := filepath.Join(t.TempDir(), "collector.db")
	open := func(t *testing.T) collector.Storage {
		st, err := collector.OpenBolt(path)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	windows := storagetest.Fleet()
	t.Run("upload", func(t *testing.T) {
		storagetest.UploadFleet(t, []*storagetest.Client{storagetest.Start(t, open(t), time.Now)}, windows)
	})
	if err := collector.Drop10m(path); err != nil {
		t.Fatal(err)
	}
	storagetest.CheckQueries(t, []*storagetest.Client{storagetest.Start(t, open(t), time.Now)}, windows, storagetest.Cases())
}
