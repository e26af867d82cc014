package systest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/wgconf"
)

// TestServeNetnsSubnetRouter re-executes its binary inside the namespaces it
// creates; these variables tell the child which node it is.
const (
	serveNetnsRoleEnv   = "WGSIDECAR_SERVE_NETNS_ROLE"   // "router" (nsB) or "client" (nsA)
	serveNetnsConfigEnv = "WGSIDECAR_SERVE_NETNS_CONFIG" // the node's configuration file
)

// Addresses of the test's private world: an underlay veth between nsA and
// nsB, the tunnel addresses of the two nodes, and the subnet that node B
// serves, held by a dummy interface on nsB's host network.
const (
	serveNetnsUnderA  = "10.232.0.1"
	serveNetnsUnderB  = "10.232.0.2"
	serveNetnsTunA    = "10.78.0.1"
	serveNetnsTunB    = "10.78.0.2"
	serveNetnsSubnet  = "10.250.0.0/24"
	serveNetnsApp     = "10.250.0.1" // on nsB's dummy interface
	serveNetnsPortB   = 51822        // node B's WireGuard port
	serveNetnsTCPPort = 9090         // the app's TCP server
	serveNetnsUDPPort = 9091         // the app's UDP echo
	serveNetnsClosed  = 9099         // nothing listens here
)

