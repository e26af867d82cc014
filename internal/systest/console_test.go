package systest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/collector"
	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/logtail"
	"github.com/wgsidecar/sidecar/sidecartest"
	"github.com/wgsidecar/sidecar/wgconf"
)

const (
	consoleToken      = "console-read-token"
	consoleCollection = "console"
)

// consoleFleet is a collector behind a listener that counts the API calls
// it answers, and two nodes uploading their flow logs (1 s windows) to it.
type consoleFleet struct {
	url      string
	apiCalls atomic.Int64
	nodes    []*sidecar.Node
}

func startConsoleFleet(t *testing.T) *consoleFleet {
	coll, err := collector.Open(collector.Config{DataDir: t.TempDir(), Token: consoleToken})
	if err != nil {
		t.Fatal(err)
	}
	f := &consoleFleet{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/") {
			f.apiCalls.Add(1)
		}
		coll.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(func() { srv.Close(); coll.Close() })
	f.url = srv.URL
	f.nodes = sidecartest.NewNodes(t, 2, sidecartest.Options{
		Configure: func(i int, cfg *wgconf.Config) {
			id, err := logtail.NewPrivateID()
			if err != nil {
				t.Fatal(err)
			}
			cfg.FlowLog = &wgconf.FlowLog{Window: time.Second, NodeID: fmt.Sprintf("node-%c", 'a'+i)}
			cfg.LogStream = &wgconf.LogStream{URL: srv.URL, Collection: consoleCollection, PrivateID: id.Hex(), BufferDir: t.TempDir()}
		},
		NodeOptions: func(i int, o *sidecar.Options) { o.LogStreamFlush = 20 * time.Millisecond },
	})
	return f
}

