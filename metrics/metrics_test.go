package metrics

import (
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

func TestWrite(t *testing.T) {
	rx := Family{Name: "demo_receive_bytes_total", Type: Counter, Help: "Bytes received from a peer."}
	rx.Add(1234, "peer", "abc+/=", "dir", "in")
	rx.Add(0, "peer", `quote " back \ line`+"\n"+"end", "dir", "in")
	age := Family{Name: "demo_age_seconds", Type: Gauge, Help: "Age; a help text with \\ and\nnewline."}
	age.Add(math.Inf(1))
	age.Add(1.5, "x", "")
	empty := Family{Name: "demo:empty", Type: Gauge, Help: ""}
	one := One("demo_peers", Gauge, "Peers.", 3)

	var b strings.Builder
	if err := Write(&b, []Family{rx, age, empty, one}); err != nil {
		t.Fatal(err)
	}
	want := `# HELP demo_receive_bytes_total Bytes received from a peer.
# TYPE demo_receive_bytes_total counter
demo_receive_bytes_total{peer="abc+/=",dir="in"} 1234
demo_receive_bytes_total{peer="quote \" back \\ line\nend",dir="in"} 0
# HELP demo_age_seconds Age; a help text with \\ and\nnewline.
# TYPE demo_age_seconds gauge
demo_age_seconds +Inf
demo_age_seconds{x=""} 1.5
# HELP demo:empty
# TYPE demo:empty gauge
# HELP demo_peers Peers.
# TYPE demo_peers gauge
demo_peers 3
`
	if got := b.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestWriteRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		fams []Family
	}{
		{"bad metric name", []Family{{Name: "1abc", Type: Gauge}}},
		{"dash in name", []Family{{Name: "a-b", Type: Gauge}}},
		{"empty name", []Family{{Name: "", Type: Gauge}}},
		{"repeated family", []Family{{Name: "a", Type: Gauge}, {Name: "a", Type: Counter}}},
		{"unknown type", []Family{{Name: "a", Type: "histogram"}}},
		{"bad label name", []Family{{Name: "a", Type: Gauge, Samples: []Sample{{Labels: []Label{{Name: "a:b"}}}}}}},
		{"reserved label name", []Family{{Name: "a", Type: Gauge, Samples: []Sample{{Labels: []Label{{Name: "__name__"}}}}}}},
		{"repeated label", []Family{{Name: "a", Type: Gauge, Samples: []Sample{{Labels: []Label{{Name: "x"}, {Name: "x"}}}}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			if err := Write(&b, tc.fams); err == nil {
				t.Errorf("Write accepted %+v", tc.fams)
			}
			if b.Len() != 0 {
				t.Errorf("Write wrote %q before refusing", b.String())
			}
		})
	}
}

func TestFormatValue(t *testing.T) {
	for v, want := range map[float64]string{
		0:            "0",
		-3:           "-3",
		1 << 40:      "1099511627776",
		0.25:         "0.25",
		1e300:        "1e+300",
		math.Inf(-1): "-Inf",
	} {
		if got := FormatValue(v); got != want {
			t.Errorf("FormatValue(%v) = %q, want %q", v, got, want)
		}
	}
	if got := FormatValue(math.NaN()); got != "NaN" {
		t.Errorf("FormatValue(NaN) = %q", got)
	}
}

func TestValidNames(t *testing.T) {
	for s, want := range map[string]bool{
		"a": true, "_a": true, "a_b:c9": true, "9a": false, "a b": false, "é": false,
	} {
		if got := ValidName(s); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", s, got, want)
		}
	}
	for s, want := range map[string]bool{
		"a": true, "_a": true, "a:b": false, "__a": false, "a9": true, "9a": false,
	} {
		if got := ValidLabelName(s); got != want {
			t.Errorf("ValidLabelName(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestHandler(t *testing.T) {
	calls := 0
	h := Handler(func() []Family {
		calls++
		f := Family{Name: "calls_total", Type: Counter, Help: "Scrapes."}
		f.Add(float64(calls))
		return []Family{f}
	})
	srv := httptest.NewServer(h)
	defer srv.Close()
	for want := 1; want <= 2; want++ {
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); ct != ContentType {
			t.Errorf("Content-Type %q", ct)
		}
		if !strings.Contains(string(body), "calls_total "+FormatValue(float64(want))+"\n") {
			t.Errorf("scrape %d:\n%s", want, body)
		}
	}
	resp, err := http.Post(srv.URL, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %s", resp.Status)
	}
	bad := httptest.NewServer(Handler(func() []Family { return []Family{{Name: "bad name", Type: Gauge}} }))
	defer bad.Close()
	resp, err = http.Get(bad.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("invalid family: %s, want 500", resp.Status)
	}
}

func TestRegistryGathersInOrder(t *testing.T) {
	var r Registry
	if got := r.Gather(); len(got) != 0 {
		t.Fatalf("empty registry gathered %v", got)
	}
	n := 0
	r.Register(func() []Family {
		n++
		f := Family{Name: "a_total", Type: Counter}
		f.Add(float64(n))
		return []Family{f}
	})
	r.Register(func() []Family { return []Family{{Name: "b", Type: Gauge}, {Name: "c", Type: Gauge}} })
	got := r.Gather()
	var names []string
	for _, f := range got {
		names = append(names, f.Name)
	}
	if strings.Join(names, ",") != "a_total,b,c" {
		t.Errorf("gathered %v, want a_total,b,c", names)
	}
	if got := r.Gather()[0].Samples[0].Value; got != 2 {
		t.Errorf("second gather: a_total = %v, want 2 (collectors run on every gather)", got)
	}
}

func TestServe(t *testing.T) {
	var r Registry
	r.Register(func() []Family { f := Family{Name: "up", Type: Gauge}; f.Add(1); return []Family{f} })
	reason := "no handshake"
	var mu sync.Mutex
	s, err := Serve("127.0.0.1:0", &r, func() string { mu.Lock(); defer mu.Unlock(); return reason })
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + s.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "\nup 1\n") {
		t.Errorf("/metrics: %d %q", code, body)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "not ready: no handshake") {
		t.Errorf("/readyz while not ready: %d %q", code, body)
	}
	mu.Lock()
	reason = ""
	mu.Unlock()
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("/readyz when ready: %d", code)
	}
	if code, _ := get("/nothing"); code != 404 {
		t.Errorf("/nothing: %d", code)
	}
}