// TestServeNetnsSubnetRouter runs a node serving a subnet to its peer
// ([Serve] Subnets), with the subnet a real one on the serving node's host
// network: gVisor drops loopback destinations arriving on a tunnel NIC, so
// the served app must listen on a non-loopback address, and the test only
// sends traffic to addresses in namespaces it creates.
//
// nsB holds node B (serving 10.250.0.0/24) and the app, a TCP server and a
// UDP echo on 10.250.0.1, a dummy interface of nsB. nsA holds node A, whose
// peer B is routed 10.250.0.0/24. Both nodes are this binary run again,
// started from wg-quick style files. Node A then reaches the app through
// the tunnel, by TCP and UDP, and a closed port of the subnet is refused at
// once: B dials the target on its host network first and answers the
// peer's SYN with a RST when the target refuses.
func TestServeNetnsSubnetRouter(t *testing.T) {
	switch role := os.Getenv(serveNetnsRoleEnv); role {
	case "":
	case "router":
		serveNetnsRouterChild(t)
		return
	case "client":
		serveNetnsClientChild(t)
		return
	default:
		t.Fatalf("%s=%q: unknown role", serveNetnsRoleEnv, role)
	}

	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, a veth pair and a dummy interface")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("ip is not on PATH: %v", err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatalf("finding the test binary: %v", err)
	}
	start := time.Now()

	// A backstop for everything the test runs; each step has its own,
	// shorter, timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)

	id := testnet.ID()
	dummy := fmt.Sprintf("wssd%d", id)
	dummyPeer := fmt.Sprintf("wsse%d", id) // only when there is no dummy link type
	dir := t.TempDir()

	// Registered before the underlay, so it runs after its removal: the
	// dummy interface lives in a namespace and goes with it.
	t.Cleanup(func() { testnet.CheckLinksGone(t, dummy, dummyPeer) })

	// --- The underlay and the served subnet. ---
	u := testnet.NewUnderlay(ctx, t, "serve", "wss")
	nsA, nsB, vethA, vethB := u.NsA, u.NsB, u.VethA, u.VethB
	// The subnet's interface is a dummy one; kernels built without dummy
	// links (some microVMs) get a veth pair with both ends in nsB instead.
	if out, err := testnet.Output(ctx, 10*time.Second, "ip", "-n", nsB, "link", "add", dummy, "type", "dummy"); err != nil {
		t.Logf("no dummy interface (%v: %s); the subnet goes on a veth pair inside %s", err, strings.TrimSpace(out), nsB)
		testnet.Run(ctx, t, "ip", "-n", nsB, "link", "add", dummy, "type", "veth", "peer", "name", dummyPeer)
		testnet.Run(ctx, t, "ip", "-n", nsB, "link", "set", dummyPeer, "up")
	}
	for _, c := range []struct{ ns, dev, addr string }{
		{nsA, vethA, serveNetnsUnderA + "/24"},
		{nsB, vethB, serveNetnsUnderB + "/24"},
		{nsB, dummy, serveNetnsApp + "/24"},
	} {
		testnet.Run(ctx, t, "ip", "-n", c.ns, "addr", "add", c.addr, "dev", c.dev)
		testnet.Run(ctx, t, "ip", "-n", c.ns, "link", "set", c.dev, "up")
	}
	// --- Keys and files. ---
	privA, err := wgconf.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	privB, err := wgconf.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	confA, confB := filepath.Join(dir, "a.conf"), filepath.Join(dir, "b.conf")
	interopWriteFile(t, confB, fmt.Sprintf(`# written by TestServeNetnsSubnetRouter: the subnet router
[Interface]
PrivateKey = %s
Address = %s/32
ListenPort = %d

[Peer]
PublicKey = %s
AllowedIPs = %s/32

[Serve]
Subnets = %s
`, privB.Base64(), serveNetnsTunB, serveNetnsPortB, privA.Public().String(), serveNetnsTunA, serveNetnsSubnet))
	interopWriteFile(t, confA, fmt.Sprintf(`# written by TestServeNetnsSubnetRouter: the router's client
[Interface]
PrivateKey = %s
Address = %s/32

[Peer]
PublicKey = %s
AllowedIPs = %s/32, %s
Endpoint = %s:%d
`, privA.Base64(), serveNetnsTunA, privB.Public().String(), serveNetnsTunB, serveNetnsSubnet, serveNetnsUnderB, serveNetnsPortB))

	// --- Node B and the app in nsB. ---
	run := "-test.run=^TestServeNetnsSubnetRouter$"
	router := interopStart(ctx, t, "router", []string{serveNetnsRoleEnv + "=router", serveNetnsConfigEnv + "=" + confB},
		"ip", "netns", "exec", nsB, self, run, "-test.timeout=90s")
	t.Cleanup(func() { router.stop(t, syscall.SIGKILL) })
	if ready, want := router.expect(t, "READY", 15*time.Second), "READY "+privB.Public().String(); ready != want {
		t.Errorf("router reported %q; want %q (its file's public key)", ready, want)
	}

	// --- Node A in nsA: it talks to the app as soon as it is up. ---
	client := interopStart(ctx, t, "client", []string{serveNetnsRoleEnv + "=client", serveNetnsConfigEnv + "=" + confA},
		"ip", "netns", "exec", nsA, self, run, "-test.timeout=90s")
	t.Cleanup(func() { client.stop(t, syscall.SIGKILL) })
	client.expect(t, "READY", 15*time.Second)

	// Each check's line: "<CHECK> OK|ERR <elapsed> <text>".
	result := func(check string) (ok bool, elapsed time.Duration, text string) {
		t.Helper()
		line := client.expect(t, check+" ", 20*time.Second)
		f := strings.SplitN(line, " ", 4)
		if len(f) < 3 {
			t.Fatalf("client's %s line %q is malformed", check, line)
		}
		elapsed, err := time.ParseDuration(f[2])
		if err != nil {
			t.Fatalf("client's %s line %q: %v", check, line, err)
		}
		if len(f) == 4 {
			text = f[3]
		}
		return f[1] == "OK", elapsed, text
	}
	appAddr := func(port int) string { return net.JoinHostPort(serveNetnsApp, strconv.Itoa(port)) }
	// The router dials the app on nsB's host network, so the app sees a
	// host address of nsB (the kernel picks 10.250.0.1 for a local
	// destination), never node A's tunnel address.
	checkSeen := func(what, seen string) {
		t.Helper()
		host, _, err := net.SplitHostPort(seen)
		switch {
		case err != nil:
			t.Errorf("%s: the app's peer %q is not host:port: %v", what, seen, err)
		case host == serveNetnsTunA:
			t.Errorf("%s: the app saw node A's tunnel address %s; want a host address of nsB: the router must dial on its host network", what, seen)
		case host != serveNetnsApp && host != serveNetnsUnderB:
			t.Errorf("%s: the app saw %s; want a host address of nsB (%s or %s)", what, seen, serveNetnsApp, serveNetnsUnderB)
		}
	}

	// 0. The tunnel itself, without the router's serving: without it
	// every check below could only time out.
	if ok, elapsed, text := result("PING"); !ok {
		t.Fatalf("node A cannot ping node B's tunnel address %s (after %v): %s; the tunnel through the serving node is down (see the children's logs: did the handshake complete?), so the serving checks are skipped", serveNetnsTunB, elapsed, text)
	} else {
		t.Logf("tunnel up: ping %s took %v", serveNetnsTunB, elapsed)
	}

	// 1. TCP to the app through the tunnel and the router.
	if ok, elapsed, text := result("TCP"); !ok {
		t.Errorf("node A could not reach the app's TCP server %s through node B's served subnet (after %v): %s", appAddr(serveNetnsTCPPort), elapsed, text)
	} else if seen, found := strings.CutPrefix(text, "app saw "); !found || !strings.HasSuffix(seen, ": hello over tcp") {
		t.Errorf("TCP %s answered %q; want \"app saw <addr>: hello over tcp\"", appAddr(serveNetnsTCPPort), text)
	} else {
		checkSeen("TCP "+appAddr(serveNetnsTCPPort), strings.TrimSuffix(seen, ": hello over tcp"))
		t.Logf("TCP through the served subnet: %v", elapsed)
	}

	// 2. UDP to the app's echo.
	if ok, elapsed, text := result("UDP"); !ok {
		t.Errorf("node A got no echo from the app's UDP echo %s through node B's served subnet (after %v): %s", appAddr(serveNetnsUDPPort), elapsed, text)
	} else if seen, found := strings.CutPrefix(text, "echo from "); !found || !strings.HasSuffix(seen, ": hello over udp") {
		t.Errorf("UDP %s answered %q; want \"echo from <addr>: hello over udp\"", appAddr(serveNetnsUDPPort), text)
	} else {
		checkSeen("UDP "+appAddr(serveNetnsUDPPort), strings.TrimSuffix(seen, ": hello over udp"))
		t.Logf("UDP through the served subnet: %v", elapsed)
	}

	// 3. A closed port of the subnet: the router's host dial is refused,
	// so the peer's SYN gets a RST, at once.
	if ok, elapsed, text := result("REFUSED"); ok {
		t.Errorf("TCP %s, where nothing listens, connected through the router; want connection refused", appAddr(serveNetnsClosed))
	} else if !strings.Contains(text, "connection refused") && !strings.Contains(text, "connection was refused") {
		// (gVisor's words for ECONNREFUSED are "connection was refused".)
		t.Errorf("TCP %s, where nothing listens: %s after %v; want \"connection refused\"", appAddr(serveNetnsClosed), text, elapsed)
	} else if elapsed >= time.Second {
		t.Errorf("TCP %s, where nothing listens, was refused only after %v; want a RST within 1s", appAddr(serveNetnsClosed), elapsed)
	} else {
		t.Logf("closed port refused after %v", elapsed)
	}

	// Both nodes shut down cleanly when their stdin closes.
	for _, p := range []*interopProc{client, router} {
		p.stdin.Close()
		p.expect(t, "CLOSED", 10*time.Second)
		if err := p.wait(10 * time.Second); err != nil {
			t.Errorf("%s child did not exit cleanly: %v", p.name, err)
		}
	}
	t.Logf("whole test, namespaces included: %v", time.Since(start).Round(time.Millisecond))
}

