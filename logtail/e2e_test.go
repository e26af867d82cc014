package logtail_test

// End-to-end tests: the logtail client against a real collector over
// loopback HTTP, and against the death of its own process.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/collector"
	"github.com/wgsidecar/sidecar/internal/leaktest"
	"github.com/wgsidecar/sidecar/logtail"
)

const (
	token      = "test-token"
	collection = "test"
)

// roleEnv, when set, makes the test binary a logtail writer instead of
// running tests (see TestMain and writerRole).
const roleEnv = "LOGTAIL_TEST_ROLE"

func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) == "writer" {
		os.Exit(writerRole())
	}
	os.Exit(m.Run())
}

// testCollector is a real collector on loopback, with a switch in front
// that can hold answers back.
type testCollector struct {
	srv  *collector.Server
	URL  string
	http *httptest.Server

	mu         sync.Mutex
	encodings  map[string]int
	duplicates int           // as the collector's answers counted them
	codes      map[int]int   // the collector's answers to uploads
	hold       bool          // store uploads but keep their answers back
	held       chan struct{} // gets a value when an upload has been stored and held
}

func startCollector(t *testing.T, ln net.Listener) *testCollector {
	return startCollectorConfig(t, ln, collector.Config{})
}

func startCollectorConfig(t *testing.T, ln net.Listener, cfg collector.Config) *testCollector {
	t.Helper()
	cfg.DataDir, cfg.Token = t.TempDir(), token
	srv, err := collector.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tc := &testCollector{srv: srv, encodings: map[string]int{}, codes: map[int]int{}, held: make(chan struct{}, 100)}
	tc.http = httptest.NewUnstartedServer(http.HandlerFunc(tc.serve))
	if ln != nil {
		tc.http.Listener.Close()
		tc.http.Listener = ln
	}
	tc.http.Start()
	tc.URL = tc.http.URL
	t.Cleanup(func() {
		tc.http.Close()
		srv.Close()
	})
	return tc
}

func (tc *testCollector) serve(w http.ResponseWriter, r *http.Request) {
	tc.mu.Lock()
	tc.encodings[r.Header.Get("Content-Encoding")]++
	hold := tc.hold && r.Method == http.MethodPost
	tc.mu.Unlock()
	if !hold {
		rec := httptest.NewRecorder()
		tc.srv.Handler().ServeHTTP(rec, r)
		var answer struct{ Duplicates int }
		if r.Method == http.MethodPost {
			tc.mu.Lock()
			tc.codes[rec.Code]++
			if json.Unmarshal(rec.Body.Bytes(), &answer) == nil {
				tc.duplicates += answer.Duplicates
			}
			tc.mu.Unlock()
		}
		maps.Copy(w.Header(), rec.Header())
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
		return
	}
	rec := httptest.NewRecorder()
	tc.srv.Handler().ServeHTTP(rec, r) // stored: the answer would be 200
	tc.held <- struct{}{}
	<-r.Context().Done() // never answered; the client dies waiting
}

// logs returns every stored entry of the test collection.
func (tc *testCollector) logs(t *testing.T) []map[string]any {
	t.Helper()
	v := url.Values{"collection": {collection}, "start": {"2000-01-01T00:00:00Z"}, "end": {"2100-01-01T00:00:00Z"}}
	req, _ := http.NewRequest(http.MethodGet, tc.URL+"/api/v1/logs?"+v.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("query: %s %s", resp.Status, b)
	}
	var answer struct{ Logs []map[string]any }
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
		t.Fatal(err)
	}
	return answer.Logs
}

// seqsByProc groups the stored entries' proc_seq by proc_id.
func seqsByProc(logs []map[string]any) map[string][]int {
	out := map[string][]int{}
	for _, l := range logs {
		lt := l["logtail"].(map[string]any)
		id := lt["proc_id"].(string)
		out[id] = append(out[id], int(lt["proc_seq"].(float64)))
	}
	return out
}

// checkOnce checks that seqs holds 1…n, each once, in order.
func checkOnce(t *testing.T, what string, seqs []int, n int) {
	t.Helper()
	if len(seqs) != n {
		t.Errorf("%s: %d entries, want %d", what, len(seqs), n)
	}
	for i, s := range seqs {
		if s != i+1 {
			t.Errorf("%s: entry %d has proc_seq %d, want %d (seqs %v…)", what, i, s, i+1, seqs[:min(len(seqs), 20)])
			return
		}
	}
}

func newConfig(t *testing.T, base string) logtail.Config {
	id, err := logtail.NewPrivateID()
	if err != nil {
		t.Fatal(err)
	}
	return logtail.Config{
		BaseURL:       base,
		Collection:    collection,
		PrivateID:     id,
		BufferDir:     t.TempDir(),
		FlushInterval: 20 * time.Millisecond,
		MaxRetryDelay: 200 * time.Millisecond,
	}
}

