package systest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/internal/wggo"
	"github.com/wgsidecar/sidecar/wgconf"
)

// The interop test re-executes its own binary inside the network namespaces
// it creates; these variables tell the child which part it plays.
const (
	interopRoleEnv   = "WGSIDECAR_INTEROP_ROLE"   // "sidecar" or "kernel-server"
	interopConfigEnv = "WGSIDECAR_INTEROP_CONFIG" // the sidecar's configuration file
	interopOwnEnv    = "WGSIDECAR_INTEROP_OWN"    // "1": the sidecar runs on wgdev (Options.OwnWireGuard)
	interopMark      = "INTEROP "                 // prefix of the children's report lines
	interopBigSize   = 1 << 20                    // bytes of /big, served by the sidecar
)

// Addresses of the test's private world. The underlay is a veth pair
// between two namespaces the test creates; the tunnel runs over it.
const (
	interopUnderA  = "10.231.0.1" // nsA: the sidecar
	interopUnderB  = "10.231.0.2" // nsB: wireguard-go + the kernel's TCP stack
	interopTunA4   = "10.77.0.1"
	interopTunB4   = "10.77.0.2"
	interopTunA6   = "fd77::1"
	interopTunB6   = "fd77::2"
	interopPortA   = 51820 // sidecar's WireGuard port
	interopPortB   = 51821 // wireguard-go's WireGuard port
	interopTCPPort = 8080  // kernel-side TCP server
)

// TestInteropKernelWireGuard runs the sidecar against an independent
// WireGuard implementation: Debian's wireguard-go, configured with
// wireguard-tools' wg, carrying the Linux kernel's own TCP/IP stack. Both
// sides live in network namespaces that the test creates (joined by a
// veth pair) and deletes, so no packet leaves them.
//
// The sidecar side is this test binary run again inside nsA, starting a
// node from a wg-quick style file exactly as a user would. The kernel side
// in nsB is a wireguard-go TUN interface with a TCP echo server (this
// binary again) on the kernel stack; ping and curl there are the real
// iputils-ping and curl.
//
// Its subtest FlowLogTruth then checks the sidecar's flow log (a [FlowLog]
// section of the same file) against counts taken on the kernel side alone:
// see interopFlowLogTruth. Its subtest Forwards checks the file's
// [TCPServerTunnel] and [Socks5] sections against the same peer: see
// interopForwards.
//
// The sidecar runs on wireguard-go's device here;
// TestInteropKernelOwnWireGuard runs the same with the sidecar on the
// module's own WireGuard implementation.
func TestInteropKernelWireGuard(t *testing.T) {
	switch role := os.Getenv(interopRoleEnv); role {
	case "":
	case "sidecar":
		interopSidecarChild(t)
		return
	case "kernel-server":
		interopKernelServerChild(t)
		return
	default:
		t.Fatalf("%s=%q: unknown role", interopRoleEnv, role)
	}
	interopKernel(t, false)
}

// TestInteropKernelOwnWireGuard is TestInteropKernelWireGuard, subtests
// included, with the sidecar's node on the module's own WireGuard
// implementation (Options.OwnWireGuard, package wgdev) against Debian's
// wireguard-go and the kernel's TCP/IP stack.
func TestInteropKernelOwnWireGuard(t *testing.T) {
	if os.Getenv(interopRoleEnv) != "" {
		return // a child of the interop test, which runs only the test it names
	}
	interopKernel(t, true)
}