// api asks the collector directly, as the page does.
func (f *consoleFleet) api(t *testing.T, path string, q url.Values) []map[string]any {
	t.Helper()
	q.Set("collection", consoleCollection)
	code, text := testnet.GetBearer(t, f.url+path+"?"+q.Encode(), consoleToken)
	body := []byte(text)
	if code != 200 {
		t.Fatalf("GET %s?%s: %d %s", path, q.Encode(), code, body)
	}
	var out struct {
		Rows  []map[string]any `json:"rows"`
		Nodes []map[string]any `json:"nodes"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		var list []map[string]any
		if json.Unmarshal(body, &list) == nil {
			return list
		}
		t.Fatalf("GET %s: %v: %s", path, err, body)
	}
	if out.Rows != nil {
		return out.Rows
	}
	return out.Nodes
}

// moveTraffic sends 2 MiB from node a to node b over TCP and pings b,
// cuts both nodes' windows, and waits until the collector lists both nodes
// and its top talkers stop changing (all windows are in).
func (f *consoleFleet) moveTraffic(t *testing.T) {
	a, b := f.nodes[0], f.nodes[1]
	ln, err := b.Listen("tcp", ":9000")
	must(t, err)
	testnet.Serve(t, ln, testnet.Discard)
	c, err := a.Dial("tcp", net.JoinHostPort(sidecartest.Addr4(1).String(), "9000"))
	must(t, err)
	if _, err := io.CopyN(c, testnet.Pattern(), 2<<20); err != nil {
		t.Fatal(err)
	}
	c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := a.Ping(ctx, sidecartest.Addr4(1).String()); err != nil {
		t.Fatal(err)
	}
	top := url.Values{"since": {"1h"}, "group": {"dst"}, "top": {"10"}}
	var last string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(1500 * time.Millisecond) {
		for _, n := range f.nodes {
			must(t, n.CutFlows(ctx))
		}
		nodes := f.api(t, "/api/v1/nodes", url.Values{})
		rows, _ := json.Marshal(f.api(t, "/api/v1/flows", top))
		if len(nodes) == 100 && string(rows) == last && last != "null" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the collector lists %d nodes and its top talkers keep changing: %s", len(nodes), rows)
		}
		last = string(rows)
	}
}

// addSyntheticNodes uploads one window from each of n more nodes
// (synthetic-00, ...), as their sidecars would, so the page has a fleet of
// that size to show: a few hundred bytes each, to addresses of their own.
func (f *consoleFleet) addSyntheticNodes(t *testing.T, n int) {
	id, err := logtail.NewPrivateID()
	must(t, err)
	now := time.Now().UTC().Add(-time.Minute)
	var entries []map[string]any
	for i := range n {
		entries = append(entries, map[string]any{
			"logtail": map[string]any{"client_time": now.Format(time.RFC3339Nano), "proc_id": "synthetic", "proc_seq": i + 1},
			"nodeId":  fmt.Sprintf("synthetic-%02d", i),
			"start":   now.Format(time.RFC3339Nano),
			"end":     now.Add(5*time.Second - time.Nanosecond).Format(time.RFC3339Nano),
			"virtualTraffic": []map[string]any{{
				"proto": 6, "src": fmt.Sprintf("10.98.%d.%d:40000", i/250, i%250+1), "dst": "10.98.255.1:80",
				"txPkts": 2, "txBytes": 200 + i, "rxPkts": 1, "rxBytes": 60,
			}},
		})
	}
	body, err := json.Marshal(entries)
	must(t, err)
	resp, err := http.Post(f.url+"/c/"+consoleCollection+"/"+id.Hex(), "application/json", strings.NewReader(string(body)))
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("uploading %d synthetic nodes: %s", n, resp.Status)
	}
}

func TestConsoleInBrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("needs Debian's chromium (apt-get install chromium): drives the console in a headless browser")
	}
	f := startConsoleFleet(t)
	f.addSyntheticNodes(t, 98) // with the two real ones, a fleet of 100
	f.moveTraffic(t)

	ctx, browserErrors := newBrowser(t, chromium)
	page := f.url + "/?collection=" + consoleCollection + "&range=1h&live=0&by=dst&top=10"

	// A wrong token is refused, and the page says so.
	must(t, chromedp.Do(ctx,
		chromedp.Navigate(page),
		chromedp.WaitVisible("#signin-token"),
		chromedp.SendKeys("#signin-token", "not-the-token"),
		chromedp.Click("#signin-form button"),
		chromedp.WaitVisible("#signin-error"),
	))
	waitText(t, ctx, "#signin-error", "refused")
	if loc := location(t, ctx); strings.Contains(loc, "token") {
		t.Errorf("the token reached the address: %s", loc)
	}
	browserErrors.allowNetwork401()

	// The right one shows the fleet.
	must(t, chromedp.Do(ctx,
		chromedp.SendKeys("#signin-token", consoleToken),
		chromedp.Click("#signin-form button"),
		chromedp.WaitVisible("#top tbody tr a"),
	))
	if loc := location(t, ctx); strings.Contains(loc, consoleToken) {
		t.Errorf("the token reached the address: %s", loc)
	}
	points, err := chromedp.Run(ctx, chromedp.AttributeValue("#chart", "data-points"))
	must(t, err)
	if n, _ := strconv.Atoi(points.Value); n == 0 {
		t.Errorf("the chart has no points (data-points=%q)", points.Value)
	}
	if _, err := chromedp.Run(ctx, chromedp.Nodes("#chart canvas", chromedp.AtLeast(1))); err != nil {
		t.Errorf("the chart drew no canvas: %v", err)
	}

	// The table's first row is the API's top destination, with its bytes.
	want := f.api(t, "/api/v1/flows", url.Values{"since": {"1h"}, "group": {"dst"}, "top": {"10"}})
	if len(want) == 0 {
		t.Fatal("the API has no top talkers")
	}
	wantKey := fmt.Sprint(want[0]["dst"])
	wantBytes := int64(num(want[0]["txBytes"]) + num(want[0]["rxBytes"]))
	key, err := chromedp.Run(ctx, chromedp.Text("#top tbody tr:first-child td:first-child"))
	must(t, err)
	bytesAttr, err := chromedp.Run(ctx, chromedp.AttributeValue("#top tbody tr:first-child", "data-bytes"))
	must(t, err)
	if key != wantKey || bytesAttr.Value != strconv.FormatInt(wantBytes, 10) {
		t.Errorf("first row %q with %s bytes; the API's top destination is %q with %d", key, bytesAttr.Value, wantKey, wantBytes)
	}

	// One refresh (Apply) of the hour's view of the 100 nodes makes at
	// most three API calls.
	before := f.apiCalls.Load()
	must(t, chromedp.Do(ctx,
		chromedp.Evaluate[chromedp.Void](`document.getElementById("status").textContent = ""`),
		chromedp.Click("#filters button[type=submit]"),
	))
	waitText(t, ctx, "#status", "updated")
	if calls := f.apiCalls.Load() - before; calls > 3 {
		t.Errorf("one refresh made %d API calls; want at most 3", calls)
	} else {
		t.Logf("one refresh: %d API calls", calls)
	}

	overview, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	must(t, err)
	saveArtifact(t, "console.png", overview)

	// The first row's link, reached from the keyboard (focus, Enter),
	// filters the page and the address by it.
	must(t, chromedp.Do(ctx,
		chromedp.Focus("#top tbody tr:first-child a"),
		chromedp.KeyEvent("\r"),
	))
	waitText(t, ctx, "#status", "updated")
	loc := location(t, ctx)
	addr := wantKey // an anonymised row has no port
	if host, _, err := net.SplitHostPort(wantKey); err == nil {
		addr = host
	}
	if !strings.Contains(loc, "addr="+url.QueryEscape(addr)) {
		t.Errorf("after the click the address is %s; want addr=%s in it", loc, addr)
	}
	value, err := chromedp.Run(ctx, chromedp.Value("#f-addr"))
	must(t, err)
	if value != addr {
		t.Errorf("the address filter shows %q, want %q", value, addr)
	}

	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	must(t, err)
	saveArtifact(t, "console-filtered.png", png)
	browserErrors.check(t)
}

// browserLog gathers what the page's console reports as errors: uncaught
// exceptions, console.error calls and error log entries (a failed request
// among them).
type browserLog struct {
	mu       sync.Mutex
	errors   []string
	allow401 int
}

func (b *browserLog) add(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.errors = append(b.errors, s)
}

// allowNetwork401 forgives the failed requests logged so far whose status
// was 401: the wrong-token step makes them on purpose.
func (b *browserLog) allowNetwork401() {
	b.mu.Lock()
	defer b.mu.Unlock()
	kept := b.errors[:0]
	for _, e := range b.errors {
		if strings.Contains(e, "401") && strings.HasPrefix(e, "network:") {
			b.allow401++
			continue
		}
		kept = append(kept, e)
	}
	b.errors = kept
}

func (b *browserLog) check(t *testing.T) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.errors {
		t.Errorf("browser console: %s", e)
	}
}

// newBrowser starts Debian's chromium headless with a fresh profile and
// returns a tab's context, with its console errors gathered.
func newBrowser(t *testing.T, chromium string) (context.Context, *browserLog) {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.WindowSize(1400, 1000),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	bl := &browserLog{}
	must(t, chromedp.Do(ctx)) // starts the browser; chromedp enables the runtime and log domains
	chromedp.Listen(ctx, func(ev any) {
		switch e := ev.(type) {
		case *runtime.EventExceptionThrown:
			bl.add("exception: " + e.ExceptionDetails.Text + " " + e.ExceptionDetails.Exception.Description)
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeAssert {
				var args []string
				for _, a := range e.Args {
					args = append(args, string(a.Value)+a.Description)
				}
				bl.add("console.error: " + strings.Join(args, " "))
			}
		case *log.EventEntryAdded:
			if e.Entry.Level == log.EntryLevelError {
				bl.add(string(e.Entry.Source) + ": " + e.Entry.Text + " " + e.Entry.URL)
			}
		}
	})
	tctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(cancel)
	return tctx, bl
}

// waitText waits up to 20 s for the element's text to contain want.
func waitText(t *testing.T, ctx context.Context, sel, want string) {
	t.Helper()
	var got string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var err error
		got, err = chromedp.Run(ctx, chromedp.TextContent(sel))
		must(t, err)
		if strings.Contains(got, want) {
			return
		}
	}
	t.Fatalf("%s says %q; want %q in it", sel, got, want)
}

func location(t *testing.T, ctx context.Context) string {
	t.Helper()
	loc, err := chromedp.Run(ctx, chromedp.Location())
	must(t, err)
	return loc
}

// saveArtifact writes a file the test makes for people to look at: into
// $WGSIDECAR_ARTIFACTS when set, else into the test's temporary directory.
func saveArtifact(t *testing.T, name string, data []byte) {
	dir := os.Getenv("WGSIDECAR_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Errorf("saving %s: %v", name, err)
		return
	}
	t.Logf("saved %s", path)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func num(v any) float64 {
	f, _ := v.(float64)
	return f
}
