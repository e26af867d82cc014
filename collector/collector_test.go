package collector

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/wgsidecar/sidecar/internal/leaktest"
)

func TestUploadAndQuery(t *testing.T) {
	t.Cleanup(leaktest.Check(t)) // runs after the other cleanups
	c := testClient(t)
	now := time.Date(2026, 5, 1, 12, 0, 0, 123456789, time.UTC)
	_, base := startServer(t, Config{Now: func() time.Time { return now }})

	body := jsonArray(
		entry("n1", "aaaa", 1, `"start":"2026-05-01T11:59:55Z","logged":"client lies"`),
		entry("n1", "aaaa", 2, `"virtualTraffic":[{"proto":6,"src":"10.0.0.1:1","dst":"10.0.0.2:80","txPkts":1}]`),
	)
	if code, answer := post(t, c, base, testCollection, privA, zstdOf(body), "zstd"); code != http.StatusOK || answer != `{"stored":2,"duplicates":0}` {
		t.Fatalf("zstd upload: %d %s", code, answer)
	}
	now = now.Add(time.Second)
	if code, answer := post(t, c, base, testCollection, privA, []byte(` [ `+entry("n2", "aaaa", 3, "")+` ] `), ""); code != http.StatusOK {
		t.Fatalf("identity upload: %d %s", code, answer)
	}

	code, logs := queryLogs(t, c, base, testToken, testCollection, longAgo, farAhead, "")
	if code != http.StatusOK {
		t.Fatalf("query: %d", code)
	}
	var got []string
	for _, l := range logs {
		got = append(got, fmt.Sprintf("%v %v %v", l["nodeId"], l["logged"], l["logtail"].(map[string]any)["proc_seq"]))
	}
	want := []string{
		"n1 2026-05-01T12:00:00.123456789Z 1",
		"n1 2026-05-01T12:00:00.123456789Z 2",
		"n2 2026-05-01T12:00:01.123456789Z 3",
	}
	if diff := diffLines(got, want); diff != "" {
		t.Errorf("entries (-got +want):\n%s", diff)
	}
	if vt := logs[1]["virtualTraffic"]; vt == nil {
		t.Errorf("entry lost its members: %v", logs[1])
	}
}

// TestStoredForm checks the exact stored JSON: compact, the client's
// "logged" replaced, the collector's placed after nodeId, order kept.
func TestStoredForm(t *testing.T) {
	logged := time.Date(2026, 5, 1, 12, 0, 0, 5, time.UTC)
	tests := []struct {
		in, want string
		node     string
		procID   string
		seq      uint64
	}{
		{
			in:   `{"nodeId":"n1", "start":"x"}`,
			want: `{"nodeId":"n1","logged":"2026-05-01T12:00:00.000000005Z","start":"x"}`,
			node: "n1",
		},
		{
			in:   `{"a":1,"logged":"old","b":{"logged":"nested stays"}}`,
			want: `{"logged":"2026-05-01T12:00:00.000000005Z","a":1,"b":{"logged":"nested stays"}}`,
		},
		{
			in:   `{"\u006cogged":"escaped","logtail":{"proc_id":"p","proc_seq":7},"nodeId":"n\"2"}`,
			want: `{"logtail":{"proc_id":"p","proc_seq":7},"nodeId":"n\"2","logged":"2026-05-01T12:00:00.000000005Z"}`,
			node: `n"2`, procID: "p", seq: 7,
		},
		{
			in:   `{}`,
			want: `{"logged":"2026-05-01T12:00:00.000000005Z"}`,
		},
		{
			in:     `{"logtail":{"proc_id":12345,"proc_seq":1},"nodeId":7}`,
			want:   `{"logtail":{"proc_id":12345,"proc_seq":1},"nodeId":7,"logged":"2026-05-01T12:00:00.000000005Z"}`,
			procID: "#12345", seq: 1,
		},
		{
			in:   `{"logtail":{"proc_id":"p","proc_seq":-1}}`, // unusable: no dedup
			want: `{"logged":"2026-05-01T12:00:00.000000005Z","logtail":{"proc_id":"p","proc_seq":-1}}`,
		},
		{
			in:   `{"s":"}{,:\"[","arr":[1,{"x":[]}],"t":true,"n":null,"f":-1.5e3}`,
			want: `{"logged":"2026-05-01T12:00:00.000000005Z","s":"}{,:\"[","arr":[1,{"x":[]}],"t":true,"n":null,"f":-1.5e3}`,
		},
	}
	for _, tt := range tests {
		st := newStamper(logged)
		var e Entry
		if err := st.stamp(&e, []byte(tt.in)); err != nil {
			t.Errorf("stamp(%s): %v", tt.in, err)
			continue
		}
		if string(e.JSON) != tt.want || e.NodeID != tt.node || e.ProcID != tt.procID || e.ProcSeq != tt.seq {
			t.Errorf("stamp(%s)\n got  %s node=%q proc=%q/%d\n want %s node=%q proc=%q/%d",
				tt.in, e.JSON, e.NodeID, e.ProcID, e.ProcSeq, tt.want, tt.node, tt.procID, tt.seq)
		}
		if !json.Valid(e.JSON) {
			t.Errorf("stamp(%s) = %s: invalid JSON", tt.in, e.JSON)
		}
	}
}