// interopKernel is the interop test, with the sidecar on wgdev when own
// is set. Its names (namespaces, interfaces) differ with own, so that the
// two runs cannot collide.
func interopKernel(t *testing.T, own bool) {
	if why := wggo.Missing("curl", "ping"); why != "" {
		t.Skip(why)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatalf("finding the test binary: %v", err)
	}

	// A backstop for everything the test runs; each step has its own,
	// shorter, timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 75*time.Second)
	t.Cleanup(cancel)

	// Names unique to this process: /var/run/wireguard and the namespace
	// and interface names are shared by the whole machine.
	tag, veth, wgIf := "interop", "wsi", fmt.Sprintf("wsik%d", testnet.ID())
	sidecarEnv := []string{interopRoleEnv + "=sidecar"}
	if own {
		tag, veth, wgIf = "interopown", "wso", fmt.Sprintf("wsok%d", testnet.ID())
		sidecarEnv = append(sidecarEnv, interopOwnEnv+"=1")
	}
	dir := t.TempDir()

	// --- The underlay: two namespaces and a veth pair between them. ---
	u := testnet.NewUnderlay(ctx, t, tag, veth)
	nsA, nsB := u.NsA, u.NsB
	for _, c := range []struct{ ns, dev, v4, v6 string }{
		{nsA, u.VethA, interopUnderA + "/24", "fd00:231::1/64"},
		{nsB, u.VethB, interopUnderB + "/24", "fd00:231::2/64"},
	} {
		testnet.Run(ctx, t, "ip", "-n", c.ns, "addr", "add", c.v4, "dev", c.dev)
		testnet.Run(ctx, t, "ip", "-n", c.ns, "-6", "addr", "add", c.v6, "dev", c.dev, "nodad")
		testnet.Run(ctx, t, "ip", "-n", c.ns, "link", "set", c.dev, "up")
	}

	// --- Keys. ---
	sidecarPriv, err := wgconf.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	kernelPriv, err := wgconf.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	var psk wgconf.PresharedKey
	rand.Read(psk[:])
	sidecarPub, kernelPub := sidecarPriv.Public().String(), kernelPriv.Public().String()

	// --- The kernel side: wireguard-go in nsB, configured by wg. ---
	// Debian's wireguard-go keeps the default socket receive buffer
	// (212992 bytes, some 90 datagrams), which a burst of the sidecar's
	// TCP overflows: the kernel then drops datagrams before wireguard-go
	// sees them, and the flow-log truth test could no longer compare what
	// the sidecar sent with what wireguard-go received. nsB's TCP receive
	// buffer, and so the window it offers the sidecar, is kept small
	// enough that what the sidecar has in flight fits in it. (The default
	// socket buffer itself is read-only in a namespace.)
	testnet.Run(ctx, t, "ip", "netns", "exec", nsB, "sh", "-c", "echo 4096 65536 65536 > /proc/sys/net/ipv4/tcp_rmem")
	wggo.Start(t, nsB, wgIf)
	// No Endpoint: the kernel side must learn the sidecar's address from
	// the sidecar's handshake.
	kernelConf := filepath.Join(dir, "kernel.conf")
	interopWriteFile(t, kernelConf, fmt.Sprintf(`[Interface]
PrivateKey = %s
ListenPort = %d

[Peer]
PublicKey = %s
PresharedKey = %s
AllowedIPs = %s/32, %s/128
`, kernelPriv.Base64(), interopPortB, sidecarPub, psk.Base64(), interopTunA4, interopTunA6))
	testnet.Run(ctx, t, "ip", "netns", "exec", nsB, "wg", "setconf", wgIf, kernelConf)
	// Keep the kernel from sending what wireguard-go would only drop (no
	// peer for fe80::/10 or ff02::/16): no link-local address, so no
	// router solicitations or DAD, as the flow-log truth test counts the
	// interface's packets against the sidecar's. Set before the link is up.
	for _, c := range []struct{ key, val string }{
		{"addr_gen_mode", "1"}, {"accept_ra", "0"}, {"router_solicitations", "0"}, {"dad_transmits", "0"},
	} {
		testnet.Run(ctx, t, "ip", "netns", "exec", nsB, "sh", "-c",
			fmt.Sprintf("echo %s > /proc/sys/net/ipv6/conf/%s/%s", c.val, wgIf, c.key))
	}
	testnet.Run(ctx, t, "ip", "-n", nsB, "addr", "add", interopTunB4+"/24", "dev", wgIf)
	testnet.Run(ctx, t, "ip", "-n", nsB, "-6", "addr", "add", interopTunB6+"/64", "dev", wgIf, "nodad")
	testnet.Run(ctx, t, "ip", "-n", nsB, "link", "set", wgIf, "up")

	// The TCP server on the kernel's stack in nsB: this binary again.
	kernelSrv := interopStart(ctx, t, "kernel-server", []string{interopRoleEnv + "=kernel-server"},
		"ip", "netns", "exec", nsB, self, "-test.run=^TestInteropKernelWireGuard$", "-test.timeout=120s")
	t.Cleanup(func() { kernelSrv.stop(t, syscall.SIGKILL) })
	kernelSrv.expect(t, "READY", 15*time.Second)

	// --- The sidecar side: this binary again in nsA, from a file. ---
	// Its flow log goes to a file; windows of an hour, so that only the
	// test's cuts (a line CUT on the child's stdin) end them.
	sidecarConf := filepath.Join(dir, "sidecar.conf")
	flowFile := filepath.Join(dir, "flows.ndjson")
	interopWriteFile(t, sidecarConf, fmt.Sprintf(`# written by TestInteropKernelWireGuard
[Interface]
PrivateKey = %s
Address = %s/24, %s/64
ListenPort = %d

[Peer]
PublicKey = %s
PresharedKey = %s
AllowedIPs = %s/32, %s/128
Endpoint = %s:%d

[FlowLog]
Window = 1h
Output = %s
%s`, sidecarPriv.Base64(), interopTunA4, interopTunA6, interopPortA,
		kernelPub, psk.Base64(), interopTunB4, interopTunB6, interopUnderB, interopPortB, flowFile,
		interopForwardSections()))
	sc := interopStart(ctx, t, "sidecar", append(sidecarEnv, interopConfigEnv+"="+sidecarConf),
		"ip", "netns", "exec", nsA, self, "-test.run=^TestInteropKernelWireGuard$", "-test.timeout=120s")
	t.Cleanup(func() { sc.stop(t, syscall.SIGKILL) })

	ready := sc.expect(t, "READY", 15*time.Second)
	if want := fmt.Sprintf("READY %s %d", sidecarPub, interopPortA); ready != want {
		t.Errorf("sidecar reported %q; want %q (public key and ListenPort of its file)", ready, want)
	}
	wantImpl := "DEVICE wireguard-go"
	if own {
		wantImpl = "DEVICE wgdev"
	}
	if impl := sc.expect(t, "DEVICE ", 5*time.Second); impl != wantImpl {
		t.Errorf("sidecar reported %q; want %q", impl, wantImpl)
	}

	// 3. The sidecar reaches the kernel's TCP server and pings the
	// kernel side, over IPv4 and IPv6.
	interopExpectSidecarTraffic(t, sc)
	peer := sc.expect(t, "PEER ", 10*time.Second)
	if !strings.HasPrefix(peer, "PEER "+kernelPub+" ") || strings.Contains(peer, " handshake=0 ") ||
		strings.Contains(peer, " rx=0") || strings.Contains(peer, " tx=0") {
		t.Errorf("sidecar's view of its peer: %q; want %s with a handshake and traffic both ways", peer, kernelPub)
	}
	sc.expect(t, "DONE", 10*time.Second)
	if t.Failed() {
		// Without a working tunnel every check from the kernel side
		// would only time out too.
		out, _ := testnet.Output(ctx, 10*time.Second, "ip", "netns", "exec", nsB, "wg", "show", wgIf)
		t.Fatalf("the tunnel does not work from the sidecar's side; kernel-side checks skipped. wg show %s in %s:\n%s", wgIf, nsB, out)
	}

	// 1. The kernel side pings the sidecar, with small and full-MTU
	// packets that must not be fragmented (tunnel MTU 1420 on both sides).
	for _, c := range []struct {
		args []string
		what string
	}{
		{[]string{"-4", "-c", "3", "-i", "0.2", "-W", "2", interopTunA4}, "IPv4"},
		{[]string{"-6", "-c", "3", "-i", "0.2", "-W", "2", interopTunA6}, "IPv6"},
		{[]string{"-4", "-c", "2", "-i", "0.2", "-W", "2", "-M", "do", "-s", "1392", interopTunA4}, "IPv4, 1420-byte packets"},
		{[]string{"-6", "-c", "2", "-i", "0.2", "-W", "2", "-M", "do", "-s", "1372", interopTunA6}, "IPv6, 1420-byte packets"},
	} {
		args := append([]string{"netns", "exec", nsB, "ping"}, c.args...)
		out, err := testnet.Output(ctx, 15*time.Second, "ip", args...)
		if err != nil {
			t.Errorf("kernel side cannot ping the sidecar (%s): ping %s: %v\n%s", c.what, strings.Join(c.args, " "), err, out)
		} else if !strings.Contains(out, " 0% packet loss") {
			t.Errorf("kernel side's ping of the sidecar (%s) lost packets:\n%s", c.what, out)
		}
	}

	// 2. The kernel's TCP stack connects to the sidecar's HTTP server:
	// the real curl, over IPv4 and IPv6, and a 1 MiB body to carry
	// full-size segments.
	for _, c := range []struct{ url, want string }{
		{"http://" + interopTunA4 + "/", "sidecar saw " + net.JoinHostPort(interopTunB4, "")},
		{"http://[" + interopTunA6 + "]/", "sidecar saw " + net.JoinHostPort(interopTunB6, "")},
	} {
		out, err := testnet.Output(ctx, 15*time.Second, "ip", "netns", "exec", nsB, "curl", "-sS", "-g", "--max-time", "5", c.url)
		if err != nil {
			t.Errorf("kernel side's curl %s failed: %v\n%s", c.url, err, out)
		} else if !strings.HasPrefix(out, c.want) {
			t.Errorf("kernel side's curl %s = %q; want the sidecar's body starting %q", c.url, out, c.want)
		}
	}
	wantSum := sha256.Sum256(interopBigBody())
	for _, url := range []string{"http://" + interopTunA4 + "/big", "http://[" + interopTunA6 + "]/big"} {
		cmd := exec.CommandContext(ctx, "ip", "netns", "exec", nsB, "curl", "-sS", "-g", "--max-time", "10", url)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		body, err := cmd.Output()
		if err != nil {
			t.Errorf("kernel side's curl %s failed: %v\n%s", url, err, stderr.String())
		} else if sha256.Sum256(body) != wantSum {
			t.Errorf("kernel side's curl %s: got %d bytes, not the %d bytes the sidecar served", url, len(body), interopBigSize)
		}
	}

	// 4. wireguard-tools' view of the session: a handshake with the
	// sidecar's key, the preshared key in use, traffic both ways, and the
	// endpoint learnt from the sidecar's packets.
	show := func(what string) []string {
		out, err := testnet.Output(ctx, 10*time.Second, "ip", "netns", "exec", nsB, "wg", "show", wgIf, what)
		if err != nil {
			t.Fatalf("wg show %s %s: %v\n%s", wgIf, what, err, out)
		}
		f := strings.Fields(out)
		if len(f) == 0 || f[0] != sidecarPub {
			t.Fatalf("wg show %s %s = %q; want one peer, the sidecar %s", wgIf, what, out, sidecarPub)
		}
		return f[1:]
	}
	if f := show("latest-handshakes"); len(f) != 1 || f[0] == "0" {
		t.Errorf("wg show latest-handshakes: %q; want a handshake with the sidecar", f)
	}
	if f := show("transfer"); len(f) != 2 || f[0] == "0" || f[1] == "0" {
		t.Errorf("wg show transfer: %q; want non-zero received and sent bytes", f)
	} else {
		t.Logf("wireguard-go: received %s bytes from the sidecar, sent %s", f[0], f[1])
	}
	if f := show("preshared-keys"); len(f) != 1 || f[0] != psk.Base64() {
		t.Errorf("wg show preshared-keys does not show the generated preshared key (got %d fields)", len(f))
	}
	if f := show("endpoints"); len(f) != 1 || f[0] != net.JoinHostPort(interopUnderA, strconv.Itoa(interopPortA)) {
		t.Errorf("wg show endpoints: %q; want the sidecar's %s:%d", f, interopUnderA, interopPortA)
	}

	// 5. The sidecar's flow log against independent counts of the same
	// traffic: the kernel interface's counters, wireguard-go's, and the
	// UDP datagrams on the veth.
	t.Run("FlowLogTruth", func(t *testing.T) {
		interopFlowLogTruth(ctx, t, interopTruthEnv{
			nsB: nsB, wgIf: wgIf, vethB: u.VethB, dir: dir, flowFile: flowFile,
			sidecar: sc, sidecarPub: sidecarPriv.Public(),
		})
	})

	// 6. The file's forwards with the same peer: a tunnel-to-local
	// forward to an app on nsA's loopback and the SOCKS5 proxy. After the
	// flow-log truth test, whose window must hold only its own traffic.
	t.Run("Forwards", func(t *testing.T) {
		interopForwards(ctx, t, interopForwardEnv{nsA: nsA, nsB: nsB, dir: dir})
	})

	// The sidecar shuts down cleanly when its stdin closes.
	sc.stdin.Close()
	sc.expect(t, "CLOSED", 10*time.Second)
	if err := sc.wait(10 * time.Second); err != nil {
		t.Errorf("sidecar child did not exit cleanly: %v", err)
	}
	kernelSrv.stdin.Close()
	if err := kernelSrv.wait(10 * time.Second); err != nil {
		t.Errorf("kernel-side server did not exit cleanly: %v", err)
	}
}