func flowEntry(i int) []byte {
	return fmt.Appendf(nil, `{"nodeId":"n1","start":"2026-01-01T00:00:%02dZ","virtualTraffic":[{"proto":6,"src":"10.99.0.1:40312","dst":"10.99.0.2:80","txPkts":%d,"txBytes":306,"rxPkts":3,"rxBytes":318}]}`, i%60, i)
}

// TestToCollector: entries written while the collector is up arrive, with
// contiguous proc_seq, compressed with zstd.
func TestToCollector(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	tc := startCollector(t, nil)
	l, err := logtail.New(newConfig(t, tc.URL))
	if err != nil {
		t.Fatal(err)
	}
	const n = 2000
	for i := range n {
		if err := l.Write(flowEntry(i)); err != nil {
			t.Fatal(err)
		}
		if i%500 == 0 {
			time.Sleep(30 * time.Millisecond) // let several uploads happen
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	logs := tc.logs(t)
	seqs := seqsByProc(logs)
	checkOnce(t, "entries", seqs[l.ProcID()], n)
	if logs[0]["nodeId"] != "n1" || logs[0]["logged"] == nil || logs[0]["virtualTraffic"] == nil {
		t.Errorf("first entry %v", logs[0])
	}
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.encodings["zstd"] < 2 || len(tc.encodings) != 2 { // zstd uploads and the identity query
		t.Errorf("Content-Encoding seen at the collector: %v, want several zstd uploads", tc.encodings)
	}
}

// TestCollectorDownThenUp: the client keeps logging while nothing
// listens; once the collector is up, every entry arrives exactly once.
func TestCollectorDownThenUp(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there for now

	l, err := logtail.New(newConfig(t, "http://"+addr))
	if err != nil {
		t.Fatal(err)
	}
	const n = 500
	for i := range n {
		l.Write(flowEntry(i))
		if i%100 == 0 {
			time.Sleep(50 * time.Millisecond) // uploads fail meanwhile
		}
	}
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listening again on %s: %v", addr, err)
	}
	tc := startCollector(t, ln)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	checkOnce(t, "entries", seqsByProc(tc.logs(t))[l.ProcID()], n)
}

// TestBufferFullRecordsDrops: with the collector down, a client writes a
// little more than its buffer holds; the oldest entries go, a record in
// the stream says how many, and kept plus dropped is everything.
func TestBufferFullRecordsDrops(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	cfg := newConfig(t, "http://"+addr)
	cfg.MaxBuffer = 32 << 10
	l, err := logtail.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Enough to overflow once: a drop frees an eighth of the buffer,
	// more than the last few entries take.
	n := int((cfg.MaxBuffer-1024)/int64(len(flowEntry(100))+100)) + 5
	for i := range n {
		if err := l.Write(flowEntry(i)); err != nil {
			t.Fatal(err)
		}
	}
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	tc := startCollector(t, ln)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	var kept, records, dropped, firstSeq, lastSeq int
	for _, e := range tc.logs(t) {
		seq := int(e["logtail"].(map[string]any)["proc_seq"].(float64))
		if firstSeq == 0 {
			firstSeq = seq
		} else if seq != lastSeq+1 {
			t.Errorf("proc_seq %d after %d: a gap after the dropped head", seq, lastSeq)
		}
		lastSeq = seq
		if d, ok := e["dropped_entries"]; ok {
			dropped += int(d.(float64))
			records++
		} else {
			kept++
		}
	}
	t.Logf("%d written: kept %d, dropped %d, %d record(s)", n, kept, dropped, records)
	// An upload under way when the oldest entries went may still deliver
	// some of them: the record's count is an upper bound on the loss.
	lost := firstSeq - 1
	if c := l.Counts(); c.Dropped != uint64(dropped) {
		t.Errorf("Counts().Dropped = %d; the dropped_entries record says %d", c.Dropped, dropped)
	}
	if records != 1 || dropped == 0 || kept+lost != n || lost > dropped {
		t.Errorf("%d written: kept %d, lost %d (the first proc_seq is %d), dropped %d in %d record(s)",
			n, kept, lost, firstSeq, dropped, records)
	}
}

// TestSmallerBatchesAfter413: a collector with a lower body limit than
// the client's batches answers 413; the client sends less at a time
// until everything is through.
func TestSmallerBatchesAfter413(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	tc := startCollectorConfig(t, nil, collector.Config{MaxBodyBytes: 4 << 10})
	cfg := newConfig(t, tc.URL)
	cfg.MaxRetryDelay = 10 * time.Millisecond
	l, err := logtail.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	r := rand.New(rand.NewPCG(1, 2))
	for range n {
		// Random hex digits compress to about half: 100 entries make
		// some 13 KB compressed.
		noise := make([]byte, 128)
		for i := range noise {
			noise[i] = byte(r.Uint32())
		}
		if err := l.Write(fmt.Appendf(nil, `{"noise":"%x"}`, noise)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := l.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	checkOnce(t, "entries", seqsByProc(tc.logs(t))[l.ProcID()], n)
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.codes[413] == 0 || tc.codes[200] < 3 {
		t.Errorf("collector answers %v, want 413s, then several 200s", tc.codes)
	}
	t.Logf("collector answers: %v", tc.codes)
}

// TestKilledMidUpload kills a writer process (SIGKILL) while its upload
// is stored but not yet answered, with more entries waiting behind it,
// then starts another writer on the same buffer: every entry arrives, and
// those sent twice are stored once.
func TestKilledMidUpload(t *testing.T) {
	if testing.Short() {
		t.Skip("runs child processes")
	}
	tc := startCollector(t, nil)
	tc.mu.Lock()
	tc.hold = true
	tc.mu.Unlock()
	priv, _ := logtail.NewPrivateID()
	dir := t.TempDir()

	first := startWriter(t, dir, tc.URL, priv, "hang", 300, 200)
	select {
	case <-tc.held:
	case <-time.After(10 * time.Second):
		t.Fatal("no upload reached the collector")
	}
	<-first.written
	first.cmd.Process.Kill() // SIGKILL
	first.cmd.Wait()

	tc.mu.Lock()
	tc.hold = false
	tc.mu.Unlock()
	second := startWriter(t, dir, tc.URL, priv, "flush", 50, 0)
	<-second.written
	if err := second.cmd.Wait(); err != nil {
		t.Fatalf("second writer: %v", err)
	}

	seqs := seqsByProc(tc.logs(t))
	checkOnce(t, "first writer", seqs[first.procID], 500)
	checkOnce(t, "second writer", seqs[second.procID], 50)
	if len(seqs) != 2 {
		t.Errorf("entries from %d processes, want 2", len(seqs))
	}
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.duplicates == 0 {
		t.Error("the collector saw no duplicates: the stored-but-unanswered upload was not sent again")
	}
	t.Logf("the collector dropped %d duplicates", tc.duplicates)
}

type writer struct {
	cmd     *exec.Cmd
	procID  string
	written chan struct{}
}

// startWriter runs the test binary as a writer (see writerRole).
func startWriter(t *testing.T, dir, base string, priv logtail.PrivateID, mode string, n1, n2 int) *writer {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), roleEnv+"=writer",
		"LOGTAIL_TEST_DIR="+dir, "LOGTAIL_TEST_URL="+base, "LOGTAIL_TEST_PRIV="+priv.Hex(),
		"LOGTAIL_TEST_MODE="+mode, "LOGTAIL_TEST_N1="+strconv.Itoa(n1), "LOGTAIL_TEST_N2="+strconv.Itoa(n2))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	w := &writer{cmd: cmd, written: make(chan struct{})}
	r := bufio.NewReader(out)
	line, err := r.ReadString('\n')
	w.procID, _ = strings.CutPrefix(strings.TrimSpace(line), "PROC ")
	if err != nil || len(w.procID) != 16 {
		t.Fatalf("writer said %q, %v", line, err)
	}
	go func() {
		r.ReadString('\n') // "WRITTEN"
		close(w.written)
		io.Copy(io.Discard, r)
	}()
	return w
}

// writerRole writes N1 entries, waits for an upload to start, writes N2
// more, says WRITTEN, and then either hangs (mode "hang", to be killed) or
// shuts down, flushing (mode "flush").
func writerRole() int {
	priv, err := logtail.ParsePrivateID(os.Getenv("LOGTAIL_TEST_PRIV"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	l, err := logtail.New(logtail.Config{
		BaseURL:       os.Getenv("LOGTAIL_TEST_URL"),
		Collection:    collection,
		PrivateID:     priv,
		BufferDir:     os.Getenv("LOGTAIL_TEST_DIR"),
		FlushInterval: 20 * time.Millisecond,
		MaxRetryDelay: 200 * time.Millisecond,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("PROC %s\n", l.ProcID())
	n1, _ := strconv.Atoi(os.Getenv("LOGTAIL_TEST_N1"))
	n2, _ := strconv.Atoi(os.Getenv("LOGTAIL_TEST_N2"))
	for i := range n1 + n2 {
		if i == n1 {
			time.Sleep(200 * time.Millisecond) // the first upload is in flight
		}
		if err := l.Write(flowEntry(i)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	fmt.Println("WRITTEN")
	if os.Getenv("LOGTAIL_TEST_MODE") == "hang" {
		select {}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := l.Shutdown(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
