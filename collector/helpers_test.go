package collector

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

const (
	testToken      = "s3cret-token"
	testCollection = "flows.test"
	// privA and privB are two streams' private IDs.
	privA = "0101010101010101010101010101010101010101010101010101010101010101"
	privB = "0202020202020202020202020202020202020202020202020202020202020202"
)

// startServer opens a collector on a fresh DataDir (unless cfg has one),
// serves it on loopback and returns it with its base URL. Cleanup closes
// it and checks that Serve returned cleanly.
func startServer(t testing.TB, cfg Config) (*Server, string) {
	t.Helper()
	if cfg.DataDir == "" && cfg.Storage == nil {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Token == "" {
		cfg.Token = testToken
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, "http://" + ln.Addr().String()
}

// testClient is an HTTP client whose connections the test closes, so
// that leak checks see no keep-alive goroutines.
func testClient(t testing.TB) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// post uploads body to collection coll of stream priv and returns the
// status and answer.
func post(t testing.TB, c *http.Client, base, coll, priv string, body []byte, encoding string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/c/"+coll+"/"+priv, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(answer))
}

// queryLogs asks for coll's entries in [start, end] (and node, if not
// empty) with token, and returns the status and the entries.
func queryLogs(t testing.TB, c *http.Client, base, token, coll string, start, end time.Time, node string) (int, []map[string]any) {
	t.Helper()
	v := url.Values{"collection": {coll}, "start": {start.Format(time.RFC3339Nano)}, "end": {end.Format(time.RFC3339Nano)}}
	if node != "" {
		v.Set("node", node)
	}
	req, err := http.NewRequest(http.MethodGet, base+"/api/v1/logs?"+v.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	var answer struct {
		Logs []map[string]any `json:"logs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
		t.Fatal(err)
	}
	if answer.Logs == nil {
		t.Fatal(`answer has no "logs" array`)
	}
	return resp.StatusCode, answer.Logs
}

// everything is a time range that holds every test entry.
var (
	longAgo  = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	farAhead = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
)

// entry returns a logtail-shaped entry.
func entry(node, procID string, seq int, extra string) string {
	s := fmt.Sprintf(`{"logtail":{"client_time":"2026-01-02T03:04:05Z","proc_id":%q,"proc_seq":%d},"nodeId":%q`, procID, seq, node)
	if extra != "" {
		s += "," + extra
	}
	return s + "}"
}

func jsonArray(entries ...string) []byte {
	return []byte("[" + strings.Join(entries, ",") + "]")
}

var (
	encOnce sync.Once
	enc     *zstd.Encoder
)

func zstdOf(b []byte) []byte {
	encOnce.Do(func() { enc, _ = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1)) })
	return enc.EncodeAll(b, nil)
}

// zstdStream compresses b as a stream writer does: no content size in
// the header, a 1 MiB window.
func zstdStream(b []byte) []byte {
	var out bytes.Buffer
	w, _ := zstd.NewWriter(&out, zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(1<<20))
	w.Write(b)
	w.Close()
	return out.Bytes()
}

// bombFrame hand-builds a zstd frame that inflates to prefix, then n
// bytes of fill, then suffix, in a few bytes per 128 KiB (RLE blocks):
// 1 GiB costs 32 KiB. With declare, the frame header declares the
// content size (a single-segment frame), as a one-shot encoder writes it.
func bombFrame(prefix []byte, fill byte, n int64, suffix []byte, declare bool) []byte {
	const block = 128 << 10
	f := []byte{0x28, 0xb5, 0x2f, 0xfd}
	if declare {
		f = append(f, 0xe0) // FCS 8 bytes, single segment
		f = binary.LittleEndian.AppendUint64(f, uint64(int64(len(prefix))+n+int64(len(suffix))))
	} else {
		f = append(f, 0x00, 0x38) // no FCS; window 2^(10+7) = 128 KiB
	}
	blockHeader := func(last bool, typ, size int) {
		h := uint32(size)<<3 | uint32(typ)<<1
		if last {
			h |= 1
		}
		f = append(f, byte(h), byte(h>>8), byte(h>>16))
	}
	blockHeader(false, 0, len(prefix)) // raw
	f = append(f, prefix...)
	for n > 0 {
		size := min(n, block)
		blockHeader(false, 1, int(size)) // RLE
		f = append(f, fill)
		n -= size
	}
	blockHeader(true, 0, len(suffix))
	return append(f, suffix...)
}

// diffLines returns "" if got equals want, else both, one item a line,
// marked "-" (got) and "+" (want).
func diffLines(got, want []string) string {
	if slices.Equal(got, want) {
		return ""
	}
	var b strings.Builder
	for _, g := range got {
		fmt.Fprintf(&b, "-%s\n", g)
	}
	for _, w := range want {
		fmt.Fprintf(&b, "+%s\n", w)
	}
	return b.String()
}