// interopExpectSidecarTraffic checks the sidecar child's report of its
// traffic to the kernel side (interopSidecarTraffic).
func interopExpectSidecarTraffic(t *testing.T, sc *interopProc) {
	t.Helper()
	for _, c := range []struct{ target, seen string }{
		{net.JoinHostPort(interopTunB4, strconv.Itoa(interopTCPPort)), interopTunA4},
		{net.JoinHostPort(interopTunB6, strconv.Itoa(interopTCPPort)), interopTunA6},
	} {
		line := sc.expect(t, "DIAL "+c.target+" ", 30*time.Second)
		want := "saw " + net.JoinHostPort(c.seen, "")
		if !strings.Contains(line, " OK ") || !strings.Contains(line, want) {
			t.Errorf("sidecar could not talk to the kernel's TCP server at %s through the tunnel: %q (want OK and %q)", c.target, line, want)
		}
	}
	for _, ip := range []string{interopTunB4, interopTunB6} {
		line := sc.expect(t, "PING "+ip+" ", 30*time.Second)
		if !strings.HasPrefix(line, "PING "+ip+" OK ") {
			t.Errorf("sidecar's ping of the kernel side %s got no reply: %q", ip, line)
		}
	}
}

// interopSidecarChild is the sidecar, run in nsA: it starts a node from the
// file it is given, serves HTTP on tunnel port 80 (and, as the local app of
// its tunnel-to-local forward, on nsA's loopback), then talks to the kernel
// side and reports on stdout lines starting with interopMark. Afterwards it
// obeys commands, one a line on its stdin (see interopSidecarCommands),
// until stdin closes.
func interopSidecarChild(t *testing.T) {
	report := func(format string, args ...any) { fmt.Printf(interopMark+format+"\n", args...) }
	stopApp := interopServeHTTP(t, "local app", net.JoinHostPort("127.0.0.1", strconv.Itoa(interopLocalAppPort)))
	defer stopApp()
	cfg, err := wgconf.ParseFile(os.Getenv(interopConfigEnv))
	if err != nil {
		t.Fatalf("parse config: %v", err)
	}
	node, err := sidecar.Start(cfg, sidecar.Options{OwnWireGuard: os.Getenv(interopOwnEnv) == "1"})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	ln, err := node.Listen("tcp", ":80")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	srv := &http.Server{Handler: interopHTTPHandler("sidecar"), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(ln) }()
	report("READY %s %d", node.PublicKey(), node.ListenPort())
	report("DEVICE %s", interopDeviceImpl())

	interopSidecarTraffic(node, report)
	peers, err := node.Peers()
	if err != nil || len(peers) != 1 {
		report("PEER ERR %v (%d peers)", err, len(peers))
	} else {
		p := peers[0]
		var hs int64
		if !p.LastHandshake.IsZero() {
			hs = p.LastHandshake.Unix()
		}
		report("PEER %s handshake=%d rx=%d tx=%d endpoint=%s", p.PublicKey, hs, p.RxBytes, p.TxBytes, p.Endpoint)
	}
	report("DONE")

	interopSidecarCommands(node, report) // until the parent closes stdin
	srv.Close()
	<-served
	if err := node.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	report("CLOSED")
}

