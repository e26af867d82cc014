package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/control"
	"github.com/wgsidecar/sidecar/sidecartest"
	"github.com/wgsidecar/sidecar/wgconf"
)

// statusNodes starts two peered nodes with control sockets, node 0 with a
// flow log that only the test cuts, sends HTTP from node 0 to node 1 and
// cuts node 0's window. It returns the nodes, node 0's configuration and
// its socket.
func statusNodes(t *testing.T) ([]*sidecar.Node, *wgconf.Config, string) {
	t.Helper()
	dir := t.TempDir()
	var cfg0 *wgconf.Config
	nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{Configure: func(i int, cfg *wgconf.Config) {
		cfg.Control = &wgconf.Control{Socket: filepath.Join(dir, fmt.Sprintf("n%d.sock", i))}
		if i == 0 {
			cfg.FlowLog = &wgconf.FlowLog{Window: time.Hour, Output: filepath.Join(dir, "flows.ndjson")}
			cfg0 = cfg
		}
	}})
	ln, err := nodes[1].Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Write([]byte("hello"))
			c.Close()
		}
	}()
	c, err := nodes[0].Dial("tcp", "10.99.0.2:80")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := c.Read(buf); err != nil || string(buf) != "hello" {
		t.Fatalf("read %q, %v", buf, err)
	}
	c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := nodes[0].CutFlows(ctx); err != nil {
		t.Fatal(err)
	}
	return nodes, cfg0, cfg0.Control.Socket
}

// valueColumns returns, for each line of a "key: value" block (lines
// starting with two spaces), the column where the value starts.
func valueColumns(block []string) []int {
	var cols []int
	for _, l := range block {
		if !strings.HasPrefix(l, "  ") {
			continue
		}
		i := strings.Index(l, ":")
		j := i + 1
		for j < len(l) && l[j] == ' ' {
			j++
		}
		cols = append(cols, j)
	}
	return cols
}

func allEqual(xs []int) bool {
	for _, x := range xs {
		if x != xs[0] {
			return false
		}
	}
	return len(xs) > 0
}