func TestDedup(t *testing.T) {
	c := testClient(t)
	_, base := startServer(t, Config{})
	batch := jsonArray(entry("n", "p1", 1, ""), entry("n", "p1", 2, ""), entry("n", "p1", 2, ""))
	for i, want := range []string{`{"stored":2,"duplicates":1}`, `{"stored":0,"duplicates":3}`} {
		if code, answer := post(t, c, base, testCollection, privA, zstdOf(batch), "zstd"); code != 200 || answer != want {
			t.Fatalf("upload %d: %d %s, want %s", i, code, answer, want)
		}
	}
	// Another stream, another proc_id, entries without logtail and
	// another collection are not duplicates.
	others := []struct {
		coll, priv string
		body       []byte
		want       string
	}{
		{testCollection, privB, jsonArray(entry("n", "p1", 1, ""), entry("n", "p1", 2, "")), `{"stored":2,"duplicates":0}`},
		{testCollection, privA, jsonArray(entry("n", "p2", 1, "")), `{"stored":1,"duplicates":0}`},
		{testCollection, privA, []byte(`[{"nodeId":"n"},{"nodeId":"n"}]`), `{"stored":2,"duplicates":0}`},
		{"other", privA, jsonArray(entry("n", "p1", 1, "")), `{"stored":1,"duplicates":0}`},
	}
	for _, o := range others {
		if code, answer := post(t, c, base, o.coll, o.priv, o.body, ""); code != 200 || answer != o.want {
			t.Errorf("upload %s: %d %s, want %s", o.body, code, answer, o.want)
		}
	}
	_, logs := queryLogs(t, c, base, testToken, testCollection, longAgo, farAhead, "")
	if len(logs) != 2+2+1+2 {
		t.Errorf("got %d entries, want 7", len(logs))
	}
}