// interopDeviceImpl names the WireGuard implementation whose goroutines
// run in this process: "wgdev" (its handshake goroutine), "wireguard-go"
// (its handshake workers), or what was seen otherwise.
func interopDeviceImpl() string {
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	own := strings.Contains(stacks, "sidecar/wgdev.(*Device).handshakeLoop")
	stock := strings.Contains(stacks, "wireguard/device.(*Device).RoutineHandshake")
	switch {
	case own && !stock:
		return "wgdev"
	case stock && !own:
		return "wireguard-go"
	}
	return fmt.Sprintf("unclear (wgdev %v, wireguard-go %v)", own, stock)
}

// interopSidecarCommands reads the parent's commands from stdin, one a
// line, until it closes:
//
//	CUT      cut the flow-log window (written to the file before the
//	         answer); answers "CUT OK rx tx rx' tx'" with the peer's byte
//	         counters as wireguard-go counts them just before and just
//	         after the cut, or "CUT ERR ...".
//	TRAFFIC  run interopSidecarTraffic again, then answer "TRAFFIC DONE".
func interopSidecarCommands(node *sidecar.Node, report func(string, ...any)) {
	totals := func() (rx, tx uint64) {
		peers, _ := node.Peers()
		for _, p := range peers {
			rx += p.RxBytes
			tx += p.TxBytes
		}
		return rx, tx
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch cmd := strings.TrimSpace(in.Text()); cmd {
		case "CUT":
			rx0, tx0 := totals()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := node.CutFlows(ctx)
			cancel()
			rx1, tx1 := totals()
			if err != nil {
				report("CUT ERR %v", err)
			} else {
				report("CUT OK %d %d %d %d", rx0, tx0, rx1, tx1)
			}
		case "TRAFFIC":
			interopSidecarTraffic(node, report)
			report("TRAFFIC DONE")
		default:
			report("ERR unknown command %q", cmd)
		}
	}
}

