package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/collector"
	"github.com/wgsidecar/sidecar/logtail"
	"github.com/wgsidecar/sidecar/wgconf"
)

// cmdDemo runs two nodes in this process, joined over WireGuard on
// loopback, sends HTTP, ping and a bulk transfer between them, and prints
// what happened. It needs nothing else on the machine.
func cmdDemo(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", "demo [--bytes N] [--serve] [--listen ADDR] [--log-level LEVEL]", stderr)
	size := fs.Int64("bytes", 32<<20, "size of the bulk transfer from a to b")
	serve := fs.Bool("serve", false, "keep the collector and the nodes running afterwards, traffic continuing, and print the console's address (Ctrl-C stops)")
	listen := fs.String("listen", "127.0.0.1:0", "`address` the demo's collector (and its console) listens on")
	level := fs.String("log-level", "warn", "log `level` for the nodes: debug, info, warn, error")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *level, false)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// A collector first: the nodes ship their flow logs to it.
	dir, err := os.MkdirTemp("", "wgsidecar-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	token := fmt.Sprintf("demo-%d", time.Now().UnixNano())
	coll, collectorURL, err := startDemoCollector(dir, token, *listen)
	if err != nil {
		return err
	}
	defer coll.Close()

	window := time.Hour // the demo cuts its one window itself
	if *serve {
		window = 5 * time.Second
	}
	a, b, err := demoPair(log, collectorURL, dir, window)
	if err != nil {
		return err
	}
	defer a.Close()
	defer b.Close()
	started := time.Now()
	nodes := []demoNode{{"a", a}, {"b", b}}
	printDemoSetup(stdout, collectorURL, dir, nodes)

	srv, err := serveDemoHTTP(b)
	if err != nil {
		return err
	}
	defer srv.Close()
	fmt.Fprintln(stdout)
	if err := demoRequests(ctx, stdout, a); err != nil {
		return err
	}
	n, err := demoBulk(ctx, stdout, a, b, *size)
	if err != nil {
		return err
	}
	if err := printDemoPeers(stdout, nodes); err != nil {
		return err
	}
	if n != *size {
		return fmt.Errorf("b received %d bytes; want %d", n, *size)
	}
	if err := demoFlowLog(ctx, stdout, collectorURL, token, started, nodes); err != nil || !*serve {
		return err
	}
	return demoServe(stdout, collectorURL, token, a, b)
}

// demoServe keeps the demo running until SIGINT or SIGTERM: a GET and a
// ping every second, 1 MiB from a to b every ten, while the nodes' flow
// logs (5 s windows) reach the collector, whose console it points to.
func demoServe(stdout io.Writer, collectorURL, token string, a, b *sidecar.Node) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(stdout, "\nConsole: %s/?collection=demo\n", collectorURL)
	fmt.Fprintf(stdout, "Sign in with collection demo and token %s\n", token)
	fmt.Fprintln(stdout, "Traffic continues (a GET and a ping every second, 1 MiB every 10 s); Ctrl-C stops.")
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			fmt.Fprintln(stdout, "stopping")
			return nil
		case <-t.C:
		}
		step, cancel := context.WithTimeout(ctx, 5*time.Second)
		demoGet(step, a, "http://10.99.0.2/")
		b.Ping(step, "fd00:99::1")
		if i%10 == 0 {
			demoBulk(step, io.Discard, a, b, 1<<20)
		}
		cancel()
	}
}

// demoNode is one of the demo's two nodes and the name it prints as.
type demoNode struct {
	name string
	node *sidecar.Node
}

// startDemoCollector opens a collector storing in dir, reading with token,
// and serves it on a loopback port; it returns the server to close and
// the base URL to reach it at.
func startDemoCollector(dir, token, listen string) (*collector.Server, string, error) {
	coll, err := collector.Open(collector.Config{DataDir: filepath.Join(dir, "collector"), Token: token})
	if err != nil {
		return nil, "", err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		coll.Close()
		return nil, "", err
	}
	go coll.Serve(ln)
	return coll, "http://" + ln.Addr().String(), nil
}

