package forward_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	xproxy "golang.org/x/net/proxy"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/sidecartest"
	"github.com/wgsidecar/sidecar/wgconf"
)

// TestConfigConnectionLimits starts the file's forwards and proxies with
// Options.MaxConns 2: a local-to-tunnel forward, a SOCKS5 proxy and a
// tunnel-to-local forward each relay two connections at once, refuse a
// third while both are open, say so in the log, and take a new one once
// one has ended.
func TestConfigConnectionLimits(t *testing.T) {
	hostEcho := testnet.HostServer(t, testnet.Echo)
	var logs testnet.Buffer
	dir := t.TempDir()
	nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{
		Configure: func(i int, cfg *wgconf.Config) {
			if i == 0 {
				cfg.TCPClientTunnels = []wgconf.TCPClientTunnel{{BindAddress: "127.0.0.1:0", Target: "10.99.0.2:7"}}
				cfg.Socks5 = []wgconf.Socks5{{BindAddress: "127.0.0.1:0"}}
				cfg.Control = &wgconf.Control{Socket: filepath.Join(dir, "a.sock")}
			} else {
				cfg.TCPServerTunnels = []wgconf.TCPServerTunnel{{ListenPort: 8090, Target: hostEcho}}
			}
		},
		NodeOptions: func(i int, o *sidecar.Options) {
			o.MaxConns = 2
			o.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})).With("node", i)
		},
	})
	a, b := nodes[0], nodes[1]
	ln, err := b.Listen("tcp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	testnet.Serve(t, ln, testnet.Echo)
	listen := testnet.Listeners(t, a.ControlSocket())
	fwd, socks := listen["tcp local-to-tunnel"], listen["socks5"]
	socksDialer, err := xproxy.SOCKS5("tcp", socks, nil, &net.Dialer{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		dial func() (net.Conn, error)
		log  string
	}{
		{"[TCPClientTunnel]", func() (net.Conn, error) { return net.DialTimeout("tcp", fwd, 5*time.Second) },
			`msg="forward: connection limit reached; closing new connections" node=0 listen=` + fwd + " limit=2"},
		{"[Socks5]", func() (net.Conn, error) { return socksDialer.Dial("tcp", "10.99.0.2:7") },
			`msg="connection limit reached; refusing new connections" node=0`},
		{"[TCPServerTunnel]", func() (net.Conn, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return a.DialContext(ctx, "tcp", "10.99.0.2:8090")
		}, `msg="forward: connection limit reached; refusing new connections from the tunnel" node=1 limit=2 to=10.99.0.2:8090`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var open []net.Conn
			defer func() {
				for _, c := range open {
					c.Close()
				}
			}()
			for i := range 2 {
				c, err := tc.dial()
				if err != nil {
					t.Fatalf("connection %d: %v", i, err)
				}
				open = append(open, c)
				if err := echoLine(c, fmt.Sprint(i)); err != nil {
					t.Fatalf("connection %d: %v", i, err)
				}
			}
			for range 4 {
				if c, err := tc.dial(); err == nil {
					err = echoLine(c, "third")
					c.Close()
					if err == nil {
						t.Fatal("a third connection was relayed with MaxConns 2")
					}
				}
			}
			// One burst of refusals, one line.
			if n := strings.Count(logs.String(), tc.log); n != 1 {
				t.Errorf("the log says %q %d times for one burst; want once:\n%s", tc.log, n, logs.String())
			}
			open[0].Close()
			open = open[1:]
			deadline := time.Now().Add(10 * time.Second)
			for {
				c, err := tc.dial()
				if err == nil {
					err = echoLine(c, "again")
					c.Close()
				}
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no connection relayed after one ended: %v", err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// echoLine sends a line on c and expects it back within 5 s.
func echoLine(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := fmt.Fprintln(c, msg); err != nil {
		return err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if got != msg+"\n" {
		return fmt.Errorf("echo %q; want %q", got, msg)
	}
	return nil
}
