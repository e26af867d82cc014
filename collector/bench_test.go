package collector

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// flowEntry returns a stamped entry shaped like the flow log's: node n's
// window w, with a few virtual connections and their physical paths.
func flowEntry(r *rand.Rand, procID string, seq, n, w int) string {
	start := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC).Add(time.Duration(w) * 5 * time.Second)
	var b strings.Builder
	fmt.Fprintf(&b, `{"logtail":{"client_time":%q,"proc_id":%q,"proc_seq":%d},"nodeId":"n%04dCNTRL","start":%q,"end":%q,"virtualTraffic":[`,
		start.Add(5*time.Second).Format(time.RFC3339Nano), procID, seq,
		n, start.Format(time.RFC3339Nano), start.Add(5*time.Second-time.Nanosecond).Format(time.RFC3339Nano))
	for i := range 1 + r.IntN(6) {
		if i > 0 {
			b.WriteByte(',')
		}
		pkts := 1 + r.IntN(40)
		fmt.Fprintf(&b, `{"proto":6,"src":"10.99.0.%d:%d","dst":"10.99.0.%d:80","txPkts":%d,"txBytes":%d,"rxPkts":%d,"rxBytes":%d}`,
			n%250+1, 32768+r.IntN(28000), r.IntN(250)+1, pkts, pkts*(60+r.IntN(1400)), pkts, pkts*(52+r.IntN(800)))
	}
	fmt.Fprintf(&b, `],"physicalTraffic":[{"src":"10.99.0.%d:0","dst":"203.0.113.%d:51820","txPkts":9,"txBytes":1606,"rxPkts":8,"rxBytes":1102}]}`,
		r.IntN(250)+1, r.IntN(250)+1)
	return b.String()
}

// BenchmarkIngest uploads zstd batches of 100 flow entries over loopback
// HTTP, one stream per goroutine, each batch committed (fsync) before
// its 200, and reports entries stored per second.
func BenchmarkIngest(b *testing.B) {
	for _, clients := range []int{1, 4} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			_, base := startServer(b, Config{})
			c := testClient(b)
			const per = 100
			var next atomic.Int64
			bodies := make(chan []byte, 64)
			// Prepare bodies ahead, off the clock as far as possible.
			go func() {
				defer close(bodies)
				r := rand.New(rand.NewPCG(1, 2))
				for i := 0; i < b.N; i++ {
					es := make([]string, per)
					for j := range es {
						es[j] = flowEntry(r, "p", i*per+j+1, j%10, i)
					}
					bodies <- zstdOf(jsonArray(es...))
				}
			}()
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for k := range clients {
				wg.Go(func() {
					priv := fmt.Sprintf("%064x", k+1)
					for body := range bodies {
						if code, answer := post(b, c, base, testCollection, priv, body, "zstd"); code != 200 {
							b.Errorf("upload: %d %s", code, answer)
							return
						}
						next.Add(per)
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(next.Load())/time.Since(start).Seconds(), "entries/s")
		})
	}
}

var (
	bigStoreOnce sync.Once
	bigStoreDir  string
	bigStoreErr  error
)

const (
	bigEntries = 1_000_000
	bigNodes   = 100
)

// bigStoreStart is when the big store's first entry was logged; one
// entry is logged every 100 ms after it (a node every 10 s), so the
// million span about 28 hours.
var bigStoreStart = time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)

// bigStore builds, once per process, a database of a million flow entries
// from 100 nodes, stored in batches of 10 000.
func bigStore(b *testing.B) string {
	bigStoreOnce.Do(func() {
		bigStoreDir, bigStoreErr = os.MkdirTemp("", "collector-bench-")
		if bigStoreErr != nil {
			return
		}
		cleanups = append(cleanups, func() { os.RemoveAll(bigStoreDir) })
		db, err := OpenBolt(filepath.Join(bigStoreDir, dbName))
		if err != nil {
			bigStoreErr = err
			return
		}
		defer db.Close()
		r := rand.New(rand.NewPCG(3, 4))
		st := newStamper(time.Time{})
		start := time.Now()
		const batch = 10_000
		for i := 0; i < bigEntries; i += batch {
			entries := make([]Entry, batch)
			for j := range entries {
				k := i + j
				node := k % bigNodes
				logged := bigStoreStart.Add(time.Duration(k) * 100 * time.Millisecond)
				e := Entry{Collection: testCollection, Logged: logged}
				e.Stream[0] = byte(node)
				st.logged = fmt.Appendf(st.logged[:0], `"logged":%q`, logged.Format(time.RFC3339Nano))
				if err := st.stamp(&e, []byte(flowEntry(r, "p", k/bigNodes+1, node, k/bigNodes))); err != nil {
					bigStoreErr = err
					return
				}
				entries[j] = e
			}
			if _, err := db.Put(context.Background(), entries); err != nil {
				bigStoreErr = err
				return
			}
		}
		info, _ := os.Stat(filepath.Join(bigStoreDir, dbName))
		fmt.Printf("built a store of %d entries (%d MiB) in %v\n", bigEntries, info.Size()>>20, time.Since(start).Round(time.Second))
	})
	if bigStoreErr != nil {
		b.Fatal(bigStoreErr)
	}
	return bigStoreDir
}

// cleanups run after the tests and benchmarks (see TestMain).
var cleanups []func()

// BenchmarkQuery asks the HTTP API for windows of a store of a million
// entries and reports how many entries each answer held.
func BenchmarkQuery(b *testing.B) {
	dir := bigStore(b)
	s, err := Open(Config{DataDir: dir, Token: testToken, MaxQueryEntries: bigEntries})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	h := s.Handler()
	mid := bigStoreStart.Add(bigEntries * 100 * time.Millisecond / 2)
	for _, q := range []struct {
		name   string
		window time.Duration
		node   string
	}{
		{"1min", time.Minute, ""},
		{"1h", time.Hour, ""},
		{"1h-one-node", time.Hour, "n0042CNTRL"},
		{"24h-one-node", 24 * time.Hour, "n0042CNTRL"},
	} {
		b.Run(q.name, func(b *testing.B) {
			v := url.Values{"collection": {testCollection}, "start": {mid.Format(time.RFC3339Nano)},
				"end": {mid.Add(q.window).Format(time.RFC3339Nano)}}
			if q.node != "" {
				v.Set("node", q.node)
			}
			var n int
			for b.Loop() {
				req := httptest.NewRequest(http.MethodGet, "/api/v1/logs?"+v.Encode(), nil)
				req.Header.Set("Authorization", "Bearer "+testToken)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != 200 {
					b.Fatalf("query: %d %s", rec.Code, rec.Body)
				}
				n = strings.Count(rec.Body.String(), `"nodeId"`)
			}
			b.ReportMetric(float64(n), "entries")
		})
	}
}
