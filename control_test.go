package sidecar_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/control"
	"github.com/wgsidecar/sidecar/internal/leaktest"
	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/monitor"
	"github.com/wgsidecar/sidecar/sidecartest"
	"github.com/wgsidecar/sidecar/wgconf"
)

// controlNodes starts n peered nodes, each with a control socket in a
// temporary directory, plus whatever configure adds.
func controlNodes(t *testing.T, n int, configure func(i int, cfg *wgconf.Config)) ([]*sidecar.Node, []string) {
	t.Helper()
	dir := t.TempDir()
	socks := make([]string, n)
	nodes := sidecartest.NewNodes(t, n, sidecartest.Options{Configure: func(i int, cfg *wgconf.Config) {
		socks[i] = filepath.Join(dir, fmt.Sprintf("n%d.sock", i))
		cfg.Control = &wgconf.Control{Socket: socks[i]}
		if configure != nil {
			configure(i, cfg)
		}
	}})
	return nodes, socks
}

func status(t *testing.T, sock string) *control.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := control.NewClient(sock).Status(ctx)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return st
}

func TestControlStatus(t *testing.T) {
	nodes, socks := controlNodes(t, 2, nil)
	a, b := nodes[0], nodes[1]
	if a.ControlSocket() != socks[0] {
		t.Errorf("ControlSocket() = %q, want %q", a.ControlSocket(), socks[0])
	}
	fi, err := os.Lstat(socks[0])
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket mode %v; want a socket with 0600", fi.Mode())
	}

	testnet.ServeHTTP(t, b, "b")
	testnet.Get(t, a.HTTPClient(), "http://10.99.0.2/")

	st := status(t, socks[0])
	if st.PublicKey != a.PublicKey().String() || st.NodeID != sidecar.NodeID(a.PublicKey()) {
		t.Errorf("status names %s / %s; want %s / %s", st.PublicKey, st.NodeID, a.PublicKey(), sidecar.NodeID(a.PublicKey()))
	}
	if st.ListenPort != a.ListenPort() || strings.Join(st.Addresses, ",") != "10.99.0.1/32,fd00:99::1/128" {
		t.Errorf("status: port %d, addresses %v", st.ListenPort, st.Addresses)
	}
	if st.UptimeSeconds <= 0 || st.UptimeSeconds > 600 || st.Time.Before(st.Started) {
		t.Errorf("status: started %v, time %v, uptime %v s", st.Started, st.Time, st.UptimeSeconds)
	}
	if len(st.Peers) != 1 {
		t.Fatalf("status has %d peers; want 1", len(st.Peers))
	}
	p := st.Peers[0]
	wantEndpoint := fmt.Sprintf("127.0.0.1:%d", b.ListenPort())
	if p.PublicKey != b.PublicKey().String() || p.Endpoint != wantEndpoint || strings.Join(p.AllowedIPs, ",") != "10.99.0.2/32,fd00:99::2/128" {
		t.Errorf("peer %+v; want key %s, endpoint %s", p, b.PublicKey(), wantEndpoint)
	}
	if p.RxBytes == 0 || p.TxBytes == 0 || p.LatestHandshake.IsZero() || st.Time.Sub(p.LatestHandshake) > time.Minute {
		t.Errorf("after traffic, peer has rx %d, tx %d, handshake %v (now %v)", p.RxBytes, p.TxBytes, p.LatestHandshake, st.Time)
	}
	if st.FlowLog.Enabled {
		t.Errorf("flow log reported on for a node without one: %+v", st.FlowLog)
	}
}