// serveNetnsStart starts the node of the child's file.
func serveNetnsStart(t *testing.T) *sidecar.Node {
	cfg, err := wgconf.ParseFile(os.Getenv(serveNetnsConfigEnv))
	if err != nil {
		t.Fatalf("parse config: %v", err)
	}
	// Debug level: the parent shows a failing child's stderr, and
	// WireGuard's handshake log is then the first thing to read.
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	node, err := sidecar.Start(cfg, sidecar.Options{Logger: log})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	return node
}

func serveNetnsReport(format string, args ...any) { fmt.Printf(interopMark+format+"\n", args...) }

// serveNetnsRouterChild is nsB: node B serving the subnet, and the app on
// nsB's host network, a TCP server answering "app saw <peer>: <line>" and a
// UDP echo answering "echo from <peer>: <datagram>". It stops when its
// stdin closes.
func serveNetnsRouterChild(t *testing.T) {
	ln, err := net.Listen("tcp", net.JoinHostPort(serveNetnsApp, strconv.Itoa(serveNetnsTCPPort)))
	if err != nil {
		t.Fatalf("app: %v", err)
	}
	pc, err := net.ListenPacket("udp", net.JoinHostPort(serveNetnsApp, strconv.Itoa(serveNetnsUDPPort)))
	if err != nil {
		t.Fatalf("app: %v", err)
	}
	testnet.Serve(t, ln, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return
		}
		fmt.Fprintf(c, "app saw %s: %s\n", c.RemoteAddr(), strings.TrimSpace(line))
	})
	testnet.ServePackets(t, pc, func(b []byte, from net.Addr) []byte {
		return fmt.Appendf(nil, "echo from %s: %s", from, b)
	})

	node := serveNetnsStart(t)
	serveNetnsReport("READY %s", node.PublicKey())
	io.Copy(io.Discard, os.Stdin)
	if err := node.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	serveNetnsReport("CLOSED")
}