// interopSidecarTraffic talks to the kernel side: a line to its TCP server
// and a ping, over IPv4 and IPv6, reporting DIAL and PING lines.
func interopSidecarTraffic(node *sidecar.Node, report func(string, ...any)) {
	for _, host := range []string{interopTunB4, interopTunB6} {
		target := net.JoinHostPort(host, strconv.Itoa(interopTCPPort))
		if reply, err := interopDialEcho(node, target); err != nil {
			report("DIAL %s ERR %v", target, err)
		} else {
			report("DIAL %s OK %s", target, reply)
		}
	}
	for _, host := range []string{interopTunB4, interopTunB6} {
		var rtt time.Duration
		var err error
		for range 3 { // a lost echo is not yet a failure
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			rtt, err = node.Ping(ctx, host)
			cancel()
			if err == nil {
				break
			}
		}
		if err != nil {
			report("PING %s ERR %v", host, err)
		} else {
			report("PING %s OK %v", host, rtt)
		}
	}
}

// interopDialEcho sends a line to the kernel-side server at target through
// the tunnel and returns the line it answers.
func interopDialEcho(node *sidecar.Node, target string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := node.DialContext(ctx, "tcp", target)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "hello from the sidecar\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(line), nil
}

// interopKernelServerChild is the TCP server on the kernel's stack in nsB:
// for every connection it answers one line, naming the peer it saw. Beside
// it, on interopKernelHTTPPort, an HTTP server for the forwards test. It
// stops when its stdin closes.
func interopKernelServerChild(t *testing.T) {
	ln, err := net.Listen("tcp", net.JoinHostPort("::", strconv.Itoa(interopTCPPort)))
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	testnet.Serve(t, ln, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return
		}
		fmt.Fprintf(c, "kernel %s saw %s: %s\n", c.LocalAddr(), c.RemoteAddr(), strings.TrimSpace(line))
	})
	stopHTTP := interopServeHTTP(t, "kernel http", net.JoinHostPort("::", strconv.Itoa(interopKernelHTTPPort)))
	fmt.Println(interopMark + "READY")
	io.Copy(io.Discard, os.Stdin)
	stopHTTP()
}

