package collector

import (
	"net/http"
	"net/url"
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

// TestPlan checks that a range is split into whole hours, whole minutes
// around them and raw windows at the ends, with nothing lost or counted
// twice.
func TestPlan(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	at := func(s string) time.Time { d, _ := time.ParseDuration(s); return t0.Add(d) }
	tests := []struct {
		start, end time.Time
		bucket     time.Duration
		want       string
	}{
		{at("0s"), at("2h"), 0, "hour 0s-2h0m0s"},
		{at("37m13s"), at("2h52m1.5s"), 0, "window 37m13s-38m0s minute 38m0s-1h0m0s hour 1h0m0s-2h0m0s minute 2h0m0s-2h52m0s window 2h52m0s-2h52m1.5s"},
		{at("10s"), at("50s"), 0, "window 10s-50s"},
		{at("30s"), at("3m"), time.Hour, "window 30s-1m0s minute 1m0s-3m0s"},
		{at("0s"), at("2h"), 5 * time.Minute, "minute 0s-2h0m0s"},
	}
	names := [...]string{"window", "minute", "hour"}
	for _, tt := range tests {
		q := FlowQuery{Start: tt.start, End: tt.end, Bucket: tt.bucket}
		var got []string
		next := clampNs(tt.start)
		for _, sp := range q.plan() {
			if sp.from != next {
				t.Errorf("%v: gap or overlap at %d", tt, sp.from)
			}
			next = sp.to
			got = append(got, names[sp.lvl]+" "+time.Duration(sp.from-clampNs(t0)).String()+"-"+time.Duration(sp.to-clampNs(t0)).String())
		}
		if next != clampNs(tt.end) {
			t.Errorf("%v: plan ends at %d", tt, next)
		}
		if s := strings.Join(got, " "); s != tt.want {
			t.Errorf("plan(%v, %v, %v) = %s, want %s", tt.start, tt.end, tt.bucket, s, tt.want)
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
		q.plan()
	})
}
