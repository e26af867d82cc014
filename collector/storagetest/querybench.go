package storagetest

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/collector"
)

// QueryEnd is the end of the query benchmarks' ranges: mid-hour and
// mid-minute, as a "the last hour" asked at a random moment is.
var QueryEnd = time.Date(2026, 5, 2, 10, 30, 2, 500_000_000, time.UTC)

// fleetFlows are node n's flows in window w: FleetBody's flows, as the
// collector parses them, with their counts multiplied by k (a period's
// worth of windows).
func fleetFlows(n, w int, k uint64) []collector.Flow {
	out := make([]collector.Flow, FleetFlows)
	for f := range FleetFlows {
		x := uint64(n*7919+f*104729+w) % 1000
		out[f] = collector.Flow{
			Class: collector.ClassVirtual, Proto: 6,
			Src:    collector.Endpoint{Addr: netip.AddrFrom4([4]byte{10, byte(n / 250), byte(n % 250), 1}), Port: uint16(30000 + f)},
			Dst:    collector.Endpoint{Addr: netip.AddrFrom4([4]byte{10, 200, byte(f % 200 / 250), byte(1 + f%200)}), Port: uint16(80 + 363*(f%2))},
			TxPkts: k * (1 + x), TxBytes: k * (60*(1+x) + uint64(f)), RxPkts: k * (2 + x), RxBytes: k * (1400*(2+x) + uint64(n)),
		}
	}
	return out
}

// QueryFixture stores, in collection coll of st, what the query over
// [start, end) reads of the benchmark fleet (FleetNodes nodes × FleetFlows
// flows per 5 s window), through Storage.Put, a fleet's worth of entries
// per call. The query's plan (collector.Plan) says which level answers
// each part of the range, added or subtracted. The fixture cuts time at
// the bounds of every window span and every rollup period the plan reads.
// Where a window span reads, it stores the fleet's 5 s windows as they
// come; every other piece between two cuts that a span reads gets one
// entry per node at its first 5 s window's start, whose flows are the
// fleet's flows with counts times the number of 5 s windows in the piece.
// So every rollup period the query reads holds the same rows (one per
// flow and node), with the same counts, as the real fleet's windows would
// leave once summed (ClickHouse: once its SummingMergeTree parts are
// merged), every window it reads is a real window, and the query reads
// exactly as many rows as over the real fleet; windows that no span reads
// one by one are stored summed, and those no span reads are not stored.
// It returns how many entries it stored.
func QueryFixture(tb testing.TB, st collector.Storage, coll string, start, end time.Time) int {
	tb.Helper()
	q := collector.FlowQuery{Collection: coll, Start: start, End: end}
	spans := collector.Plan(&q)
	periods := map[string]time.Duration{"minute": time.Minute, "10m": 10 * time.Minute, "hour": time.Hour}
	var cuts []int64
	for _, sp := range spans {
		cuts = append(cuts, sp.From, sp.To)
		if p := int64(periods[sp.Level]); p > 0 {
			for t := sp.From; t < sp.To; t += p {
				cuts = append(cuts, t)
			}
		}
	}
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	const step = int64(5 * time.Second) // the fleet's windows start on multiples of 5 s
	var windows []time.Time             // starts of the entries
	var mult []uint64
	for i := 0; i+1 < len(cuts); i++ {
		from, to := cuts[i], cuts[i+1]
		read, oneByOne := false, false
		for _, sp := range spans {
			if sp.From <= from && to <= sp.To {
				read = true
				oneByOne = oneByOne || sp.Level == "window"
			}
		}
		first := (from + step - 1) / step * step
		if !read || first >= to {
			continue
		}
		if !oneByOne {
			windows = append(windows, time.Unix(0, first).UTC())
			mult = append(mult, uint64((to-first+step-1)/step))
			continue
		}
		for t := first; t < to; t += step {
			windows = append(windows, time.Unix(0, t).UTC())
			mult = append(mult, 1)
		}
	}
	logged := end
	for i, ws := range windows {
		entries := make([]collector.Entry, FleetNodes)
		for n := range FleetNodes {
			node := fmt.Sprintf("node%03d", n)
			entries[n] = collector.Entry{
				Collection: coll, Stream: sha256.Sum256([]byte(node)), Logged: logged,
				NodeID: node, ProcID: "p" + node, ProcSeq: uint64(i + 1),
				JSON:   []byte(fmt.Sprintf(`{"nodeId":%q,"logged":%q,"start":%q}`, node, logged.Format(time.RFC3339Nano), ws.Format(time.RFC3339Nano))),
				Window: &collector.Window{Start: ws, End: ws.Add(5*time.Second - 1), Flows: fleetFlows(n, i, mult[i])},
			}
		}
		stored, err := putConcurrently(st, entries)
		if err != nil {
			tb.Fatal(err)
		}
		if stored != FleetNodes {
			tb.Fatalf("stored %d of %d entries", stored, FleetNodes)
		}
	}
	return len(windows) * FleetNodes
}

// putConcurrently puts each entry as an upload of its own, all at once,
// as a fleet's nodes upload.
func putConcurrently(st collector.Storage, entries []collector.Entry) (int, error) {
	type res struct {
		n   int
		err error
	}
	ch := make(chan res, len(entries))
	for i := range entries {
		go func() {
			n, err := st.Put(context.Background(), entries[i:i+1])
			ch <- res{n, err}
		}()
	}
	total := 0
	var first error
	for range entries {
		r := <-ch
		total += r.n
		if r.err != nil && first == nil {
			first = r.err
		}
	}
	return total, first
}

// BenchQuery benchmarks GET /api/v1/flows (through the collector's
// handler, in process) for the top 10 destinations of the benchmark
// fleet over the span before QueryEnd, each span on a fixture of its own
// (QueryFixture). A span over an hour runs only if the -test.bench
// pattern names it ("24h"): its fixture takes minutes to build.
func BenchQuery(b *testing.B, st collector.Storage, spans ...time.Duration) {
	s, err := collector.Open(collector.Config{Storage: st, Token: Token})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	h := s.Handler()
	built := map[string]bool{} // -count runs a span again on st
	for _, span := range spans {
		short := strings.TrimSuffix(strings.TrimSuffix(span.String(), "0s"), "0m")
		name := "top10-dst-" + short
		b.Run(name, func(b *testing.B) {
			if span > time.Hour && !strings.Contains(flag.Lookup("test.bench").Value.String(), short) {
				b.Skipf("its fixture takes minutes: name %s in -bench to run it", name)
			}
			coll := strings.ReplaceAll(name, "-", "_")
			start := QueryEnd.Add(-span)
			if !built[coll] {
				t0 := time.Now()
				n := QueryFixture(b, st, coll, start, QueryEnd)
				b.Logf("fixture: %d entries (%d flow rows) in %v", n, n*FleetFlows, time.Since(t0).Round(time.Millisecond))
				built[coll] = true
			}
			v := url.Values{"collection": {coll}, "start": {start.Format(time.RFC3339Nano)},
				"end": {QueryEnd.Format(time.RFC3339Nano)}, "group": {"dst"}, "top": {"10"}}
			target := "/api/v1/flows?" + v.Encode()
			b.ResetTimer()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodGet, target, nil)
				req.Header.Set("Authorization", "Bearer "+Token)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != 200 || strings.Count(rec.Body.String(), `"dst":`) != 10 {
					b.Fatalf("flows: %d %.300s", rec.Code, rec.Body)
				}
			}
		})
	}
}