// printDemoSetup prints what runs: the collector and the two nodes.
func printDemoSetup(stdout io.Writer, collectorURL, dir string, nodes []demoNode) {
	fmt.Fprintln(stdout, "wgsidecar demo: two nodes and a collector in one process, the nodes joined by WireGuard over UDP on 127.0.0.1")
	fmt.Fprintf(stdout, "  collector: %s (data in %s)\n", collectorURL, dir)
	for _, n := range nodes {
		fmt.Fprintf(stdout, "  node %s: tunnel %v, WireGuard on udp/127.0.0.1:%d, public key %s\n",
			n.name, n.node.Addresses(), n.node.ListenPort(), n.node.PublicKey())
	}
}

// serveDemoHTTP serves HTTP on b's tunnel addresses, port 80: a greeting
// that names the client's address.
func serveDemoHTTP(b *sidecar.Node) (*http.Server, error) {
	ln, err := b.Listen("tcp", ":80")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from b, you are %s", r.RemoteAddr)
	})}
	go srv.Serve(ln)
	return srv, nil
}

// demoRequests has a GET b's greeting and ping b, over IPv4 and IPv6,
// and prints the answers and how long each took.
func demoRequests(ctx context.Context, stdout io.Writer, a *sidecar.Node) error {
	for _, url := range []string{"http://10.99.0.2/", "http://[fd00:99::2]/"} {
		start := time.Now()
		body, err := demoGet(ctx, a, url)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "a: GET %-22s -> %q (%v)\n", url, body, time.Since(start).Round(time.Microsecond))
	}
	for _, dst := range []string{"10.99.0.2", "fd00:99::2"} {
		rtt, err := a.Ping(ctx, dst)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "a: ping %-20s -> reply in %v\n", dst, rtt.Round(time.Microsecond))
	}
	return nil
}

// demoBulk sends size bytes from a to b over TCP, prints the rate, and
// returns how many bytes b received (-1 if it accepted no connection).
func demoBulk(ctx context.Context, stdout io.Writer, a, b *sidecar.Node, size int64) (int64, error) {
	bulk, err := b.Listen("tcp", ":9000")
	if err != nil {
		return 0, err
	}
	defer bulk.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := bulk.Accept()
		if err != nil {
			got <- -1
			return
		}
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		got <- n
	}()
	start := time.Now()
	c, err := a.DialContext(ctx, "tcp", "10.99.0.2:9000")
	if err != nil {
		return 0, err
	}
	if _, err := io.CopyN(c, zeros{}, size); err != nil {
		return 0, err
	}
	c.Close()
	n := <-got
	secs := time.Since(start).Seconds()
	fmt.Fprintf(stdout, "a: sent %d MiB to b over TCP in %.2f s (%.2f Gbit/s); b received %d bytes\n",
		size>>20, secs, float64(n)*8/secs/1e9, n)
	return n, nil
}

// printDemoPeers prints what WireGuard counted for each node's peer.
func printDemoPeers(stdout io.Writer, nodes []demoNode) error {
	fmt.Fprintln(stdout, "\nWireGuard's counters (bytes on the UDP socket, including framing):")
	for _, x := range nodes {
		peers, err := x.node.Peers()
		if err != nil {
			return err
		}
		for _, p := range peers {
			fmt.Fprintf(stdout, "  %s -> peer %s at %v: tx %d, rx %d, last handshake %v ago\n", x.name,
				p.PublicKey.String()[:8]+"…", p.Endpoint, p.TxBytes, p.RxBytes, time.Since(p.LastHandshake).Round(time.Millisecond))
		}
	}
	return nil
}