// serveNetnsClientChild is nsA: node A talks to the app behind node B and
// reports each check as "<CHECK> OK|ERR <elapsed> <text>", then waits for
// its stdin to close.
func serveNetnsClientChild(t *testing.T) {
	node := serveNetnsStart(t)
	serveNetnsReport("READY %s", node.PublicKey())
	check := func(name string, f func() (string, error)) {
		start := time.Now()
		text, err := f()
		elapsed := time.Since(start).Round(time.Microsecond)
		if err != nil {
			serveNetnsReport("%s ERR %v %v", name, elapsed, err)
		} else {
			serveNetnsReport("%s OK %v %s", name, elapsed, text)
		}
	}
	app := func(port int) string { return net.JoinHostPort(serveNetnsApp, strconv.Itoa(port)) }

	// First the tunnel itself: node B's own address answers a ping.
	check("PING", func() (string, error) {
		var errs []string
		for try := 1; try <= 3; try++ {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			rtt, err := node.Ping(ctx, serveNetnsTunB)
			cancel()
			if err == nil {
				return rtt.String(), nil
			}
			errs = append(errs, fmt.Sprintf("try %d: %v", try, err))
		}
		return "", errors.New(strings.Join(errs, "; "))
	})

	check("TCP", func() (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := node.DialContext(ctx, "tcp", app(serveNetnsTCPPort))
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "hello over tcp\n"); err != nil {
			return "", err
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("reading the app's answer: %w", err)
		}
		return strings.TrimSpace(line), nil
	})

	check("UDP", func() (string, error) {
		c, err := node.Dial("udp", app(serveNetnsUDPPort))
		if err != nil {
			return "", err
		}
		defer c.Close()
		// A datagram may be lost; three tries, each waiting a second.
		buf := make([]byte, 2048)
		var errs []string
		for try := 1; try <= 3; try++ {
			if _, err := io.WriteString(c, "hello over udp"); err != nil {
				return "", fmt.Errorf("try %d: write: %w", try, err)
			}
			c.SetReadDeadline(time.Now().Add(time.Second))
			n, err := c.Read(buf)
			if err == nil {
				return string(buf[:n]), nil
			}
			errs = append(errs, fmt.Sprintf("try %d: %v", try, err))
		}
		return "", errors.New(strings.Join(errs, "; "))
	})

	check("REFUSED", func() (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := node.DialContext(ctx, "tcp", app(serveNetnsClosed))
		if err != nil {
			return "", err
		}
		c.Close()
		return "connected", nil
	})

	peers, err := node.Peers()
	for _, p := range peers {
		serveNetnsReport("PEER %s handshake=%v rx=%d tx=%d endpoint=%s", p.PublicKey, !p.LastHandshake.IsZero(), p.RxBytes, p.TxBytes, p.Endpoint)
	}
	if err != nil {
		serveNetnsReport("PEER ERR %v", err)
	}

	io.Copy(io.Discard, os.Stdin)
	if err := node.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	serveNetnsReport("CLOSED")
}
