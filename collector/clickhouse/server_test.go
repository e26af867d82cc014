package clickhouse_test

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"

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

// TestUpgradeAdds10m: a database from before flows_10m (no flows_10m,
// its view or levels) gets them when a collector opens it, with the
// start of flows_10m recorded after the moment it was added; queries
// over the data from before answer as before.
func TestUpgradeAdds10m(t *testing.T) {
	dsn := newDSN(t)
	windows := storagetest.Fleet()
	open := opener(dsn)
	t.Run("upload", func(t *testing.T) {
		storagetest.UploadFleet(t, []*storagetest.Client{storagetest.Start(t, open(t), time.Now)}, windows)
	})
	opt, err := ch.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	db := opt.Auth.Database
	opt.Auth.Database = "default"
	conn, err := ch.Open(opt)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()
	for _, table := range []string{"flows_10m_mv", "flows_10m", "levels"} {
		if err := conn.Exec(ctx, "DROP TABLE "+db+"."+table); err != nil {
			t.Fatal(err)
		}
	}
	before := time.Now()
	storagetest.CheckQueries(t, []*storagetest.Client{storagetest.Start(t, open(t), time.Now)}, windows, storagetest.Cases())
	var since time.Time
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT max(since), count() FROM "+db+".levels WHERE level = '10m'").Scan(&since, &n); err != nil {
		t.Fatal(err)
	}
	if n != 1 || since.Before(before.Add(10*time.Minute)) || since.Unix()%600 != 0 {
		t.Errorf("flows_10m recorded to start at %v (%d rows), want a 10-minute boundary after %v", since, n, before.Add(10*time.Minute))
	}
}