// TestRefusals checks that each bad upload gets its 4xx, for the right
// reason, and stores nothing.
func TestRefusals(t *testing.T) {
	c := testClient(t)
	_, base := startServer(t, Config{
		Collections:     []string{testCollection},
		MaxBodyBytes:    64 << 10,
		MaxDecodedBytes: 4 << 20,
	})
	good := entry("n", "p", 1, "")
	big := `{"pad":"` + strings.Repeat("x", MaxEntryBytes) + `"}`
	manySmall := "[" + strings.Repeat(`{"a":1},`, 600_000) + `{}]` // 4.8 MB decoded
	tests := []struct {
		name     string
		coll     string
		priv     string
		body     []byte
		encoding string
		chunked  bool // send without Content-Length
		code     int
		reason   string
	}{
		{"malformed JSON", "", "", []byte(`[` + good + `,{"a":}]`), "", false, 400, "not valid JSON"},
		{"truncated JSON", "", "", []byte(`[` + good), "", false, 400, "ends in the middle"},
		{"empty body", "", "", nil, "", false, 400, "empty body"},
		{"object not array", "", "", []byte(good), "", false, 400, "not a JSON array"},
		{"array of numbers", "", "", []byte(`[` + good + `,1]`), "", false, 400, "entry 1 is not a JSON object"},
		{"array of arrays", "", "", []byte(`[[]]`), "", false, 400, "entry 0 is not a JSON object"},
		{"data after the array", "", "", []byte(`[` + good + `] []`), "", false, 400, "data after"},
		{"garbage after the array", "", "", []byte(`[` + good + `] x`), "", false, 400, "not valid JSON"},
		{"invalid zstd", "", "", []byte("not zstd at all"), "zstd", false, 400, "not valid zstd"},
		{"truncated zstd", "", "", zstdOf(jsonArray(good, good))[:20], "zstd", false, 400, "not valid zstd"},
		{"short private ID", "", privA[:62], jsonArray(good), "", false, 400, "private ID"},
		{"non-hex private ID", "", strings.Repeat("zz", 32), jsonArray(good), "", false, 400, "private ID"},
		{"unknown collection", "other", "", jsonArray(good), "", false, 404, "not accepted"},
		{"malformed collection", "a%20b", "", jsonArray(good), "", false, 400, "collection name"},
		{"gzip", "", "", jsonArray(good), "gzip", false, 415, "Content-Encoding"},
		{"body over the limit", "", "", []byte("[" + strings.Repeat(good+",", 2000) + good + "]"), "", false, 413, "body of"},
		{"chunked body over the limit", "", "", []byte("[" + strings.Repeat(good+",", 2000) + good + "]"), "", true, 413, "body is over"},
		{"entry over the limit", "", "", zstdStream([]byte("[" + big + "]")), "zstd", false, 413, "entry 0 is over the limit of 2097152"},
		{"decoded over the limit", "", "", zstdStream([]byte(manySmall)), "zstd", false, 413, "over the limit of 4194304"},
		{"bomb", "", "", bombFrame([]byte(`[{"a":"`), ' ', 1<<30, []byte(`"}]`), false), "zstd", false, 413, "an entry is over"},
		{"bomb of white space", "", "", bombFrame([]byte(`[{"a":1}`), ' ', 1<<30, []byte(`]`), false), "zstd", false, 413, "is over the limit"},
		{"bomb declaring its size", "", "", bombFrame([]byte(`[{"a":"`), ' ', 1<<30, []byte(`"}]`), true), "zstd", false, 413, "zstd frame"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			coll, priv := cmp.Or(tt.coll, testCollection), cmp.Or(tt.priv, privA)
			var body io.Reader = bytes.NewReader(tt.body)
			if tt.chunked {
				body = io.MultiReader(body)
			}
			req, err := http.NewRequest(http.MethodPost, base+"/c/"+coll+"/"+priv, body)
			if err != nil {
				t.Fatal(err)
			}
			if tt.encoding != "" {
				req.Header.Set("Content-Encoding", tt.encoding)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			answer, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.code || !strings.Contains(string(answer), tt.reason) {
				t.Errorf("got %d %s, want %d …%s…", resp.StatusCode, answer, tt.code, tt.reason)
			}
		})
	}
	if _, logs := queryLogs(t, c, base, testToken, testCollection, longAgo, farAhead, ""); len(logs) != 0 {
		t.Errorf("refused uploads stored %d entries", len(logs))
	}
}

// TestBombMemory sends a 32 KiB zstd body that inflates to 1 GiB inside
// one JSON string, with the default limits, and checks that the heap
// stays small while the collector refuses it.
func TestBombMemory(t *testing.T) {
	c := testClient(t)
	_, base := startServer(t, Config{})
	for _, declare := range []bool{false, true} {
		bomb := bombFrame([]byte(`[{"nodeId":"n","pad":"`), ' ', 1<<30, []byte(`"}]`), declare)
		if len(bomb) > 64<<10 {
			t.Fatalf("bomb is %d bytes", len(bomb))
		}
		runtime.GC()
		var peak atomic.Uint64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			var ms runtime.MemStats
			for {
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > peak.Load() {
					peak.Store(ms.HeapInuse)
				}
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
			}
		})
		code, answer := post(t, c, base, testCollection, privA, bomb, "zstd")
		close(stop)
		wg.Wait()
		if code != http.StatusRequestEntityTooLarge {
			t.Errorf("declare=%v: status %d (%s), want 413", declare, code, answer)
		}
		t.Logf("declare=%v: %d-byte bomb: %d %s; peak HeapInuse %d MiB", declare, len(bomb), code, answer, peak.Load()>>20)
		if p := peak.Load(); p > 200<<20 {
			t.Errorf("declare=%v: peak HeapInuse %d MiB, want < 200 MiB", declare, p>>20)
		}
	}
	if _, logs := queryLogs(t, c, base, testToken, testCollection, longAgo, farAhead, ""); len(logs) != 0 {
		t.Errorf("bomb stored %d entries", len(logs))
	}
}

