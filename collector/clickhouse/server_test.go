package clickhouse_test

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/collector"
	"github.com/wgsidecar/sidecar/collector/clickhouse"
	"github.com/wgsidecar/sidecar/collector/storagetest"
	"github.com/wgsidecar/sidecar/internal/testnet"
)

// server is the address of the ClickHouse server TestMain started, or
// "" with skipReason set.
var (
	server     string
	skipReason string
)

// TestMain starts one clickhouse-server for the package's tests.
func TestMain(m *testing.M) {
	var stop func()
	server, stop, skipReason = testnet.StartClickHouse()
	code := m.Run()
	stop()
	os.Exit(code)
}

var dbSeq atomic.Int64

// newDSN returns the DSN of a database of its own for a test.
func newDSN(t testing.TB) string {
	if server == "" {
		t.Skip(skipReason)
	}
	return fmt.Sprintf("clickhouse://%s/t%d_%d", server, os.Getpid(), dbSeq.Add(1))
}

// opener opens a Storage on dsn each time it is called: replicas of one
// store.
func opener(dsn string) func(t *testing.T) collector.Storage {
	return func(t *testing.T) collector.Storage {
		st, err := clickhouse.Open(context.Background(), dsn, nil)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
}

// TestFlowQueries runs the storage suite's query cases through two
// collectors on one database: uploads spread over both, a retried batch
// sent to the other replica, every query asked of both.
func TestFlowQueries(t *testing.T) { storagetest.Run(t, 2, opener(newDSN(t))) }

func TestRetention(t *testing.T) { storagetest.RunRetention(t, opener(newDSN(t))) }

// BenchmarkFleetIngest: one op is one 5 s window of 100 nodes × 1,000
// flows into ClickHouse, the uploads one after another (an INSERT each)
// or all at once (sharing INSERTs).
func BenchmarkFleetIngest(b *testing.B) {
	storagetest.BenchIngestModes(b, func(b *testing.B) collector.Storage {
		st, err := clickhouse.Open(context.Background(), newDSN(b), nil)
		if err != nil {
			b.Fatal(err)
		}
		return st
	})
}

// BenchmarkFleetQuery: the top 10 destinations of the fleet over the
// last hour (and, named explicitly, the last 24 hours) from ClickHouse,
// whole hours from flows_1h; see storagetest.QueryFixture for the data.
func BenchmarkFleetQuery(b *testing.B) {
	st, err := clickhouse.Open(context.Background(), newDSN(b), nil)
	if err != nil {
		b.Fatal(err)
	}
	storagetest.BenchQuery(b, st, time.Hour, 24*time.Hour)
}
