package systest

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/internal/testnet"
)

// Ports of the forwards test (TestInteropKernelWireGuard/Forwards). The
// sidecar's file has a [TCPServerTunnel] from interopFwdPort on its tunnel
// addresses to an app on nsA's loopback (interopLocalAppPort), another from
// interopFwdRefusedPort to a loopback port nothing listens on, and a
// [Socks5] proxy on nsA's loopback. The kernel side serves HTTP on
// interopKernelHTTPPort.
const (
	interopFwdPort        = 9000
	interopFwdRefusedPort = 9001
	interopLocalAppPort   = 9090 // in nsA, 127.0.0.1: the local app
	interopClosedPort     = 9091 // in nsA, 127.0.0.1: nothing listens
	interopSocksPort      = 1080 // in nsA, 127.0.0.1: the sidecar's SOCKS5 proxy
	interopKernelHTTPPort = 8081 // in nsB, [::]: HTTP on the kernel's stack
)

// interopForwardSections is the part of the sidecar's file that the
// forwards test needs: two tunnel-to-local forwards (one to a closed port)
// and a SOCKS5 proxy, as a wireproxy user would write them.
func interopForwardSections() string {
	return fmt.Sprintf(`
[TCPServerTunnel]
ListenPort = %d
Target = 127.0.0.1:%d

[TCPServerTunnel]
ListenPort = %d
Target = 127.0.0.1:%d

[Socks5]
BindAddress = 127.0.0.1:%d
`, interopFwdPort, interopLocalAppPort, interopFwdRefusedPort, interopClosedPort, interopSocksPort)
}

// interopHTTPHandler serves the interop tests' HTTP endpoints, for the
// sidecar's tunnel port 80, the local app in nsA and the kernel side's
// server in nsB alike: "/" answers
// "<who> saw <peer address>", /big is interopBigBody, and /upload answers
// "<who> got <n> <sha256>" of the request body.
func interopHTTPHandler(who string) http.Handler {
	big := interopBigBody()
	mux := http.NewServeMux()
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) { w.Write(big) })
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%s got %d %x\n", who, n, h.Sum(nil))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "%s saw %s\n", who, r.RemoteAddr) })
	return mux
}

// interopServeHTTP serves interopHTTPHandler(who) on addr in this process
// (a child of the interop test) and returns the function that stops it.
func interopServeHTTP(t *testing.T, who, addr string) (stop func()) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("%s: listen %s: %v", who, addr, err)
	}
	srv := &http.Server{Handler: interopHTTPHandler(who), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	return func() { srv.Close(); <-done }
}

// interopForwardEnv is what interopForwards needs of the world
// TestInteropKernelWireGuard built.
type interopForwardEnv struct {
	nsA, nsB string
	dir      string
}