// TestBombFrameIsValid checks the hand-built frame against the decoder,
// so that the bomb tests test limits, not a malformed frame.
func TestBombFrameIsValid(t *testing.T) {
	for _, declare := range []bool{false, true} {
		want := `[{"a":"` + strings.Repeat(" ", 300<<10) + `"}]`
		d, err := zstd.NewReader(bytes.NewReader(bombFrame([]byte(`[{"a":"`), ' ', 300<<10, []byte(`"}]`), declare)), zstd.WithDecoderConcurrency(1))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(d)
		d.Close()
		if err != nil || string(got) != want {
			t.Errorf("declare=%v: decoded %d bytes, err %v; want %d bytes", declare, len(got), err, len(want))
		}
	}
}

func TestQuery(t *testing.T) {
	c := testClient(t)
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	var now time.Time
	_, base := startServer(t, Config{Now: func() time.Time { return now }, MaxQueryEntries: 5})
	// One entry per node per second, for 3 seconds.
	for i := range 3 {
		now = t0.Add(time.Duration(i) * time.Second)
		body := jsonArray(entry("a", "p", 2*i+1, ""), entry("b", "p", 2*i+2, ""))
		if code, answer := post(t, c, base, testCollection, privA, body, ""); code != 200 {
			t.Fatalf("upload: %d %s", code, answer)
		}
	}
	sec := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Second) }
	tests := []struct {
		name       string
		start, end time.Time
		node       string
		want       []string // node@second
	}{
		{"edges inclusive", sec(0), sec(1), "", []string{"a@0", "b@0", "a@1", "b@1"}},
		{"one instant", sec(1), sec(1), "", []string{"a@1", "b@1"}},
		{"just inside", sec(0).Add(time.Nanosecond), sec(2).Add(-time.Nanosecond), "", []string{"a@1", "b@1"}},
		{"node filter", sec(0), sec(2), "b", []string{"b@0", "b@1", "b@2"}},
		{"unknown node", sec(0), sec(2), "zz", nil},
		{"before everything", sec(-10), sec(-1), "", nil},
		{"other time zone", sec(2).In(time.FixedZone("X", 3600)), sec(9), "", []string{"a@2", "b@2"}},
	}
	for _, tt := range tests {
		code, logs := queryLogs(t, c, base, testToken, testCollection, tt.start, tt.end, tt.node)
		if code != 200 {
			t.Errorf("%s: status %d", tt.name, code)
			continue
		}
		var got []string
		for _, l := range logs {
			logged, err := time.Parse(time.RFC3339Nano, l["logged"].(string))
			if err != nil || logged.Before(tt.start) || logged.After(tt.end) {
				t.Errorf("%s: logged %v outside [%v, %v]", tt.name, l["logged"], tt.start, tt.end)
			}
			got = append(got, fmt.Sprintf("%s@%d", l["nodeId"], int(logged.Sub(t0)/time.Second)))
		}
		if diff := diffLines(got, tt.want); diff != "" {
			t.Errorf("%s (-got +want):\n%s", tt.name, diff)
		}
	}
	if code, _ := queryLogs(t, c, base, testToken, testCollection, sec(0), sec(2), ""); code != 400 {
		t.Errorf("6 entries over MaxQueryEntries=5: status %d, want 400", code)
	}
}

