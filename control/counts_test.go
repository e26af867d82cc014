package control_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	xproxy "golang.org/x/net/proxy"

	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/wgconf"
)

// TestControlStatusCountsEveryListener: the proxies and the tunnel-to-local
// forwards count their connections in the status and in
// wgsidecar_forward_connections_total, as the local-to-tunnel forwards do
// (#15: they showed "-" and had no samples).
func TestControlStatusCountsEveryListener(t *testing.T) {
	hostEcho := testnet.HostServer(t, testnet.Echo)
	nodes, socks := controlNodes(t, 2, func(i int, cfg *wgconf.Config) {
		if i == 0 {
			cfg.Socks5 = []wgconf.Socks5{{BindAddress: "127.0.0.1:0"}}
			cfg.HTTP = []wgconf.HTTPProxy{{BindAddress: "127.0.0.1:0"}}
			cfg.Metrics = &wgconf.Metrics{BindAddress: "127.0.0.1:0"}
		} else {
			cfg.TCPServerTunnels = []wgconf.TCPServerTunnel{{ListenPort: 8090, Target: hostEcho}}
		}
	})
	listen := testnet.Listeners(t, socks[0])
	echo := func(c net.Conn, r *bufio.Reader) {
		t.Helper()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintln(c, "hi")
		if line, err := r.ReadString('\n'); line != "hi\n" {
			t.Fatalf("echo: %q, %v", line, err)
		}
	}
	// One connection through the SOCKS5 proxy, one through the HTTP
	// proxy's CONNECT, both to node 1's tunnel-to-local forward.
	sd, err := xproxy.SOCKS5("tcp", listen["socks5"], nil, &net.Dialer{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c, err := sd.Dial("tcp", "10.99.0.2:8090")
	if err != nil {
		t.Fatal(err)
	}
	echo(c, bufio.NewReader(c))
	c.Close()
	c, err = net.Dial("tcp", listen["http"])
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	fmt.Fprintf(c, "CONNECT 10.99.0.2:8090 HTTP/1.1\r\nHost: 10.99.0.2:8090\r\n\r\n")
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v, %v", resp, err)
	}
	echo(c, r)
	c.Close()

	counts := func(sock string) map[string]string {
		m := map[string]string{}
		for _, l := range status(t, sock).Listeners {
			if l.Conns == nil {
				m[l.Kind] = "-"
				continue
			}
			m[l.Kind] = fmt.Sprintf("%d/%d", l.Conns.Open, l.Conns.Accepted)
		}
		return m
	}
	// Open goes back to 0 once the relays have seen the close.
	want0 := map[string]string{"socks5": "0/1", "http": "0/1"}
	want1 := map[string]string{"tcp tunnel-to-local": "0/2"}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got0, got1 := counts(socks[0]), counts(socks[1])
		if fmt.Sprint(got0) == fmt.Sprint(want0) && fmt.Sprint(got1) == fmt.Sprint(want1) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("open/accepted: node 0 %v, node 1 %v; want %v, %v", got0, got1, want0, want1)
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, text := testnet.GetStatus(t, "http://"+nodes[0].MetricsAddr().String()+"/metrics")
	for _, kind := range []string{"socks5", "http"} {
		want := fmt.Sprintf("wgsidecar_forward_connections_total{kind=%q,listen=%q} 1\n", kind, listen[kind])
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
