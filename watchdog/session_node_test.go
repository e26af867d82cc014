package watchdog_test

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/sidecartest"
	"github.com/wgsidecar/sidecar/wgconf"
)

// TestPeerUpLogged: a node logs "peer up" with the peer's endpoint once
// the first handshake is done (#15: nothing said when the tunnel was up).
func TestPeerUpLogged(t *testing.T) {
	var logs testnet.Buffer
	nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	a, b := nodes[0], nodes[1]
	testnet.ServeHTTP(t, b, "b")
	testnet.Get(t, a.HTTPClient(), "http://10.99.0.2/")
	want := fmt.Sprintf("endpoint=127.0.0.1:%d", b.ListenPort())
	deadline := time.Now().Add(10 * time.Second)
	for !hasLine(logs.String(), `msg="peer up"`, "node=0", want) {
		if time.Now().After(deadline) {
			t.Fatalf("no peer up line with %q:\n%s", want, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func hasLine(text string, parts ...string) bool {
	for line := range strings.Lines(text) {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			return true
		}
	}
	return false
}

// TestNoSessionFailsProxyClients: a peer that never answers (its endpoint
// a loopback socket that reads and says nothing) makes a SOCKS5 client
// get reply 0x04 (host unreachable) and an HTTP proxy client a 502 that
// says why, after a few seconds rather than the proxies' dial timeout.
func TestNoSessionFailsProxyClients(t *testing.T) {
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	sock := filepath.Join(t.TempDir(), "a.sock")
	nodes := sidecartest.NewNodes(t, 1, sidecartest.Options{Configure: func(i int, cfg *wgconf.Config) {
		cfg.Socks5 = []wgconf.Socks5{{BindAddress: "127.0.0.1:0"}}
		cfg.HTTP = []wgconf.HTTPProxy{{BindAddress: "127.0.0.1:0"}}
		cfg.Control = &wgconf.Control{Socket: sock}
	}})
	a := nodes[0]
	k, _ := wgconf.GeneratePrivateKey()
	if err := a.SetPeers([]wgconf.Peer{{PublicKey: k.Public(), Endpoint: silent.LocalAddr().String(),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.0.50/32")}}}); err != nil {
		t.Fatal(err)
	}
	listen := testnet.Listeners(t, sock)
	socks, web := listen["socks5"], listen["http"]

	start := time.Now()
	c, err := net.Dial("tcp", socks)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	c.Write([]byte{5, 1, 0})
	c.Write([]byte{5, 1, 0, 1, 10, 99, 0, 50, 0, 80})
	var reply [12]byte
	if _, err := io.ReadFull(c, reply[:]); err != nil {
		t.Fatalf("SOCKS5: no reply: %v", err)
	}
	if reply[3] != 0x04 {
		t.Errorf("SOCKS5 reply %#x; want 0x04 (host unreachable)", reply[3])
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("SOCKS5 client told after %v; want a few seconds", took)
	}

	h, err := net.Dial("tcp", web)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	h.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(h, "CONNECT 10.99.0.50:80 HTTP/1.1\r\nHost: 10.99.0.50:80\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(h), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 502 || !strings.Contains(string(body), "no WireGuard session") {
		t.Errorf("HTTP proxy: %s %q; want 502 saying there is no WireGuard session", resp.Status, body)
	}
}