func TestStatusCommand(t *testing.T) {
	nodes, cfg0, sock := statusNodes(t)
	a, b := nodes[0], nodes[1]

	code, out, stderr := runCmd(t, "", "status", "--socket", sock)
	if code != 0 {
		t.Fatalf("status: exit %d, %s", code, stderr)
	}
	for _, want := range []string{
		"node: " + sidecar.NodeID(a.PublicKey()),
		"public key:", a.PublicKey().String(),
		"addresses:", "10.99.0.1/32, fd00:99::1/128",
		fmt.Sprintf("listening port:  %d", a.ListenPort()),
		"uptime:",
		"flow log:", "on, 1h0m0s windows, 1 written",
		"peer: " + b.PublicKey().String(),
		fmt.Sprintf("endpoint:          127.0.0.1:%d", b.ListenPort()),
		"allowed ips:       10.99.0.2/32, fd00:99::2/128",
		"latest handshake:",
		"transfer:", " received, ", " sent",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(out, " ago\n") && !strings.Contains(out, "latest handshake:  now\n") {
		t.Errorf("no handshake age in:\n%s", out)
	}
	if strings.Contains(out, cfg0.Interface.PrivateKey.Base64()) {
		t.Fatal("status shows the private key")
	}
	// Each block's values line up.
	for _, block := range strings.Split(strings.TrimSpace(out), "\n\n") {
		if cols := valueColumns(strings.Split(block, "\n")); !allEqual(cols) {
			t.Errorf("values not aligned (columns %v) in:\n%s", cols, block)
		}
	}

	code, out, stderr = runCmd(t, "", "status", "-j", "--socket", sock)
	if code != 0 {
		t.Fatalf("status -j: exit %d, %s", code, stderr)
	}
	var st control.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status -j is not JSON: %v\n%s", err, out)
	}
	if st.PublicKey != a.PublicKey().String() || len(st.Peers) != 1 || st.Peers[0].RxBytes == 0 {
		t.Errorf("status -j: %+v", st)
	}
	if strings.Contains(out, cfg0.Interface.PrivateKey.Base64()) {
		t.Fatal("status -j shows the private key")
	}
	if !strings.Contains(out, "\n  \"publicKey\"") {
		t.Errorf("status -j is not indented:\n%s", out)
	}

	// -c FILE finds the socket through the file's [Control] Socket.
	file := filepath.Join(t.TempDir(), "wg0.conf")
	if err := os.WriteFile(file, cfg0.Marshal(), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr = runCmd(t, "", "status", "-c", file)
	if code != 0 || !strings.Contains(out, a.PublicKey().String()) {
		t.Errorf("status -c FILE: exit %d, %s%s", code, out, stderr)
	}
}

func TestStatusDefaultSocket(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	// Nothing runs yet.
	code, _, stderr := runCmd(t, "", "status")
	if code != 1 || !strings.Contains(stderr, "no sidecar found") || !strings.Contains(stderr, control.DefaultDir()) {
		t.Errorf("status with nothing running: exit %d, %q", code, stderr)
	}
	var cfg0 *wgconf.Config
	nodes := sidecartest.NewNodes(t, 1, sidecartest.Options{Configure: func(i int, cfg *wgconf.Config) {
		cfg.Control = &wgconf.Control{} // the default path
		cfg0 = cfg
	}})
	pub := nodes[0].PublicKey().String()
	// The only socket in the default directory is found without flags.
	code, out, stderr := runCmd(t, "", "status")
	if code != 0 || !strings.Contains(out, pub) {
		t.Errorf("status without flags: exit %d, %s%s", code, out, stderr)
	}
	// -c FILE without a [Control] Socket: the default path of the file's key.
	cfg := *cfg0
	cfg.Control = nil
	file := filepath.Join(t.TempDir(), "wg0.conf")
	if err := os.WriteFile(file, cfg.Marshal(), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr = runCmd(t, "", "status", "-c", file)
	if code != 0 || !strings.Contains(out, pub) {
		t.Errorf("status -c FILE (default socket): exit %d, %s%s", code, out, stderr)
	}
	// A second sidecar makes the choice ambiguous.
	sidecartest.NewNodes(t, 1, sidecartest.Options{Configure: func(i int, cfg *wgconf.Config) { cfg.Control = &wgconf.Control{} }})
	code, _, stderr = runCmd(t, "", "status")
	if code != 1 || !strings.Contains(stderr, "2 control sockets") {
		t.Errorf("status with two sidecars: exit %d, %q", code, stderr)
	}
}

func TestStatusErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.sock")
	code, _, stderr := runCmd(t, "", "status", "--socket", missing)
	if code != 1 || !strings.Contains(stderr, "no sidecar is running") || !strings.Contains(stderr, missing) {
		t.Errorf("status on a missing socket: exit %d, %q", code, stderr)
	}
	stale := filepath.Join(t.TempDir(), "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	code, _, stderr = runCmd(t, "", "flows", "--socket", stale)
	if code != 1 || !strings.Contains(stderr, "no sidecar is running") || !strings.Contains(stderr, "nothing listens") {
		t.Errorf("flows on a stale socket: exit %d, %q", code, stderr)
	}
	if code, _, stderr := runCmd(t, "", "status", "--socket", missing, "-c", "x.conf"); code != 2 || !strings.Contains(stderr, "give one") || !strings.Contains(stderr, "Usage:") {
		t.Errorf("--socket with -c: exit %d, %q", code, stderr)
	}
	for _, cmd := range []string{"status", "flows"} {
		code, _, stderr := runCmd(t, "", cmd, "--help")
		if code != 0 || !strings.Contains(stderr, "Usage: sidecar "+cmd+" [--socket PATH | -c FILE] [-j]") {
			t.Errorf("%s --help: exit %d, %q", cmd, code, stderr)
		}
	}
}

func TestFlowsCommand(t *testing.T) {
	nodes, _, sock := statusNodes(t)
	a := nodes[0]

	code, out, stderr := runCmd(t, "", "flows", "--socket", sock)
	if code != 0 {
		t.Fatalf("flows: exit %d, %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !strings.HasPrefix(lines[0], "node "+sidecar.NodeID(a.PublicKey())+", latest window ") {
		t.Errorf("flows first line %q", lines[0])
	}
	var header string
	var rows []string
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "CLASS"):
			header = l
		case strings.HasPrefix(l, "virtual"), strings.HasPrefix(l, "physical"):
			rows = append(rows, l)
		}
	}
	if header == "" {
		t.Fatalf("no table header in:\n%s", out)
	}
	var tcp, physical bool
	dst := strings.Index(header, "DST")
	for _, r := range rows {
		f := strings.Fields(r)
		if len(f) != 8 {
			t.Errorf("row %q has %d fields; want 8", r, len(f))
			continue
		}
		if f[0] == "virtual" && f[1] == "tcp" && f[3] == "10.99.0.2:80" {
			tcp = true
		}
		if f[0] == "physical" && f[1] == "-" {
			physical = true
		}
		if strings.Index(r, f[3]) != dst {
			t.Errorf("DST column not aligned with the header:\n%s\n%s", header, r)
		}
	}
	if !tcp || !physical {
		t.Errorf("want a virtual TCP flow to 10.99.0.2:80 and a physical flow:\n%s", out)
	}

	code, out, stderr = runCmd(t, "", "flows", "-j", "--socket", sock)
	if code != 0 {
		t.Fatalf("flows -j: exit %d, %s", code, stderr)
	}
	var fl control.Flows
	if err := json.Unmarshal([]byte(out), &fl); err != nil {
		t.Fatalf("flows -j is not JSON: %v\n%s", err, out)
	}
	if !fl.FlowLog.Enabled || len(fl.Messages) != 1 || len(fl.Messages[0].VirtualTraffic) == 0 {
		t.Errorf("flows -j: %+v", fl)
	}

	// Node 1 has no flow log: a clear error, but -j still shows the answer.
	sock1 := nodes[1].ControlSocket()
	code, _, stderr = runCmd(t, "", "flows", "--socket", sock1)
	if code != 1 || !strings.Contains(stderr, "flow logging is off") {
		t.Errorf("flows without a flow log: exit %d, %q", code, stderr)
	}
	if code, out, _ := runCmd(t, "", "flows", "-j", "--socket", sock1); code != 0 || !strings.Contains(out, `"enabled": false`) {
		t.Errorf("flows -j without a flow log: exit %d, %q", code, out)
	}
}

func TestHumanFormats(t *testing.T) {
	for n, want := range map[uint64]string{
		0: "0 B", 1023: "1023 B", 1024: "1.00 KiB", 1536: "1.50 KiB",
		5 << 20: "5.00 MiB", 3 << 30: "3.00 GiB", 2 << 40: "2.00 TiB",
	} {
		if got := byteSize(n); got != want {
			t.Errorf("byteSize(%d) = %q, want %q", n, got, want)
		}
	}
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for d, want := range map[time.Duration]string{
		0:                                    "now",
		time.Second:                          "1 second ago",
		65 * time.Second:                     "1 minute, 5 seconds ago",
		2*time.Hour + 3*time.Second:          "2 hours, 3 seconds ago",
		49*time.Hour + 1500*time.Millisecond: "2 days, 1 hour, 1 second ago",
	} {
		if got := handshakeAge(now, now.Add(-d)); got != want {
			t.Errorf("handshakeAge(%v) = %q, want %q", d, got, want)
		}
	}
	if got := handshakeAge(now, time.Time{}); got != "(none)" {
		t.Errorf("no handshake: %q", got)
	}
}
