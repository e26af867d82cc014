package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/netlog"
	"github.com/wgsidecar/sidecar/wgconf"
)

// cmdDemo runs two nodes in this process, joined over WireGuard on
// loopback, sends HTTP, ping and a bulk transfer between them, and prints
// what happened. It needs nothing else on the machine.
func cmdDemo(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", "demo [--bytes N] [--log-level LEVEL]", stderr)
	size := fs.Int64("bytes", 32<<20, "size of the bulk transfer from a to b")
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

	var sinks [2]netlog.MemorySink
	a, b, err := demoPair(log, &sinks)
	if err != nil {
		return err
	}
	defer a.Close()
	defer b.Close()
	fmt.Fprintln(stdout, "wgsidecar demo: two nodes in one process, joined by WireGuard over UDP on 127.0.0.1")
	for _, n := range []struct {
		name string
		node *sidecar.Node
	}{{"a", a}, {"b", b}} {
		fmt.Fprintf(stdout, "  node %s: tunnel %v, WireGuard on udp/127.0.0.1:%d, public key %s\n",
			n.name, n.node.Addresses(), n.node.ListenPort(), n.node.PublicKey())
	}

	// b serves HTTP on its tunnel address.
	ln, err := b.Listen("tcp", ":80")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from b, you are %s", r.RemoteAddr)
	})}
	go srv.Serve(ln)
	defer srv.Close()

	fmt.Fprintln(stdout)
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

	// A bulk transfer from a to b over TCP.
	bulk, err := b.Listen("tcp", ":9000")
	if err != nil {
		return err
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
		return err
	}
	if _, err := io.CopyN(c, zeros{}, *size); err != nil {
		return err
	}
	c.Close()
	n := <-got
	secs := time.Since(start).Seconds()
	fmt.Fprintf(stdout, "a: sent %d MiB to b over TCP in %.2f s (%.2f Gbit/s); b received %d bytes\n",
		*size>>20, secs, float64(n)*8/secs/1e9, n)

	fmt.Fprintln(stdout, "\nWireGuard's counters (bytes on the UDP socket, including framing):")
	for _, x := range []struct {
		name string
		node *sidecar.Node
	}{{"a", a}, {"b", b}} {
		peers, err := x.node.Peers()
		if err != nil {
			return err
		}
		for _, p := range peers {
			fmt.Fprintf(stdout, "  %s -> peer %s at %v: tx %d, rx %d, last handshake %v ago\n", x.name,
				p.PublicKey.String()[:8]+"…", p.Endpoint, p.TxBytes, p.RxBytes, time.Since(p.LastHandshake).Round(time.Millisecond))
		}
	}
	if n != *size {
		return fmt.Errorf("b received %d bytes; want %d", n, *size)
	}

	// End the flow-log window on both nodes and print what they logged.
	fmt.Fprintln(stdout, "\nFlow log (one JSON message per node per window; virtual = tunnel packets, physical = UDP datagrams):")
	for i, node := range []*sidecar.Node{a, b} {
		if err := node.CutFlows(ctx); err != nil {
			return err
		}
		for _, m := range sinks[i].Messages() {
			line, err := json.Marshal(m)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s\n", line)
		}
	}
	return nil
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

// demoPair starts two nodes with generated keys, flow logs into sinks,
// and peers them.
func demoPair(log *slog.Logger, sinks *[2]netlog.MemorySink) (*sidecar.Node, *sidecar.Node, error) {
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
		n, err := sidecar.Start(&wgconf.Config{Interface: wgconf.Interface{
			PrivateKey: k, MTU: 1420, Addresses: addrs[i],
		}}, sidecar.Options{Logger: log.With("node", string(rune('a'+i))), FlowSink: &sinks[i]})
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