// TestControlStatusListeners checks that forwards show in the status with
// their addresses.
func TestControlStatusListeners(t *testing.T) {
	nodes, socks := controlNodes(t, 2, func(i int, cfg *wgconf.Config) {
		if i == 0 {
			cfg.TCPClientTunnels = []wgconf.TCPClientTunnel{{BindAddress: "127.0.0.1:0", Target: "10.99.0.2:80"}}
			cfg.Metrics = &wgconf.Metrics{BindAddress: "127.0.0.1:0"}
		}
	})
	testnet.ServeHTTP(t, nodes[1], "b")
	st := status(t, socks[0])
	if len(st.Listeners) != 1 {
		t.Fatalf("listeners %+v; want the one forward", st.Listeners)
	}
	l := st.Listeners[0]
	if !strings.Contains(l.Kind, "tcp") || !strings.HasPrefix(l.Listen, "127.0.0.1:") || l.Listen == "127.0.0.1:0" || l.Target != "10.99.0.2:80" {
		t.Errorf("listener %+v", l)
	}
	if l.Conns != nil {
		// Counted: one connection through the forward shows.
		if got := testnet.Get(t, http.DefaultClient, "http://"+l.Listen+"/"); !strings.HasPrefix(got, "b saw") {
			t.Fatalf("through the forward: %q", got)
		}
		http.DefaultClient.CloseIdleConnections()
		if c := status(t, socks[0]).Listeners[0].Conns; c.Accepted != 1 {
			t.Errorf("after one connection: %+v", c)
		}
		_, text := testnet.GetStatus(t, "http://"+nodes[0].MetricsAddr().String()+"/metrics")
		want := fmt.Sprintf("wgsidecar_forward_connections_total{kind=%q,listen=%q} 1\n", l.Kind, l.Listen)
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, text)
		}
	}
}

func TestControlFlows(t *testing.T) {
	nodes, socks := controlNodes(t, 2, func(i int, cfg *wgconf.Config) {
		// A window that never ends by itself: the test cuts it.
		cfg.FlowLog = &wgconf.FlowLog{Window: time.Hour, Output: filepath.Join(t.TempDir(), "flows.ndjson")}
	})
	a, b := nodes[0], nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := control.NewClient(socks[0])

	fl, err := c.Flows(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !fl.FlowLog.Enabled || fl.FlowLog.Window != "1h0m0s" || len(fl.Messages) != 0 {
		t.Errorf("before any window: %+v", fl)
	}
	testnet.ServeHTTP(t, b, "b")
	testnet.Get(t, a.HTTPClient(), "http://10.99.0.2/")
	if err := a.CutFlows(ctx); err != nil {
		t.Fatal(err)
	}
	fl, err = c.Flows(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(fl.Messages) != 1 || fl.FlowLog.Windows != 1 || fl.FlowLog.Messages != 1 {
		t.Fatalf("after one window: %+v", fl)
	}
	m := fl.Messages[0]
	if m.NodeID != sidecar.NodeID(a.PublicKey()) || len(m.PhysicalTraffic) == 0 {
		t.Errorf("message %+v", m)
	}
	found := false
	for _, e := range m.VirtualTraffic {
		if e.Proto == 6 && e.Dst == "10.99.0.2:80" && e.TxBytes > 0 && e.RxBytes > 0 {
			found = true
		}
	}
	if !found {
		t.Errorf("no TCP flow to 10.99.0.2:80 in %+v", m.VirtualTraffic)
	}
	// Reading does not cut: the window stays until the flow log cuts it.
	again, err := c.Flows(ctx)
	if err != nil || len(again.Messages) != 1 || !again.Messages[0].Start.Equal(m.Start) {
		t.Errorf("second read: %+v, %v", again, err)
	}
	if st := status(t, socks[0]); !st.FlowLog.Enabled || st.FlowLog.Windows != 1 {
		t.Errorf("status flow log: %+v", st.FlowLog)
	}
}

// startNode starts one unpeered node from cfg with a generated key.
func startNode(t *testing.T, configure func(cfg *wgconf.Config)) (*sidecar.Node, error) {
	t.Helper()
	k, err := wgconf.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	cfg := &wgconf.Config{Interface: wgconf.Interface{
		PrivateKey: k,
		MTU:        1420,
		Addresses:  []netip.Prefix{netip.MustParsePrefix("10.98.0.1/32")},
	}}
	configure(cfg)
	n, err := sidecar.Start(cfg, sidecar.Options{})
	if err == nil {
		t.Cleanup(func() { n.Close() })
	}
	return n, err
}

func TestControlSocketRemovedAfterClose(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "c.sock")
	n, err := startNode(t, func(cfg *wgconf.Config) { cfg.Control = &wgconf.Control{Socket: sock} })
	if err != nil {
		t.Fatal(err)
	}
	status(t, sock)
	n.Close()
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket after Close: %v; want it removed", err)
	}
	_, err = control.NewClient(sock).Status(context.Background())
	if !errors.Is(err, control.ErrNotRunning) {
		t.Errorf("status after Close: %v; want ErrNotRunning", err)
	}
}

