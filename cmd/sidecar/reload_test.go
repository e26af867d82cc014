package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/control"
	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/sidecartest"
	"github.com/wgsidecar/sidecar/wgconf"
)

// TestUpReloadOnSIGHUP runs `sidecar up` as a real process with a forward
// to an in-process peer. A SIGHUP with a broken file is refused: the log
// says why (file, line and key, no secret), the process keeps running, a
// connection open through the forward carries on and new ones are
// accepted; the control socket's reload refuses it with the same reason.
// A SIGHUP with a fixed file that adds a forward starts it.
func TestUpReloadOnSIGHUP(t *testing.T) {
	peer := sidecartest.NewNodes(t, 1, sidecartest.Options{})[0] // 10.99.0.1
	ln, err := peer.Listen("tcp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // echo, line by line
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	k, _ := wgconf.GeneratePrivateKey()
	if err := peer.SetPeers([]wgconf.Peer{{PublicKey: k.Public(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.0.7/32")}}}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "c.sock")
	port1, port2 := freeTCPPort(t), freeTCPPort(t)
	good := fmt.Sprintf(`[Interface]
PrivateKey = %s
Address = 10.99.0.7/32

[Peer]
PublicKey = %s
AllowedIPs = 10.99.0.1/32
Endpoint = 127.0.0.1:%d

[TCPClientTunnel]
BindAddress = 127.0.0.1:%d
Target = 10.99.0.1:7

[Control]
Socket = %s
`, k.Base64(), peer.PublicKey(), peer.ListenPort(), port1, sock)
	file := filepath.Join(dir, "wg0.conf")
	if err := os.WriteFile(file, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "up", "-c", file)
	cmd.Env = append(os.Environ(), "WGSIDECAR_TEST_AS_MAIN=1")
	var stderr testnet.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitLog := func(want string, from int) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !strings.Contains(stderr.String()[from:], want); {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the log; stderr:\n%s", want, stderr.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitLog(`msg="sidecar up"`, 0)

	open := dialEcho(t, fmt.Sprintf("127.0.0.1:%d", port1))
	defer open.Close()
	open.roundTrip(t, "before")

	// A broken file: a pre-shared key that is not one.
	const junk = "c2VjcmV0LWJ1dC1ub3QtYS1rZXktb2YtMzItYnl0ZX"
	broken := strings.Replace(good, "AllowedIPs = 10.99.0.1/32", "PresharedKey = "+junk+"\nAllowedIPs = 10.99.0.1/32", 1)
	if err := os.WriteFile(file, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	mark := len(stderr.String())
	cmd.Process.Signal(syscall.SIGHUP)
	waitLog(`msg="reload refused; keeping the running configuration"`, mark)
	line := logLine(stderr.String()[mark:], "reload refused")
	if want := file + ":7: PresharedKey:"; !strings.Contains(line, want) {
		t.Errorf("refusal %q does not say %q", line, want)
	}
	if _, err := control.NewClient(sock).Reload(context.Background()); err == nil || !strings.Contains(err.Error(), file+":7: PresharedKey:") {
		t.Errorf("control reload of the broken file: %v; want the same reason", err)
	}
	// Untouched: the open connection carries on, new ones are accepted.
	open.roundTrip(t, "after a refused reload")
	c2 := dialEcho(t, fmt.Sprintf("127.0.0.1:%d", port1))
	c2.roundTrip(t, "new connection")
	c2.Close()
	if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the sidecar is gone after a refused reload: %v", err)
	}

	// A good file that adds a forward: applied, and the first one is
	// untouched.
	fixed := good + fmt.Sprintf("\n[TCPClientTunnel]\nBindAddress = 127.0.0.1:%d\nTarget = 10.99.0.1:7\n", port2)
	if err := os.WriteFile(file, []byte(fixed), 0o600); err != nil {
		t.Fatal(err)
	}
	mark = len(stderr.String())
	cmd.Process.Signal(syscall.SIGHUP)
	waitLog(`msg="configuration reloaded"`, mark)
	if line := logLine(stderr.String()[mark:], "configuration reloaded"); !strings.Contains(line, "forwards_started=1 forwards_stopped=0") {
		t.Errorf("reload said %q", line)
	}
	c3 := dialEcho(t, fmt.Sprintf("127.0.0.1:%d", port2))
	c3.roundTrip(t, "added forward")
	c3.Close()
	open.roundTrip(t, "after a good reload")

	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGTERM: %v; stderr:\n%s", err, stderr.String())
	}
	for _, secret := range []string{k.Base64(), k.Hex(), junk} {
		if strings.Contains(stderr.String(), secret) {
			t.Errorf("a secret appears in the log:\n%s", stderr.String())
		}
	}
}

// freeTCPPort returns a loopback TCP port that was free a moment ago.
func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// logLine returns the first line of logs that contains s.
func logLine(logs, s string) string {
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

type echoConn struct {
	net.Conn
	r *bufio.Reader
}

func dialEcho(t *testing.T, addr string) *echoConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatalf("connect %s: %v", addr, err)
	}
	return &echoConn{Conn: c, r: bufio.NewReader(c)}
}

// roundTrip sends a line and expects it back.
func (c *echoConn) roundTrip(t *testing.T, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := fmt.Fprintln(c, msg); err != nil {
		t.Fatalf("%s: write: %v", msg, err)
	}
	got, err := c.r.ReadString('\n')
	if err != nil || got != msg+"\n" {
		t.Fatalf("%s: echo %q, %v", msg, got, err)
	}
}