// interopBigBody is 1 MiB of data that compresses badly and is the same in
// the parent and the child.
func interopBigBody() []byte {
	b := make([]byte, 0, interopBigSize+sha256.Size)
	sum := sha256.Sum256([]byte("wgsidecar interop"))
	for len(b) < interopBigSize {
		b = append(b, sum[:]...)
		sum = sha256.Sum256(sum[:])
	}
	return b[:interopBigSize]
}

// interopProc is a child process of the interop test.
type interopProc struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *interopLines
	errb  *testnet.Buffer
	done  chan struct{}
	err   error // valid once done is closed
}

func interopStart(ctx context.Context, t *testing.T, name string, env []string, prog string, args ...string) *interopProc {
	t.Helper()
	p := &interopProc{name: name, out: newInteropLines(), errb: &testnet.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.CommandContext(ctx, prog, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.errb
	p.cmd.WaitDelay = 5 * time.Second
	// Should the test binary die without running its cleanups (a
	// -timeout panic), the child goes too, and may clean up after
	// itself on SIGTERM.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s stdout:\n%s", name, p.out.String())
			t.Logf("%s stderr:\n%s", name, p.errb.String())
		}
	})
	return p
}

// expect returns the child's next report line that starts with prefix
// (without interopMark), failing t if none comes within d.
func (p *interopProc) expect(t *testing.T, prefix string, d time.Duration) string {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case line := <-p.out.lines:
			t.Logf("%s: %s", p.name, line)
			if strings.HasPrefix(line, prefix) {
				return line
			}
		case <-p.done:
			// Lines written before exit may still be queued.
			select {
			case line := <-p.out.lines:
				t.Logf("%s: %s", p.name, line)
				if strings.HasPrefix(line, prefix) {
					return line
				}
				continue
			default:
			}
			t.Fatalf("%s exited (%v) before reporting %q", p.name, p.err, prefix)
		case <-timer.C:
			t.Fatalf("%s did not report %q within %v", p.name, prefix, d)
		}
	}
}

// wait waits for the child to exit on its own.
func (p *interopProc) wait(d time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		return fmt.Errorf("%s still running after %v", p.name, d)
	}
}

// stop ends the child if it still runs: sig first, then SIGKILL. `ip netns
// exec` execs its command in place, so the PID is the child's own.
func (p *interopProc) stop(t *testing.T, sig syscall.Signal) {
	p.stdin.Close()
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			t.Errorf("%s (pid %d) would not die", p.name, p.cmd.Process.Pid)
		}
	}
}

// interopLines collects a child's stdout and passes its report lines on.
type interopLines struct {
	mu      sync.Mutex
	all     bytes.Buffer
	partial []byte
	lines   chan string
}

func newInteropLines() *interopLines { return &interopLines{lines: make(chan string, 1024)} }

func (l *interopLines) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all.Write(b)
	l.partial = append(l.partial, b...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		line := string(l.partial[:i])
		l.partial = l.partial[i+1:]
		if rest, ok := strings.CutPrefix(line, interopMark); ok {
			select {
			case l.lines <- rest:
			default: // nobody is listening that far behind
			}
		}
	}
	return len(b), nil
}

func (l *interopLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all.String()
}

func interopWriteFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