func TestControlSocketInUse(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "c.sock")
	first, err := startNode(t, func(cfg *wgconf.Config) { cfg.Control = &wgconf.Control{Socket: sock} })
	if err != nil {
		t.Fatal(err)
	}
	_, err = startNode(t, func(cfg *wgconf.Config) { cfg.Control = &wgconf.Control{Socket: sock} })
	if err == nil || !errors.Is(err, control.ErrInUse) || !strings.Contains(err.Error(), sock) || !strings.Contains(err.Error(), "[Control]") {
		t.Fatalf("second node on the same socket: %v; want an error naming [Control], the path and that it is in use", err)
	}
	if st := status(t, sock); st.PublicKey != first.PublicKey().String() {
		t.Errorf("the socket now answers for %s; want the first node %s", st.PublicKey, first.PublicKey())
	}
}

func TestControlStaleSocketReplaced(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "c.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false) // as a process that died leaves it
	ln.Close()
	n, err := startNode(t, func(cfg *wgconf.Config) { cfg.Control = &wgconf.Control{Socket: sock} })
	if err != nil {
		t.Fatalf("start over a stale socket: %v", err)
	}
	if st := status(t, sock); st.PublicKey != n.PublicKey().String() {
		t.Errorf("status answered for %s", st.PublicKey)
	}
}

func TestControlDefaultSocket(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	n, err := startNode(t, func(cfg *wgconf.Config) { cfg.Control = &wgconf.Control{} })
	if err != nil {
		t.Fatal(err)
	}
	want := control.DefaultSocket(sidecar.NodeID(n.PublicKey()))
	if n.ControlSocket() != want {
		t.Errorf("ControlSocket() = %q; want the default %q", n.ControlSocket(), want)
	}
	status(t, want)
}

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

func TestMetricsAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sock := filepath.Join(t.TempDir(), "c.sock")
	_, err = startNode(t, func(cfg *wgconf.Config) {
		cfg.Control = &wgconf.Control{Socket: sock}
		cfg.Metrics = &wgconf.Metrics{BindAddress: ln.Addr().String()}
	})
	if err == nil || !strings.Contains(err.Error(), "[Metrics]") {
		t.Fatalf("metrics on a taken port: %v; want an error naming [Metrics]", err)
	}
	// The failed start cleaned up after itself: the control socket is gone.
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("control socket left by a failed start: %v", err)
	}
}

func TestControlAndMetricsCloseLeavesNoGoroutine(t *testing.T) {
	check := leaktest.Check(t)
	t.Run("nodes", func(t *testing.T) {
		nodes, socks := controlNodes(t, 2, func(i int, cfg *wgconf.Config) {
			cfg.Metrics = &wgconf.Metrics{BindAddress: "127.0.0.1:0"}
			cfg.FlowLog = &wgconf.FlowLog{Window: time.Hour, Output: filepath.Join(t.TempDir(), "flows.ndjson")}
		})
		testnet.ServeHTTP(t, nodes[1], "b")
		testnet.Get(t, nodes[0].HTTPClient(), "http://10.99.0.2/")
		status(t, socks[0])
		if _, err := control.NewClient(socks[0]).Flows(context.Background()); err != nil {
			t.Fatal(err)
		}
		testnet.GetStatus(t, "http://"+nodes[0].MetricsAddr().String()+"/metrics")
		http.DefaultClient.CloseIdleConnections()
	})
	check()
}