func TestQueryRefusals(t *testing.T) {
	c := testClient(t)
	_, base := startServer(t, Config{Collections: []string{testCollection}})
	get := func(auth, query string) int {
		req, _ := http.NewRequest(http.MethodGet, base+"/api/v1/logs?"+query, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	good := "collection=" + testCollection + "&start=2026-01-01T00:00:00Z&end=2026-01-02T00:00:00Z"
	tests := []struct {
		name, auth, query string
		code              int
	}{
		{"ok", "Bearer " + testToken, good, 200},
		{"lower-case scheme", "bearer " + testToken, good, 200},
		{"no token", "", good, 401},
		{"wrong token", "Bearer nope", good, 401},
		{"token prefix", "Bearer " + testToken[:4], good, 401},
		{"basic auth", "Basic " + testToken, good, 401},
		{"unknown collection", "Bearer " + testToken, strings.Replace(good, testCollection, "other", 1), 404},
		{"no collection", "Bearer " + testToken, good[len("collection="+testCollection+"&"):], 400},
		{"bad start", "Bearer " + testToken, strings.Replace(good, "2026-01-01T00:00:00Z", "yesterday", 1), 400},
		{"no end", "Bearer " + testToken, good[:strings.Index(good, "&end")], 400},
		{"end before start", "Bearer " + testToken, strings.Replace(good, "2026-01-02", "2025-01-02", 1), 400},
	}
	for _, tt := range tests {
		if code := get(tt.auth, tt.query); code != tt.code {
			t.Errorf("%s: status %d, want %d", tt.name, code, tt.code)
		}
	}
	// A collector without a token refuses every read.
	s, err := Open(Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	req, _ := http.NewRequest(http.MethodGet, "/api/v1/logs?"+good, nil)
	req.Header.Set("Authorization", "Bearer ")
	rec := &statusRecorder{header: http.Header{}}
	s.Handler().ServeHTTP(rec, req)
	if rec.code != 401 {
		t.Errorf("no Config.Token, empty bearer: status %d, want 401", rec.code)
	}
}

type statusRecorder struct {
	header http.Header
	code   int
}

func (r *statusRecorder) Header() http.Header         { return r.header }
func (r *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *statusRecorder) WriteHeader(code int)        { r.code = code }

// TestConcurrentUploads stores from several streams at once and checks
// every entry is there once.
func TestConcurrentUploads(t *testing.T) {
	t.Cleanup(leaktest.Check(t)) // runs after the other cleanups
	c := testClient(t)
	_, base := startServer(t, Config{})
	const streams, batches, per = 4, 10, 20
	var wg sync.WaitGroup
	for s := range streams {
		wg.Go(func() {
			priv := fmt.Sprintf("%064x", s+1)
			for b := range batches {
				var es []string
				for i := range per {
					es = append(es, entry(fmt.Sprint(s), "p", b*per+i+1, ""))
				}
				if code, answer := post(t, c, base, testCollection, priv, zstdOf(jsonArray(es...)), "zstd"); code != 200 {
					t.Errorf("upload: %d %s", code, answer)
				}
			}
		})
	}
	wg.Wait()
	_, logs := queryLogs(t, c, base, testToken, testCollection, longAgo, farAhead, "")
	if len(logs) != streams*batches*per {
		t.Errorf("got %d entries, want %d", len(logs), streams*batches*per)
	}
}

func TestCloseStopsServe(t *testing.T) {
	t.Cleanup(leaktest.Check(t)) // runs after the other cleanups
	s, base := startServer(t, Config{})
	c := testClient(t)
	post(t, c, base, testCollection, privA, zstdOf(jsonArray(entry("n", "p", 1, ""))), "zstd")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.store.Put(context.Background(), []Entry{{Collection: "x", JSON: []byte("{}")}}); err == nil {
		t.Error("Put after Close succeeded")
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(Config{}); err == nil {
		t.Error("Open without DataDir succeeded")
	}
	if _, err := Open(Config{DataDir: t.TempDir(), Collections: []string{"bad name"}}); err == nil {
		t.Error("Open with a bad collection name succeeded")
	}
	dir := t.TempDir()
	s, err := Open(Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Open(Config{DataDir: dir}); err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Errorf("second Open of one DataDir: %v, want a timeout", err)
	}
}
