package sidecar_test

import (
	"bufio"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/internal/leaktest"
	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/sidecartest"
	"github.com/wgsidecar/sidecar/wgconf"
)

// TestWatchdogReopensBrokenSocket closes node a's WireGuard UDP socket
// under its running device while a connection to b is open. With the
// watchdog (500 ms), a sees its sends fail, reopens the socket on the same
// port, and the open connection and new ones work again; the log says so
// and the metrics count it. Without the watchdog, the connection stays
// dead, so the recovery is the watchdog's doing.
func TestWatchdogReopensBrokenSocket(t *testing.T) {
	check := leaktest.Check(t)
	t.Run("nodes", func(t *testing.T) { sidecartest.ForEachDevice(t, watchdogReopensBrokenSocket) })
	check()
}

func watchdogReopensBrokenSocket(t *testing.T, own bool) {
	t.Run("watchdog", func(t *testing.T) {
		recovered, logs, metrics := breakSocket(t, own, 500*time.Millisecond, 30*time.Second)
		if !recovered {
			t.Fatalf("no recovery; log:\n%s", logs)
		}
		if !strings.Contains(logs, "watchdog: sends were failing; reopened the UDP socket") ||
			!strings.Contains(logs, "socket_reopened=true") {
			t.Errorf("the log does not say what the watchdog did:\n%s", logs)
		}
		for _, want := range []string{`(?m)^wgsidecar_watchdog_socket_reopens_total [1-9]\d*$`, `(?m)^wgsidecar_watchdog_recoveries_total [1-9]\d*$`} {
			if !regexp.MustCompile(want).MatchString(metrics) {
				t.Errorf("/metrics lacks %s:\n%s", want, metrics)
			}
		}
	})
	t.Run("off", func(t *testing.T) {
		if recovered, logs, _ := breakSocket(t, own, -1, 4*time.Second); recovered {
			t.Fatalf("recovered without the watchdog; log:\n%s", logs)
		}
	})
}

// breakSocket starts a pair, opens an echo connection from a to b, breaks
// a's socket and reports whether the connection echoes again within wait,
// with a's log and a scrape of its metrics.
func breakSocket(t *testing.T, own bool, watchdog, wait time.Duration) (recovered bool, logs, metrics string) {
	var buf testnet.Buffer
	nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{
		OwnWireGuard: own,
		Configure: func(i int, cfg *wgconf.Config) {
			if i == 0 {
				cfg.Metrics = &wgconf.Metrics{BindAddress: "127.0.0.1:0"}
			}
		},
		NodeOptions: func(i int, o *sidecar.Options) {
			if i == 0 {
				o.Watchdog = watchdog
				o.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
			}
		},
	})
	a, b := nodes[0], nodes[1]
	ln, err := b.Listen("tcp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	testnet.Serve(t, ln, testnet.Echo)
	c, err := a.Dial("tcp", "10.99.0.2:7")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	echo := func(msg string, d time.Duration) error {
		c.SetDeadline(time.Now().Add(d))
		if _, err := fmt.Fprintln(c, msg); err != nil {
			return err
		}
		got, err := r.ReadString('\n')
		if err == nil && got != msg+"\n" {
			err = fmt.Errorf("echo %q", got)
		}
		return err
	}
	if err := echo("before", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	port := a.ListenPort()
	if err := sidecar.BreakSocketForTest(a); err != nil {
		t.Fatal(err)
	}
	broke := time.Now()
	if err := echo("after", wait); err != nil {
		return false, buf.String(), ""
	}
	t.Logf("the open connection echoed again %v after the socket was closed", time.Since(broke).Round(time.Millisecond))
	if got := a.ListenPort(); got != port {
		t.Errorf("socket reopened on port %d; want the same port %d", got, port)
	}
	c2, err := a.Dial("tcp", "10.99.0.2:7")
	if err != nil {
		t.Fatalf("new connection after recovery: %v", err)
	}
	c2.Close()
	_, metrics = testnet.GetStatus(t, "http://"+a.MetricsAddr().String()+"/metrics")
	return true, buf.String(), metrics
}
