// Tests of a running node's /metrics, /healthz and /readyz, with a strict
// parser of the Prometheus text format.

package metrics_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/monitor"
	"github.com/wgsidecar/sidecar/sidecartest"
	"github.com/wgsidecar/sidecar/wgconf"
)

// sample is one parsed exposition line.
type sample struct {
	labels map[string]string
	value  float64
}

var (
	metricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	labelName  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// parseExposition checks text against the Prometheus text format (0.0.4)
// strictly and returns the samples by metric name: every family has one
// HELP and one TYPE line before its samples, its samples are together,
// names and labels are well formed, values are numbers.
func parseExposition(text string) (map[string][]sample, error) {
	out := map[string][]sample{}
	typed := map[string]string{}
	helped := map[string]bool{}
	done := map[string]bool{} // families whose lines have ended
	cur := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	for ln := 1; sc.Scan(); ln++ {
		line := sc.Text()
		fail := func(f string, args ...any) error {
			return fmt.Errorf("line %d %q: %s", ln, line, fmt.Sprintf(f, args...))
		}
		var name string
		switch {
		case strings.HasPrefix(line, "# HELP "), strings.HasPrefix(line, "# TYPE "):
			kw, rest := line[2:6], line[7:]
			name, rest, _ = strings.Cut(rest, " ")
			if !metricName.MatchString(name) {
				return nil, fail("bad metric name")
			}
			if kw == "HELP" {
				if helped[name] {
					return nil, fail("second HELP")
				}
				helped[name] = true
				if strings.Contains(strings.NewReplacer(`\\`, "", `\n`, "").Replace(rest), `\`) {
					return nil, fail("bad escape in help")
				}
			} else {
				if typed[name] != "" || len(out[name]) > 0 {
					return nil, fail("TYPE repeated or after samples")
				}
				switch rest {
				case "counter", "gauge", "histogram", "summary", "untyped":
				default:
					return nil, fail("unknown type")
				}
				typed[name] = rest
			}
		case strings.HasPrefix(line, "#"), line == "":
			return nil, fail("unexpected comment or blank line")
		default:
			var s sample
			var rest string
			var err error
			name, s.labels, rest, err = parseSampleHead(line)
			if err != nil {
				return nil, fail("%v", err)
			}
			fields := strings.Fields(rest)
			if len(fields) < 1 || len(fields) > 2 {
				return nil, fail("want a value and an optional timestamp")
			}
			switch fields[0] {
			case "+Inf", "-Inf", "NaN":
			default:
				if s.value, err = strconv.ParseFloat(fields[0], 64); err != nil {
					return nil, fail("bad value")
				}
			}
			if typed[name] == "" || !helped[name] {
				return nil, fail("sample without HELP and TYPE before it")
			}
			out[name] = append(out[name], s)
		}
		if name != cur {
			if done[name] {
				return nil, fail("family %s resumes after another", name)
			}
			if cur != "" {
				done[cur] = true
			}
			cur = name
		}
	}
	return out, sc.Err()
}

// parseSampleHead splits `name{a="b",c="d"} rest`.
func parseSampleHead(line string) (name string, labels map[string]string, rest string, err error) {
	i := strings.IndexAny(line, "{ ")
	if i < 0 {
		return "", nil, "", errors.New("no value")
	}
	name, rest = line[:i], line[i:]
	if !metricName.MatchString(name) {
		return "", nil, "", errors.New("bad metric name")
	}
	labels = map[string]string{}
	if rest[0] != '{' {
		return name, labels, rest, nil
	}
	rest = rest[1:]
	for {
		if strings.HasPrefix(rest, "}") {
			return name, labels, rest[1:], nil
		}
		ln, after, ok := strings.Cut(rest, `="`)
		if !ok || !labelName.MatchString(ln) || strings.HasPrefix(ln, "__") {
			return "", nil, "", fmt.Errorf("bad label name %q", ln)
		}
		if _, dup := labels[ln]; dup {
			return "", nil, "", fmt.Errorf("label %q repeated", ln)
		}
		var v strings.Builder
		j := 0
		for ; j < len(after) && after[j] != '"'; j++ {
			if after[j] == '\\' {
				j++
				switch {
				case j == len(after):
					return "", nil, "", errors.New("unterminated escape")
				case after[j] == 'n':
					v.WriteByte('\n')
				case after[j] == '\\' || after[j] == '"':
					v.WriteByte(after[j])
				default:
					return "", nil, "", fmt.Errorf(`bad escape \%c`, after[j])
				}
				continue
			}
			v.WriteByte(after[j])
		}
		if j == len(after) {
			return "", nil, "", errors.New("unterminated label value")
		}
		labels[ln] = v.String()
		rest = after[j+1:]
		if strings.HasPrefix(rest, ",") {
			rest = rest[1:]
		} else if !strings.HasPrefix(rest, "}") {
			return "", nil, "", errors.New("want , or } after a label")
		}
	}
}

func TestParseExpositionRejects(t *testing.T) {
	good := "# HELP a_total A.\n# TYPE a_total counter\na_total{k=\"v\\\"\"} 1\n"
	if _, err := parseExposition(good); err != nil {
		t.Fatalf("good text refused: %v", err)
	}
	for _, bad := range []string{
		"a 1\n", // no HELP/TYPE
		"# HELP a A.\n# TYPE a gauge\na{k=v} 1\n", // unquoted
		"# HELP a A.\n# TYPE a gauge\na{k=\"v\" 1\n",
		"# HELP a A.\n# TYPE a gauge\na{k=\"\\x\"} 1\n",
		"# HELP a A.\n# TYPE a gauge\na{1k=\"v\"} 1\n",
		"# HELP a A.\n# TYPE a gauge\na one\n",
		"# HELP a-b A.\n# TYPE a-b gauge\na-b 1\n",
		"# HELP a A.\n# TYPE a gauge\n# HELP b B.\n# TYPE b gauge\nb 1\na 1\n", // a resumes
		"# HELP a A.\n# TYPE a gauge\n\na 1\n",
	} {
		if _, err := parseExposition(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestMetrics(t *testing.T) {
	// A collector that takes every upload: the log stream's counters move.
	var posts atomic.Int64
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		posts.Add(1)
	}))
	t.Cleanup(collector.Close) // after the nodes' own cleanups: their last window uploads
	socksAddr := fmt.Sprintf("127.0.0.1:%d", testnet.FreePort(t, "tcp"))
	nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{Configure: func(i int, cfg *wgconf.Config) {
		cfg.Metrics = &wgconf.Metrics{BindAddress: "127.0.0.1:0"}
		cfg.FlowLog = &wgconf.FlowLog{Window: time.Hour, Output: filepath.Join(t.TempDir(), "flows.ndjson")}
		if i == 0 {
			cfg.LogStream = &wgconf.LogStream{URL: collector.URL, Collection: "metrics.test", BufferDir: t.TempDir(),
				PrivateID: strings.Repeat("ab", 32), MaxBuffer: 1 << 20}
			cfg.Socks5 = []wgconf.Socks5{{BindAddress: socksAddr, Username: "u", Password: "p"}}
		}
	}, NodeOptions: func(i int, o *sidecar.Options) { o.LogStreamFlush = 50 * time.Millisecond }})
	a, b := nodes[0], nodes[1]
	if a.MetricsAddr() == nil {
		t.Fatal("MetricsAddr() is nil with a [Metrics] section")
	}
	base := "http://" + a.MetricsAddr().String()

	if code, body := testnet.GetStatus(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	// No traffic yet, so no handshake: not ready, and it says why.
	if code, body := testnet.GetStatus(t, base+"/readyz"); code != 503 || !strings.Contains(body, "handshake") {
		t.Errorf("/readyz before any handshake: %d %q; want 503 with the reason", code, body)
	}

	testnet.ServeHTTP(t, b, "b")
	testnet.Get(t, a.HTTPClient(), "http://10.99.0.2/")
	// A SOCKS5 client with the wrong password is refused.
	if c, err := net.Dial("tcp", socksAddr); err == nil {
		c.Write([]byte{5, 1, 2})
		io.ReadFull(c, make([]byte, 2))
		c.Write([]byte{1, 1, 'u', 1, 'x'})
		io.ReadFull(c, make([]byte, 2))
		c.Close()
	}
	l := a.Monitor().Listen(16, monitor.Filter{})
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.CutFlows(ctx); err != nil {
		t.Fatal(err)
	}
	for posts.Load() == 0 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond) // the window's upload
	}

	if code, body := testnet.GetStatus(t, base+"/readyz"); code != 200 {
		t.Errorf("/readyz after traffic: %d %q", code, body)
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q", ct)
	}
	text := string(raw)
	got, err := parseExposition(text)
	if err != nil {
		t.Fatalf("/metrics is not valid exposition text: %v\n%s", err, text)
	}
	peer := b.PublicKey().String()
	value := func(name string, labels ...string) float64 {
		t.Helper()
	next:
		for _, s := range got[name] {
			for i := 0; i < len(labels); i += 2 {
				if s.labels[labels[i]] != labels[i+1] {
					continue next
				}
			}
			return s.value
		}
		t.Errorf("no sample %s%v in:\n%s", name, labels, text)
		return 0
	}
	for _, name := range []string{"wgsidecar_peer_receive_bytes_total", "wgsidecar_peer_transmit_bytes_total"} {
		if v := value(name, "public_key", peer); v <= 0 {
			t.Errorf("%s = %v after traffic", name, v)
		}
	}
	if age := value("wgsidecar_peer_handshake_age_seconds", "public_key", peer); age < 0 || age > 60 {
		t.Errorf("handshake age %v s", age)
	}
	if ts := value("wgsidecar_peer_last_handshake_timestamp_seconds", "public_key", peer); time.Since(time.Unix(int64(ts), 0)) > time.Minute {
		t.Errorf("last handshake timestamp %v", ts)
	}
	if v := value("wgsidecar_peers"); v != 1 {
		t.Errorf("wgsidecar_peers = %v", v)
	}
	if v := value("wgsidecar_wireguard_messages_total", "direction", "sent", "type", "initiation") +
		value("wgsidecar_wireguard_messages_total", "direction", "received", "type", "initiation"); v < 1 {
		t.Errorf("no handshake initiation counted: %v", v)
	}
	if v := value("wgsidecar_flowlog_windows_total"); v != 1 {
		t.Errorf("wgsidecar_flowlog_windows_total = %v after one cut", v)
	}
	value("wgsidecar_flowlog_window_flows", "layer", "virtual")
	value("wgsidecar_flowlog_early_cuts_total")
	if v := value("wgsidecar_logstream_uploads_total"); v < 1 || float64(posts.Load()) < v {
		t.Errorf("wgsidecar_logstream_uploads_total = %v; the collector saw %d uploads", v, posts.Load())
	}
	if v := value("wgsidecar_logstream_uploaded_entries_total"); v < 1 {
		t.Errorf("wgsidecar_logstream_uploaded_entries_total = %v", v)
	}
	for _, name := range []string{"wgsidecar_logstream_upload_failures_total", "wgsidecar_logstream_dropped_entries_total", "wgsidecar_monitor_lost_events_total", "wgsidecar_connection_errors_total"} {
		if v := value(name); v != 0 {
			t.Errorf("%s = %v; want 0", name, v)
		}
	}
	value("wgsidecar_logstream_pending_bytes")
	if v := value("wgsidecar_stack_drops_total", "reason", "queue-full"); v != 0 {
		t.Errorf("wgsidecar_stack_drops_total{reason=queue-full} = %v; want 0", v)
	}
	value("wgsidecar_stack_drops_total", "reason", "no-listener")
	if v := value("wgsidecar_monitor_listeners"); v != 1 {
		t.Errorf("wgsidecar_monitor_listeners = %v with one listener", v)
	}
	if v := value("wgsidecar_connections_refused_total", "reason", "policy-refused"); v != 1 {
		t.Errorf("wgsidecar_connections_refused_total{reason=policy-refused} = %v after one wrong password", v)
	}
	value("wgsidecar_info", "public_key", a.PublicKey().String(), "node_id", sidecar.NodeID(a.PublicKey()))

	// The private key appears nowhere, in any encoding.
	for _, k := range []string{a.Config().Interface.PrivateKey.Base64(), a.Config().Interface.PrivateKey.Hex()} {
		if strings.Contains(text, k) {
			t.Fatal("/metrics shows the private key")
		}
	}

	// An independent check of the format: Prometheus's own linter.
	t.Run("promtool", func(t *testing.T) {
		promtool, err := exec.LookPath("promtool")
		if err != nil {
			t.Skip("promtool is not installed (Debian package prometheus); .ci/run installs it")
		}
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(text)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	})
}
