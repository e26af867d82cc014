package storagetest

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/collector"
)

// The benchmark fleet (SPEC §11's sizing): FleetNodes nodes, each with
// FleetFlows flows in every 5 s window. A node's flows are long-lived
// connections (the same 5-tuples window after window) from its address
// to 200 services on ports 80 and 443, so rollups sum them.
const (
	FleetNodes = 100
	FleetFlows = 1000
)

// FleetBody is node n's upload of window w (starting at start + w × 5 s)
// as stream entry seq: one flow-log message as a JSON array.
func FleetBody(n, w int, start time.Time, seq uint64) []byte {
	ws := start.Add(time.Duration(w) * 5 * time.Second)
	var b bytes.Buffer
	fmt.Fprintf(&b, `[{"logtail":{"client_time":%q,"proc_id":"p%d","proc_seq":%d},"nodeId":"node%03d","start":%q,"end":%q,"virtualTraffic":[`,
		ws.Format(time.RFC3339Nano), n, seq, n, ws.Format(time.RFC3339Nano), ws.Add(5*time.Second-1).Format(time.RFC3339Nano))
	for f := range FleetFlows {
		if f > 0 {
			b.WriteByte(',')
		}
		x := uint64(n*7919+f*104729+w) % 1000
		fmt.Fprintf(&b, `{"proto":6,"src":"10.%d.%d.%d:%d","dst":"10.200.%d.%d:%d","txPkts":%d,"txBytes":%d,"rxPkts":%d,"rxBytes":%d}`,
			n/250, n%250, 1, 30000+f, f%200/250, 1+f%200, 80+363*(f%2), 1+x, 60*(1+x)+uint64(f), 2+x, 1400*(2+x)+uint64(n))
	}
	b.WriteString(`]}]`)
	return b.Bytes()
}

// BenchIngestModes runs BenchIngest as two sub-benchmarks, each on a
// storage of its own from open: "one-at-a-time" and "concurrent".
func BenchIngestModes(b *testing.B, open func(b *testing.B) collector.Storage) {
	for _, mode := range []struct {
		name       string
		concurrent bool
	}{{"one-at-a-time", false}, {"concurrent", true}} {
		b.Run(mode.name, func(b *testing.B) { BenchIngest(b, open(b), mode.concurrent) })
	}
}

// BenchIngest uploads the fleet's windows through the collector's
// handler (in process, no sockets: the JSON parse, the stamp and the
// storage's write), one POST per node per window; an op is one window
// of the whole fleet. With concurrent, the window's 100 uploads are
// posted at once, as a fleet's nodes post at the end of a window (and
// may share commits); otherwise one after another. It reports flows
// stored per second and the ratio to the fleet's own rate (FleetNodes ×
// FleetFlows per 5 s).
func BenchIngest(b *testing.B, st collector.Storage, concurrent bool) {
	s, err := collector.Open(collector.Config{Storage: st, Token: Token})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	h := s.Handler()
	start := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	bodies := make([][]byte, FleetNodes)
	post := func(n int) error {
		req := httptest.NewRequest(http.MethodPost, fmt.Sprintf("/c/%s/%064x", Collection, n+1), bytes.NewReader(bodies[n]))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 || !strings.HasPrefix(rec.Body.String(), `{"stored":1,`) {
			return fmt.Errorf("upload: %d %s", rec.Code, rec.Body)
		}
		return nil
	}
	w := 0
	var elapsed time.Duration
	for b.Loop() {
		b.StopTimer()
		for n := range bodies {
			bodies[n] = FleetBody(n, w, start, uint64(w+1))
		}
		b.StartTimer()
		t0 := time.Now()
		if concurrent {
			errs := make(chan error, len(bodies))
			for n := range bodies {
				go func() { errs <- post(n) }()
			}
			for range bodies {
				if err := <-errs; err != nil {
					b.Fatal(err)
				}
			}
		} else {
			for n := range bodies {
				if err := post(n); err != nil {
					b.Fatal(err)
				}
			}
		}
		elapsed += time.Since(t0)
		w++
	}
	perSec := float64(w*FleetNodes*FleetFlows) / elapsed.Seconds()
	b.ReportMetric(perSec, "flows/s")
	b.ReportMetric(perSec/(FleetNodes*FleetFlows/5), "x-fleet-rate")
}