// interopForwards checks the sidecar's forwards against the independent
// peer:
//
//   - tunnel-to-local: the kernel's curl in nsB reaches an app on nsA's
//     loopback (run by the sidecar child, but on nsA's host network, not
//     the tunnel) through [TCPServerTunnel] port interopFwdPort on the
//     sidecar's tunnel addresses, both families, a 1 MiB body each way; a
//     forward whose target refuses is refused to the kernel at once (curl:
//     "Couldn't connect", exit 7, well within a second);
//   - SOCKS5: the real curl in nsA, through the sidecar's [Socks5] on nsA's
//     loopback, reaches the HTTP server on the kernel's stack in nsB, which
//     sees the connection come from the sidecar's tunnel address.
func interopForwards(ctx context.Context, t *testing.T, env interopForwardEnv) {
	big := interopBigBody()
	bigSum := sha256.Sum256(big)
	upload := filepath.Join(env.dir, "forward-upload.bin")
	if err := os.WriteFile(upload, big, 0o600); err != nil {
		t.Fatal(err)
	}
	// curl runs curl in ns (URLs unglobbed, 10 s at most) and returns its
	// stdout, its stderr, its exit code (-1 when it did not run) and how
	// long it took.
	curl := func(t *testing.T, ns string, args ...string) (stdout []byte, stderr string, code int, took time.Duration) {
		t.Helper()
		r := testnet.CurlIn(ctx, t, ns, 10*time.Second, append([]string{"-g"}, args...)...)
		return r.Stdout, r.Stderr, r.Code, r.Took
	}

	t.Run("TunnelToLocal", func(t *testing.T) {
		for _, host := range []string{interopTunA4, "[" + interopTunA6 + "]"} {
			base := "http://" + host + ":" + strconv.Itoa(interopFwdPort)
			// The app is dialed on nsA's loopback, so it sees a loopback
			// peer: the answer can only have come from that app.
			out, errs, code, took := curl(t, env.nsB, base+"/")
			if want := "local app saw 127.0.0.1:"; code != 0 || !strings.HasPrefix(string(out), want) {
				t.Errorf("kernel side's curl %s/ through the tunnel-to-local forward: exit %d, %q %s; want the local app's answer starting %q", base, code, out, errs, want)
			} else {
				t.Logf("curl %s/ (nsB) = %q in %v", base, strings.TrimSpace(string(out)), took.Round(time.Millisecond))
			}
			out, errs, code, took = curl(t, env.nsB, base+"/big")
			if code != 0 || sha256.Sum256(out) != bigSum {
				t.Errorf("kernel side's curl %s/big through the forward: exit %d, %d bytes (want the app's %d) %s", base, code, len(out), len(big), errs)
			} else {
				t.Logf("curl %s/big (nsB): 1 MiB from the local app in %v", base, took.Round(time.Millisecond))
			}
			out, errs, code, took = curl(t, env.nsB, "-H", "Expect:", "--data-binary", "@"+upload, base+"/upload")
			if want := fmt.Sprintf("local app got %d %x\n", len(big), bigSum); code != 0 || string(out) != want {
				t.Errorf("kernel side's upload of 1 MiB to %s/upload through the forward: exit %d, the app answered %q %s; want %q", base, code, out, errs, want)
			} else {
				t.Logf("curl --data-binary %s/upload (nsB): 1 MiB to the local app in %v", base, took.Round(time.Millisecond))
			}
		}
	})

	t.Run("TunnelToLocalRefused", func(t *testing.T) {
		for _, host := range []string{interopTunA4, "[" + interopTunA6 + "]"} {
			url := "http://" + host + ":" + strconv.Itoa(interopFwdRefusedPort) + "/"
			// -v for the reason of the failure: curl 7.88 says only
			// "Couldn't connect to server" (exit 7) without it, the same
			// for a RST and an ICMP unreachable.
			out, errs, code, took := curl(t, env.nsB, "-v", "--connect-timeout", "5", url)
			var why []string
			for _, l := range strings.Split(errs, "\n") {
				if strings.Contains(l, "failed: ") {
					why = append(why, strings.TrimSpace(l))
				}
			}
			// Exit 7 (Couldn't connect) with "Connection refused": the
			// kernel's SYN got a RST, as the target was dialed before the
			// handshake was answered. Accepting first and closing after
			// would be exit 52 (empty reply); a lost SYN, exit 28.
			if code != 7 || !strings.Contains(errs, "Connection refused") {
				t.Errorf("kernel side's curl %s (forward to a closed port): exit %d, %q\n%s\nwant exit 7 and \"Connection refused\"", url, code, out, errs)
			} else if took > time.Second {
				t.Errorf("kernel side's curl %s (forward to a closed port) was refused only after %v; want at once (< 1s)", url, took)
			} else {
				t.Logf("curl %s (nsB): exit 7 in %v: %s", url, took.Round(time.Millisecond), strings.Join(why, " / "))
			}
		}
	})

	t.Run("Socks5", func(t *testing.T) {
		socks := "127.0.0.1:" + strconv.Itoa(interopSocksPort)
		for _, c := range []struct {
			flag, host, from string
		}{
			// --socks5-hostname hands the proxy the URL's host (curl
			// 7.88 sends an IP literal as a name); --socks5 sends
			// an address (ATYP IPv4).
			{"--socks5-hostname", interopTunB4, interopTunA4},
			{"--socks5-hostname", "[" + interopTunB6 + "]", "[" + interopTunA6 + "]"},
			{"--socks5", interopTunB4, interopTunA4},
		} {
			url := "http://" + c.host + ":" + strconv.Itoa(interopKernelHTTPPort) + "/"
			out, errs, code, took := curl(t, env.nsA, c.flag, socks, url)
			// The kernel's server sees the sidecar's tunnel address: the
			// request went through the tunnel, not the veth.
			if want := "kernel http saw " + c.from + ":"; code != 0 || !strings.HasPrefix(string(out), want) {
				t.Errorf("curl %s %s %s in %s: exit %d, %q %s; want the kernel side's answer starting %q", c.flag, socks, url, env.nsA, code, out, errs, want)
			} else {
				t.Logf("curl %s %s %s (nsA) = %q in %v", c.flag, socks, url, strings.TrimSpace(string(out)), took.Round(time.Millisecond))
			}
		}
		url := "http://" + interopTunB4 + ":" + strconv.Itoa(interopKernelHTTPPort)
		out, errs, code, took := curl(t, env.nsA, "--socks5-hostname", socks, url+"/big")
		if code != 0 || sha256.Sum256(out) != bigSum {
			t.Errorf("curl --socks5-hostname %s %s/big in %s: exit %d, %d bytes (want the kernel side's %d) %s", socks, url, env.nsA, code, len(out), len(big), errs)
		} else {
			t.Logf("curl --socks5-hostname %s/big (nsA): 1 MiB from the kernel side in %v", url, took.Round(time.Millisecond))
		}
		out, errs, code, took = curl(t, env.nsA, "--socks5-hostname", socks, "-H", "Expect:", "--data-binary", "@"+upload, url+"/upload")
		if want := fmt.Sprintf("kernel http got %d %x\n", len(big), bigSum); code != 0 || string(out) != want {
			t.Errorf("curl --socks5-hostname %s --data-binary %s/upload in %s: exit %d, %q %s; want %q", socks, url, env.nsA, code, out, errs, want)
		} else {
			t.Logf("curl --socks5-hostname --data-binary %s/upload (nsA): 1 MiB to the kernel side in %v", url, took.Round(time.Millisecond))
		}
	})
}
