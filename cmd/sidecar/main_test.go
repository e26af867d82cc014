package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/logtail"
	"github.com/wgsidecar/sidecar/sidecartest"
	"github.com/wgsidecar/sidecar/wgconf"
)

// TestMain lets the test binary act as the sidecar command, so that tests
// can run it as a real subprocess (signals, exit status, stderr).
func TestMain(m *testing.M) {
	if os.Getenv("WGSIDECAR_TEST_AS_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func runCmd(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func TestGenkeyPubkey(t *testing.T) {
	code, priv, _ := runCmd(t, "", "genkey")
	if code != 0 {
		t.Fatalf("genkey exit %d", code)
	}
	k, err := wgconf.ParsePrivateKey(strings.TrimSpace(priv))
	if err != nil {
		t.Fatalf("genkey printed %q: %v", priv, err)
	}
	code, pub, _ := runCmd(t, priv, "pubkey")
	if code != 0 || strings.TrimSpace(pub) != k.Public().String() {
		t.Fatalf("pubkey: exit %d, %q; want %s", code, pub, k.Public())
	}
	// The same answer as WireGuard's own tool, when it is installed.
	if wg, err := exec.LookPath("wg"); err == nil {
		cmd := exec.Command(wg, "pubkey")
		cmd.Stdin = strings.NewReader(priv)
		want, err := cmd.Output()
		if err != nil {
			t.Fatalf("wg pubkey: %v", err)
		}
		if strings.TrimSpace(pub) != strings.TrimSpace(string(want)) {
			t.Errorf("pubkey %q; wg pubkey says %q", pub, want)
		}
	}
	code, _, stderr := runCmd(t, "not a key", "pubkey")
	if code != 1 || !strings.Contains(stderr, "private key") || strings.Contains(stderr, "not a key") {
		t.Errorf("pubkey of garbage: exit %d, stderr %q; want 1 and an error that does not echo the input", code, stderr)
	}
}

func TestUsageAndHelp(t *testing.T) {
	if code, _, stderr := runCmd(t, ""); code != 2 || !strings.Contains(stderr, "Usage:") {
		t.Errorf("no args: exit %d, %q", code, stderr)
	}
	if code, stdout, _ := runCmd(t, "", "--help"); code != 0 || !strings.Contains(stdout, "sidecar up -c FILE") {
		t.Errorf("--help: exit %d, %q", code, stdout)
	}
	for _, cmd := range []string{"up", "check", "genkey", "pubkey", "demo"} {
		code, _, stderr := runCmd(t, "", cmd, "--help")
		if code != 0 || !strings.Contains(stderr, "Usage: sidecar "+cmd) {
			t.Errorf("%s --help: exit %d, %q", cmd, code, stderr)
		}
	}
	if code, _, stderr := runCmd(t, "", "frobnicate"); code != 2 || !strings.Contains(stderr, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: exit %d, %q", code, stderr)
	}
	if code, _, _ := runCmd(t, "", "up"); code != 2 {
		t.Errorf("up without -c: exit %d; want 2", code)
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheck(t *testing.T) {
	k, _ := wgconf.GeneratePrivateKey()
	peer, _ := wgconf.GeneratePrivateKey()
	good := writeFile(t, "good.conf", fmt.Sprintf(`[Interface]
PrivateKey = %s
Address = 10.5.0.1/24
PostUp = iptables -A FORWARD -i %%i -j ACCEPT

[Peer]
PublicKey = %s
AllowedIPs = 10.5.0.2/32
`, k.Base64(), peer.Public()))
	code, stdout, _ := runCmd(t, "", "check", "-c", good)
	if code != 0 || !strings.Contains(stdout, "OK (1 peer(s)") || !strings.Contains(stdout, "PostUp") {
		t.Errorf("check good file: exit %d, %q", code, stdout)
	}
	if strings.Contains(stdout, k.Base64()) {
		t.Error("check printed the private key")
	}

	bad := writeFile(t, "bad.conf", fmt.Sprintf("[Interface]\nPrivateKey = %s\nListenPort = 99999\n", k.Base64()))
	code, _, stderr := runCmd(t, "", "check", "-c", bad)
	if want := bad + ":3: ListenPort:"; code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("check bad file: exit %d, stderr %q; want it to contain %q", code, stderr, want)
	}

	// [IPFIX]: the collector's name is resolved as at start; a name the
	// resolver refuses without asking a DNS server (a label may not end
	// in '-') stands for one that does not resolve.
	for _, tc := range []struct{ ipfix, want string }{
		{"Collector = localhost:4739\nLayers = virtual, physical\n", ""},
		{"Layers = exit\nCollector = no-such-collector-:4739\n", ":7: Collector: lookup no-such-collector-"},
		{"Collector = 127.0.0.1:0\n", ":6: Collector: \"127.0.0.1:0\": port must be a number from 1 to 65535"},
		{"Collector = 127.0.0.1:4739\nLayers = virtual, wire\n", `:7: Layers: "wire" is not one of virtual, subnet, exit, physical`},
	} {
		f := writeFile(t, "ipfix.conf", fmt.Sprintf("[Interface]\nPrivateKey = %s\nAddress = 10.0.0.1/32\n\n[IPFIX]\n%s", k.Base64(), tc.ipfix))
		code, stdout, stderr := runCmd(t, "", "check", "-c", f)
		if tc.want == "" {
			if code != 0 || !strings.Contains(stdout, "OK") {
				t.Errorf("check [IPFIX] %q: exit %d, %q %q", tc.ipfix, code, stdout, stderr)
			}
			continue
		}
		if code != 1 || !strings.Contains(stderr, f+tc.want) {
			t.Errorf("check [IPFIX] %q: exit %d, stderr %q; want it to contain %q", tc.ipfix, code, stderr, f+tc.want)
		}
	}
}

// TestUpRunsAndStopsOnSignal runs `sidecar up` as a real process from a
// file, checks it came up and logs no secret, then stops it with SIGTERM and
// expects a clean exit. A broken file makes it exit at once with file:line.
func TestUpRunsAndStopsOnSignal(t *testing.T) {
	k, _ := wgconf.GeneratePrivateKey()
	peer, _ := wgconf.GeneratePrivateKey()
	psk, _ := wgconf.GeneratePrivateKey()
	file := writeFile(t, "wg0.conf", fmt.Sprintf(`[Interface]
PrivateKey = %s
Address = 10.6.0.1/32, fd06::1/128
Table = off

[Peer]
PublicKey = %s
PresharedKey = %s
AllowedIPs = 10.6.0.2/32
Endpoint = 127.0.0.1:9
`, k.Base64(), peer.Public(), psk.Base64()))

	cmd := exec.Command(os.Args[0], "up", "-c", file, "--log-level", "debug")
	cmd.Env = append(os.Environ(), "WGSIDECAR_TEST_AS_MAIN=1")
	var stderr testnet.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(stderr.String(), `msg="sidecar up"`) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no 'sidecar up' log line; stderr:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGTERM: %v; stderr:\n%s", err, stderr.String())
	}
	logs := stderr.String()
	for _, want := range []string{"Table", "sidecar down", "shutting down"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	for _, secret := range []string{k.Base64(), k.Hex(), psk.Base64(), psk.Hex()} {
		if strings.Contains(logs, secret) {
			t.Errorf("a secret key appears in the logs")
		}
	}

	broken := writeFile(t, "broken.conf", "[Interface]\nPrivateKey = nope\n")
	cmd = exec.Command(os.Args[0], "up", "-c", broken)
	cmd.Env = append(os.Environ(), "WGSIDECAR_TEST_AS_MAIN=1")
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("up with a broken file: %v; want exit status 1", err)
	}
	if !regexp.MustCompile(regexp.QuoteMeta(broken) + `:2: PrivateKey: `).Match(out) {
		t.Errorf("up with a broken file said %q; want file:2: PrivateKey", out)
	}
	if strings.Contains(string(out), `msg="sidecar up"`) {
		t.Error("the sidecar started on a broken file")
	}
}

func TestDemo(t *testing.T) {
	code, stdout, stderr := runCmd(t, "", "demo", "--bytes", "4194304")
	if code != 0 {
		t.Fatalf("demo: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{
		`GET http://10.99.0.2/`, `"hello from b, you are 10.99.0.1:`,
		`GET http://[fd00:99::2]/`, `you are [fd00:99::1]:`,
		"ping 10.99.0.2", "ping fd00:99::2",
		"b received 4194304 bytes",
		`"nodeId":"demo-a","logged":"`, `"nodeId":"demo-b","logged":"`, `"proc_seq":1`,
		`"virtualTraffic":[`, `{"proto":6,"src":"10.99.0.1:`,
		`"physicalTraffic":[{"proto":0,"src":"10.99.0.2:0","dst":"127.0.0.1:`,
		`{"proto":6,"src":"10.99.0.2:80","dst":"10.99.0.1:`,
		`{"proto":58,"src":"[fd00:99::1]:0","dst":"[fd00:99::2]:0"`,
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("demo output lacks %q:\n%s", want, stdout)
		}
	}
}

// TestUpSTDIOTunnel runs `sidecar up` with wireproxy's [STDIOTunnel] as a
// real process: its stdin and stdout become a TCP connection to a service
// on a peer node, and it exits when the connection ends.
func TestUpSTDIOTunnel(t *testing.T) {
	peer := sidecartest.NewNodes(t, 1, sidecartest.Options{})[0] // 10.99.0.1
	ln, err := peer.Listen("tcp", ":22")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		b, _ := io.ReadAll(c) // until the sidecar passes on stdin's end
		c.Write(bytes.ToUpper(b))
		c.Close()
	}()
	k, _ := wgconf.GeneratePrivateKey()
	file := writeFile(t, "stdio.conf", fmt.Sprintf(`[Interface]
PrivateKey = %s
Address = 10.99.0.7/32

[Peer]
PublicKey = %s
AllowedIPs = 10.99.0.1/32
Endpoint = 127.0.0.1:%d

[STDIOTunnel]
Target = 10.99.0.1:22
`, k.Base64(), peer.PublicKey(), peer.ListenPort()))
	err = peer.SetPeers([]wgconf.Peer{{PublicKey: k.Public(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.0.7/32")}}})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "up", "-c", file, "--log-level", "warn")
	cmd.Env = append(os.Environ(), "WGSIDECAR_TEST_AS_MAIN=1")
	cmd.Stdin = strings.NewReader("ssh-2.0 hello through the tunnel\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	done := make(chan struct{})
	var out []byte
	go func() { out, err = cmd.Output(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("sidecar up with [STDIOTunnel] did not exit; stderr:\n%s", stderr.String())
	}
	if err != nil || string(out) != "SSH-2.0 HELLO THROUGH THE TUNNEL\n" {
		t.Fatalf("stdout %q, err %v; stderr:\n%s", out, err, stderr.String())
	}
}

// TestCollectCommand runs `sidecar collect` as a real process, uploads
// entries to it with the log stream client, reads them back with the
// token, is refused without it, and stops it with SIGTERM.
func TestCollectCommand(t *testing.T) {
	dir := t.TempDir()
	tokenFile := writeFile(t, "token", "s3cret-token\n")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(os.Args[0], "collect", "--listen", addr, "--data", filepath.Join(dir, "data"), "--token-file", tokenFile)
	cmd.Env = append(os.Environ(), "WGSIDECAR_TEST_AS_MAIN=1")
	var stderr testnet.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	base := "http://" + addr
	for deadline := time.Now().Add(20 * time.Second); ; {
		if resp, err := http.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("collector did not come up; stderr:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	id, _ := logtail.NewPrivateID()
	lt, err := logtail.New(logtail.Config{BaseURL: base, Collection: "test", PrivateID: id, BufferDir: filepath.Join(dir, "buf"), FlushInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().Add(-time.Minute)
	for i := range 3 {
		if err := lt.Write([]byte(fmt.Sprintf(`{"nodeId":"n1","i":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := lt.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("%s/api/v1/logs?collection=test&start=%s&end=%s&node=n1", base,
		start.UTC().Format(time.RFC3339Nano), time.Now().Add(time.Minute).UTC().Format(time.RFC3339Nano))
	get := func(token string) (int, string) {
		req, _ := http.NewRequest("GET", url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get(""); code != 401 {
		t.Errorf("read without token: %d; want 401", code)
	}
	code, body := get("s3cret-token")
	if code != 200 || strings.Count(body, `"nodeId":"n1"`) != 3 || !strings.Contains(body, `"logged":"`) {
		t.Errorf("read: %d %s", code, body)
	}
	if strings.Contains(stderr.String(), "s3cret-token") || strings.Contains(stderr.String(), id.Hex()) {
		t.Error("a secret appears in the collector's log")
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("collector after SIGTERM: %v; stderr:\n%s", err, stderr.String())
	}
}

// TestDemoServe runs "sidecar demo --serve" as a process: after the demo
// it prints the console's address and a token, the collector there serves
// the console and answers queries whose windows keep coming (traffic
// continues), and SIGINT ends it cleanly.
func TestDemoServe(t *testing.T) {
	cmd := exec.Command(os.Args[0], "demo", "--serve", "--bytes", "1048576")
	cmd.Env = append(os.Environ(), "WGSIDECAR_TEST_AS_MAIN=1")
	var stdout, stderr testnet.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	re := regexp.MustCompile(`Console: (http://127\.0\.0\.1:\d+)/\?collection=demo\nSign in with collection demo and token (\S+)\n`)
	var m []string
	for deadline := time.Now().Add(60 * time.Second); m == nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no console address printed; stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
		}
		m = re.FindStringSubmatch(stdout.String())
	}
	base, token := m[1], m[2]
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "wgsidecar console") {
		t.Fatalf("GET %s/: %s", base, resp.Status)
	}
	// Windows of 5 s keep arriving: the newest window a node reported
	// moves on while the demo serves.
	lastWindow := func() string {
		code, body := testnet.GetBearer(t, base+"/api/v1/nodes?collection=demo", token)
		if code != 200 {
			t.Fatalf("nodes: %d %s", code, body)
		}
		return body
	}
	first := lastWindow()
	for deadline := time.Now().Add(30 * time.Second); lastWindow() == first; time.Sleep(500 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no new window in 30 s of serving: %s", first)
		}
	}
	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGINT: %v\nstderr:\n%s", err, stderr.String())
	}
}

// TestUpWireGuardFlag: --wireguard picks the implementation; anything but
// its two names is a usage error that names them.
func TestUpWireGuardFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		own  bool
	}{{nil, false}, {[]string{"--wireguard", "wireguard-go"}, false}, {[]string{"--wireguard", "wgdev"}, true}} {
		o, err := parseUpFlags(append([]string{"-c", "x.conf"}, tc.args...), io.Discard)
		if err != nil || o.ownWG != tc.own {
			t.Errorf("up %q: own WireGuard %v, %v; want %v", tc.args, o.ownWG, err, tc.own)
		}
	}
	var stderr strings.Builder
	if _, err := parseUpFlags([]string{"-c", "x.conf", "--wireguard", "kernel"}, &stderr); err != errUsage ||
		!strings.Contains(stderr.String(), "want wireguard-go or wgdev") {
		t.Errorf("--wireguard kernel: %v, %q; want a usage error naming both", err, stderr.String())
	}
}