// demoFlowLog ends the flow-log window on both nodes: each sends its
// message to the collector, which stamps it "logged". It reads them back
// (those since started), waiting up to 20 s for one per node, and prints
// them.
func demoFlowLog(ctx context.Context, stdout io.Writer, collectorURL, token string, started time.Time, nodes []demoNode) error {
	for _, n := range nodes {
		if err := n.node.CutFlows(ctx); err != nil {
			return err
		}
	}
	query := fmt.Sprintf("%s/api/v1/logs?collection=demo&start=%s&end=%s", collectorURL,
		started.Add(-time.Minute).UTC().Format(time.RFC3339Nano), time.Now().Add(time.Minute).UTC().Format(time.RFC3339Nano))
	var logs []json.RawMessage
	for deadline := time.Now().Add(20 * time.Second); ; {
		var err error
		logs, err = queryLogs(ctx, query, token)
		if err != nil {
			return err
		}
		if len(logs) >= len(nodes) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Fprintf(stdout, "\nFlow log, as the collector returns it (GET /api/v1/logs?collection=demo&start=…&end=…):\n")
	fmt.Fprintln(stdout, "one JSON message per node per window; virtual = tunnel packets, physical = UDP datagrams")
	for _, l := range logs {
		fmt.Fprintf(stdout, "%s\n", l)
	}
	if len(logs) < len(nodes) {
		return fmt.Errorf("the collector holds %d flow-log messages; want one per node", len(logs))
	}
	return nil
}

// queryLogs asks the collector for the stored flow logs.
func queryLogs(ctx context.Context, url, token string) ([]json.RawMessage, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("collector query: %s: %s", resp.Status, b)
	}
	var out struct {
		Logs []json.RawMessage `json:"logs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, err
	}
	return out.Logs, nil
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) { clear(b); return len(b), nil }

func demoGet(ctx context.Context, n *sidecar.Node, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return "", err
	}
	resp, err := n.HTTPClient().Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// demoPair starts two nodes with generated keys, each shipping its flow
// log (windows of window) to the collector, and peers them.
func demoPair(log *slog.Logger, collectorURL, dir string, window time.Duration) (*sidecar.Node, *sidecar.Node, error) {
	var nodes [2]*sidecar.Node
	var keys [2]wgconf.PrivateKey
	addrs := [2][]netip.Prefix{
		{netip.MustParsePrefix("10.99.0.1/32"), netip.MustParsePrefix("fd00:99::1/128")},
		{netip.MustParsePrefix("10.99.0.2/32"), netip.MustParsePrefix("fd00:99::2/128")},
	}
	for i := range nodes {
		k, err := wgconf.GeneratePrivateKey()
		if err != nil {
			return nil, nil, err
		}
		keys[i] = k
		stream, err := logtail.NewPrivateID()
		if err != nil {
			return nil, nil, err
		}
		name := string(rune('a' + i))
		n, err := sidecar.Start(&wgconf.Config{
			Interface: wgconf.Interface{PrivateKey: k, MTU: 1420, Addresses: addrs[i]},
			FlowLog:   &wgconf.FlowLog{Window: window, NodeID: "demo-" + name},
			LogStream: &wgconf.LogStream{
				URL: collectorURL, Collection: "demo", PrivateID: stream.Hex(),
				BufferDir: filepath.Join(dir, "buffer-"+name),
			},
		}, sidecar.Options{Logger: log.With("node", name), LogStreamFlush: 20 * time.Millisecond})
		if err != nil {
			if i == 1 {
				nodes[0].Close()
			}
			return nil, nil, err
		}
		nodes[i] = n
	}
	for i, n := range nodes {
		j := 1 - i
		err := n.SetPeers([]wgconf.Peer{{
			PublicKey:  keys[j].Public(),
			AllowedIPs: addrs[j],
			Endpoint:   fmt.Sprintf("127.0.0.1:%d", nodes[j].ListenPort()),
		}})
		if err != nil {
			nodes[0].Close()
			nodes[1].Close()
			return nil, nil, err
		}
	}
	return nodes[0], nodes[1], nil
}
