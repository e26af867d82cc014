package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/internal/testnet"
)

// runMonitor runs `sidecar monitor args...` in the background while ping
// (from node a to node b) produces events, and returns its output.
func runMonitor(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	nodes, _, sock := statusNodes(t)
	a := nodes[0]
	var out, errb testnet.Buffer
	var wg sync.WaitGroup
	wg.Go(func() {
		code = run(append([]string{"monitor", "--socket", sock}, args...), strings.NewReader(""), &out, &errb)
	})
	// Wait until the monitor listens, then make traffic until it is done.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for {
		select {
		case <-done:
			return code, out.String(), errb.String()
		case <-ctx.Done():
			t.Fatalf("monitor did not finish; stdout:\n%s\nstderr:\n%s", out.String(), errb.String())
		default:
		}
		if a.Monitor().Active() {
			pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
			a.Ping(pctx, "10.99.0.2")
			pcancel()
		} else {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func TestMonitorCommandLines(t *testing.T) {
	// 20 events: the nodes' own start-up traffic (a warm-up HTTP
	// exchange) may still be closing when the pings begin.
	code, out, stderr := runMonitor(t, "-n", "20", "--addr", "10.99.0.2")
	if code != 0 {
		t.Fatalf("monitor: exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 20 {
		t.Fatalf("%d lines; want 20:\n%s", len(lines), out)
	}
	for _, want := range []string{"to-peer trace 10.99.0.1 -> 10.99.0.2 icmp echo request", "from-peer trace 10.99.0.2 -> 10.99.0.1 icmp echo reply"} {
		if !strings.Contains(out, want) {
			t.Errorf("monitor output lacks %q:\n%s", want, out)
		}
	}
}

func TestMonitorCommandJSON(t *testing.T) {
	code, out, stderr := runMonitor(t, "-n", "20", "-j", "--type", "trace")
	if code != 0 || !strings.Contains(out, `"kind":"trace"`) || !strings.Contains(out, `"proto":"icmp"`) {
		t.Errorf("-j: exit %d, output:\n%s\nstderr: %s", code, out, stderr)
	}
}

func TestMonitorCommandVerbose(t *testing.T) {
	code, out, stderr := runMonitor(t, "-n", "1", "-v", "--addr", "10.99.0.2")
	if code != 0 || !strings.Contains(out, "ipv4 src=10.99.0.") || !strings.Contains(out, "packet ") {
		t.Errorf("-v: exit %d, output:\n%s\nstderr: %s", code, out, stderr)
	}
}

func TestMonitorCommandHex(t *testing.T) {
	code, out, stderr := runMonitor(t, "-n", "1", "-x", "--addr", "10.99.0.2", "--type", "trace")
	if code != 0 || !strings.Contains(out, "trace 10.99.0.") || !strings.Contains(out, "    00000000  45 ") {
		t.Errorf("-x: exit %d, output:\n%s\nstderr: %s", code, out, stderr)
	}
}

// TestMonitorCommandPcap writes a pcap and reads it back: the classic
// header, raw-IP link type, and the packets' count and addresses.
func TestMonitorCommandPcap(t *testing.T) {
	file := filepath.Join(t.TempDir(), "cap.pcap")
	code, _, stderr := runMonitor(t, "-n", "6", "-w", file, "--addr", "10.99.0.0/24")
	if code != 0 || !strings.Contains(stderr, "6 packets written") {
		t.Fatalf("monitor -w: exit %d: %s", code, stderr)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	if len(b) < 24 || le.Uint32(b) != 0xa1b2c3d4 || le.Uint32(b[20:]) != 101 {
		t.Fatalf("not a raw-IP pcap: % x", b[:min(24, len(b))])
	}
	n := 0
	for off := 24; off+16 <= len(b); {
		incl := int(le.Uint32(b[off+8:]))
		pkt := b[off+16 : off+16+incl]
		if pkt[0]>>4 != 4 || !(bytes.Equal(pkt[12:16], []byte{10, 99, 0, 1}) || bytes.Equal(pkt[12:16], []byte{10, 99, 0, 2})) {
			t.Errorf("packet %d: % x", n, pkt[:min(20, len(pkt))])
		}
		off += 16 + incl
		n++
	}
	if n != 6 {
		t.Errorf("%d packets in the pcap; want 6", n)
	}

	// An independent reader: Wireshark's tshark (installed by .ci/run).
	t.Run("tshark", func(t *testing.T) {
		if _, err := exec.LookPath("tshark"); err != nil {
			t.Skip("tshark is not installed (Debian package tshark); .ci/run installs it")
		}
		out, err := exec.Command("tshark", "-r", file, "-T", "fields", "-e", "ip.src", "-e", "ip.dst", "-e", "_ws.col.Protocol").Output()
		if err != nil {
			t.Fatalf("tshark: %v\n%s", err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) != 6 {
			t.Fatalf("tshark read %d packets; want 6:\n%s", len(lines), out)
		}
		for _, l := range lines {
			f := strings.Fields(l)
			// Mostly the pings; the nodes' warm-up HTTP exchange may
			// still be closing.
			if len(f) != 3 || !strings.HasPrefix(f[0], "10.99.0.") || !strings.HasPrefix(f[1], "10.99.0.") || (f[2] != "ICMP" && f[2] != "TCP") {
				t.Errorf("tshark line %q; want 10.99.0.x 10.99.0.y ICMP (or TCP)", l)
			}
		}
	})
}

// TestMonitorCommandPcapWire captures the physical layer: tshark must
// decode the UDP datagrams as WireGuard transport data.
func TestMonitorCommandPcapWire(t *testing.T) {
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Skip("tshark is not installed (Debian package tshark); .ci/run installs it")
	}
	file := filepath.Join(t.TempDir(), "wire.pcap")
	code, _, stderr := runMonitor(t, "-n", "4", "-w", file, "--addr", "127.0.0.0/8")
	if code != 0 {
		t.Fatalf("monitor -w: exit %d: %s", code, stderr)
	}
	out, err := exec.Command("tshark", "-r", file, "-d", "udp.port==1-65535,wg", "-T", "fields", "-e", "udp.srcport", "-e", "wg.type").Output()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 4 {
		t.Fatalf("tshark read %d packets; want 4:\n%s", len(lines), out)
	}
	for _, l := range lines {
		if f := strings.Fields(l); len(f) != 2 || f[1] != "4" { // 4: transport data
			t.Errorf("tshark line %q; want a port and WireGuard type 4", l)
		}
	}
}

// TestMonitorHelp: `sidecar monitor --help` describes the command and
// its own flags: each is in the synopsis, and -j says what it prints here
// (#15: it showed status's synopsis and help).
func TestMonitorHelp(t *testing.T) {
	code, _, stderr := runCmd(t, "", "monitor", "--help")
	if code != 0 {
		t.Fatalf("monitor --help: exit %d", code)
	}
	synopsis, _, _ := strings.Cut(stderr, "\n")
	for _, flag := range []string{"-j", "-v", "-x", "-w FILE", "--type", "--src", "--dst", "--addr", "-n N", "--socket", "-c FILE"} {
		if !strings.Contains(synopsis, flag) {
			t.Errorf("synopsis %q lacks %s", synopsis, flag)
		}
	}
	for _, want := range []string{"live events", "from-peer", "pcap", "print each event as a line of JSON"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("help lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "API's JSON answer") {
		t.Errorf("help describes status's -j:\n%s", stderr)
	}
}
