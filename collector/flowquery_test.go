package collector

import (
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestParseFlowQueryRefusals checks that each bad parameter is refused
// with a message naming it, through the API (400) as through the parser.
func TestParseFlowQueryRefusals(t *testing.T) {
	c := testClient(t)
	_, base := startServer(t, Config{})
	tests := []struct {
		query string
		param string // the parameter the message must name
		more  string // and a part of the message
	}{
		{"group=node,bogus", "group", `unknown key "bogus"`},
		{"since=banana", "since", "want a duration"},
		{"since=-5m", "since", "want a duration"},
		{"bucket=7s", "bucket", "want 1m, 5m or 1h"},
		{"top=-1", "top", "at least 1"},
		{"top=0", "top", "at least 1"},
		{"top=x", "top", "at least 1"},
		{"start=yesterday", "start", "RFC 3339"},
		{"start=2026-05-01T10:00:00Z&end=noon", "end", "RFC 3339"},
		{"start=2026-05-01T10:00:00Z&end=2026-05-01T09:00:00Z", "end", "after start"},
		{"end=2026-05-01T10:00:00Z", "start", "required with end"},
		{"since=1h&start=2026-05-01T10:00:00Z", "since", "not both"},
		{"class=tunnel", "class", "virtual, subnet, exit or physical"},
		{"proto=sctp", "proto", "protocol number"},
		{"proto=256", "proto", "protocol number"},
		{"addr=10.0.0.0/33", "addr", "IP address or prefix"},
		{"addr=host", "addr", "IP address or prefix"},
		{"port=65536", "port", "0 to 65535"},
		{"grup=node", "grup", "unknown parameter"},
		{"top=1&top=2", "top", "given 2 times"},
	}
	for _, tt := range tests {
		v, err := url.ParseQuery(tt.query)
		if err != nil {
			t.Fatal(err)
		}
		_, perr := ParseFlowQuery(v, time.Now())
		pe, ok := perr.(*ParamError)
		if !ok || pe.Param != tt.param || !strings.Contains(pe.Msg, tt.more) {
			t.Errorf("%s: parser says %v, want %s: …%s…", tt.query, perr, tt.param, tt.more)
		}
		req, _ := http.NewRequest(http.MethodGet, base+"/api/v1/flows?collection="+testCollection+"&"+tt.query, nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body strings.Builder
		buf := make([]byte, 4096)
		n, _ := resp.Body.Read(buf)
		body.Write(buf[:n])
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.HasPrefix(body.String(), tt.param+": ") {
			t.Errorf("%s: API says %d %q, want 400 naming %s", tt.query, resp.StatusCode, body.String(), tt.param)
		}
	}
}

func TestParseFlowQuery(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	v, _ := url.ParseQuery("collection=c&since=30d&group=dst,node,dst&top=10&bucket=5m&addr=::ffff:10.1.2.3&proto=UDP&port=53&class=subnet&node=n1")
	q, err := ParseFlowQuery(v, now)
	if err != nil {
		t.Fatal(err)
	}
	if !q.Start.Equal(now.Add(-30*24*time.Hour)) || !q.End.Equal(now) || q.Top != 10 || q.Bucket != 5*time.Minute ||
		q.Addr.String() != "10.1.2.3/32" || q.Proto != 17 || q.Port != 53 || q.Class != ClassSubnet || q.Node != "n1" ||
		len(q.Group) != 2 || q.Group[0] != GroupNode || q.Group[1] != GroupDst {
		t.Errorf("parsed %+v", q)
	}
	q, err = ParseFlowQuery(url.Values{"collection": {"c"}}, now)
	if err != nil || !q.Start.Equal(now.Add(-time.Hour)) || !q.End.Equal(now) || q.Proto != -1 || q.Port != -1 || q.Addr.IsValid() {
		t.Errorf("defaults: %+v, %v", q, err)
	}
}

// TestPlan checks that a range is planned as whole periods of the
// coarsest level allowed, ragged ends from finer levels or as one more
// period minus its part outside the range, at least cost, and that every
// instant of the range is counted once and none outside it.
func TestPlan(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	at := func(s string) time.Time { d, _ := time.ParseDuration(s); return t0.Add(d) }
	tests := []struct {
		start, end time.Time
		bucket     time.Duration
		want       string
	}{
		{at("0s"), at("2h"), 0, "hour 0s-2h0m0s"},
		{at("37m13s"), at("2h52m1.5s"), 0, "-window 37m0s-37m13s minute 37m0s-40m0s 10m 40m0s-1h0m0s hour 1h0m0s-3h0m0s minute 2h50m0s-2h52m0s window 2h52m0s-2h52m1.5s -10m 2h50m0s-3h0m0s"},
		{at("10s"), at("50s"), 0, "-window 0s-10s minute 0s-1m0s -window 50s-1m0s"},
		{at("10s"), at("25s"), 0, "window 10s-25s"},
		{at("2s"), at("58s"), 0, "-window 0s-2s minute 0s-1m0s -window 58s-1m0s"},
		{at("30s"), at("3m"), time.Hour, "window 30s-1m0s minute 1m0s-3m0s"},
		{at("0s"), at("2h"), 5 * time.Minute, "minute 0s-2h0m0s"},
		// The benchmark's "last hour", asked at 10:30:02.5.
		{at("-29m57.5s"), at("30m2.5s"), 0, "-window -30m0s--29m57.5s 10m -30m0s-30m0s window 30m0s-30m2.5s"},
	}
	for _, tt := range tests {
		q := FlowQuery{Start: tt.start, End: tt.end, Bucket: tt.bucket}
		var got []string
		for _, sp := range q.plan() {
			sign := ""
			if sp.neg {
				sign = "-"
			}
			got = append(got, sign+levelNames[sp.lvl]+" "+time.Duration(sp.from-clampNs(t0)).String()+"-"+time.Duration(sp.to-clampNs(t0)).String())
		}
		if s := strings.Join(got, " "); s != tt.want {
			t.Errorf("plan(%v, %v, %v) = %s, want %s", tt.start, tt.end, tt.bucket, s, tt.want)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		start := t0.Add(time.Duration(r.Int64N(int64(30 * time.Hour))))
		end := start.Add(time.Duration(r.Int64N(int64(30 * time.Hour))))
		bucket := []time.Duration{0, time.Minute, 5 * time.Minute, time.Hour}[r.IntN(4)]
		checkPlan(t, FlowQuery{Start: start, End: end, Bucket: bucket}, nil)
		since := t0.Add(time.Duration(r.Int64N(int64(30 * time.Hour)))).UnixNano()
		checkPlan(t, FlowQuery{Start: start, End: end, Bucket: bucket}, map[string]int64{"10m": since})
	}
}

// checkPlan checks that q's plan counts each instant of its range once
// and none outside (at every span's bounds and either side of them),
// with no span of a period longer than its buckets or unaligned, and
// none of a level before its since (PlanSince).
func checkPlan(t *testing.T, q FlowQuery, since map[string]int64) {
	t.Helper()
	from, to := clampNs(q.Start), clampNs(q.End)
	spans := PlanSince(&q, since)
	points := []int64{from - 1, from, to - 1, to}
	for _, sp := range spans {
		points = append(points, sp.From-1, sp.From, sp.To-1, sp.To)
		if sp.Level != "window" {
			p := int64(map[string]time.Duration{"minute": time.Minute, "10m": 10 * time.Minute, "hour": time.Hour}[sp.Level])
			if sp.From%p != 0 || sp.To%p != 0 || slices.Index(levelNames[:], sp.Level) > int(q.maxLevel()) || sp.From < since[sp.Level] {
				t.Fatalf("%v..%v /%v: span %+v", q.Start, q.End, q.Bucket, sp)
			}
		}
	}
	for _, x := range points {
		n := 0
		for _, sp := range spans {
			if sp.From <= x && x < sp.To {
				n += map[bool]int{false: 1, true: -1}[sp.Neg]
			}
		}
		if want := map[bool]int{true: 1}[from <= x && x < to]; n != want {
			t.Fatalf("%v..%v /%v: %d counted %d times, want %d: %+v", q.Start, q.End, q.Bucket, x, n, want, spans)
		}
	}
}

// FuzzParseFlowQuery: any query string is parsed or refused with a
// ParamError, never a panic; a parsed query has a range and a plan that
// covers it.
func FuzzParseFlowQuery(f *testing.F) {
	for _, s := range []string{"", "since=10m&group=dst&top=10", "bucket=1m&group=node,peer", "addr=fd00::/8&port=443",
		"start=2026-05-01T10:00:00Z&end=2026-05-01T11:00:00.5Z", "since=99999999d", "since=1ns", "group=,,,", "top=9999999999999999999"} {
		f.Add(s)
	}
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		v, err := url.ParseQuery(s)
		if err != nil {
			return
		}
		q, err := ParseFlowQuery(v, now)
		if err != nil {
			if _, ok := err.(*ParamError); !ok {
				t.Fatalf("error %v is no ParamError", err)
			}
			return
		}
		if !q.End.After(q.Start) {
			t.Fatalf("range %v..%v", q.Start, q.End)
		}
		checkPlan(t, q, nil)
	})
}
