package systest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/sidecartest"
	"github.com/wgsidecar/sidecar/wgconf"
)

// TestWireproxyStyleFile starts a node from a file in wireproxy's format,
// with every section it has (a WGConfig import of a wg-quick file whose key
// is a $VAR, and our UDP tunnel-to-local besides; [STDIOTunnel] is tested
// with the binary in cmd/sidecar), and sends real
// traffic through each: curl through [Socks5] and [http], a TCP and a UDP
// client through the local-to-tunnel forwards, and the peer through the
// tunnel-to-local ones.
func TestWireproxyStyleFile(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed (Debian package curl)")
	}
	peer := sidecartest.NewNodes(t, 1, sidecartest.Options{})[0] // 10.99.0.1, fd00:99::1
	testnet.ServeHTTP(t, peer, "peer")
	udp, err := peer.ListenPacket("udp", ":7001")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	testnet.ServePackets(t, udp, testnet.UpperDatagram)
	app := testnet.HostServer(t, testnet.SumReply)               // for [TCPServerTunnel]
	udpApp := testnet.HostPacketServer(t, testnet.UpperDatagram) // for [UDPServerTunnel]
	socks, httpPort := testnet.FreePort(t, "tcp"), testnet.FreePort(t, "tcp")
	tcpFwd, udpFwd := testnet.FreePort(t, "tcp"), testnet.FreePort(t, "udp")
	k, _ := wgconf.GeneratePrivateKey()
	// The user's plain wg-quick file, its key from the environment...
	dir := t.TempDir()
	t.Setenv("WGSC_TEST_PRIVATE_KEY", k.Base64())
	wgQuick := fmt.Sprintf(`[Interface]
Address = 10.99.0.5/32, fd00:99::5/128
PrivateKey = $WGSC_TEST_PRIVATE_KEY
DNS = 10.99.0.1

[Peer]
PublicKey = %s
AllowedIPs = 10.99.0.1/32, fd00:99::1/128
Endpoint = 127.0.0.1:%d
`, peer.PublicKey(), peer.ListenPort())
	if err := os.WriteFile(filepath.Join(dir, "wg0.conf"), []byte(wgQuick), 0o600); err != nil {
		t.Fatal(err)
	}
	// ...imported by the wireproxy file with WGConfig.
	file := fmt.Sprintf(`# wireproxy style
WGConfig = wg0.conf

[Socks5]
BindAddress = 127.0.0.1:%d
Username = alice
Password = wonderland

[http]
BindAddress = 127.0.0.1:%d

[TCPClientTunnel]
BindAddress = 127.0.0.1:%d
Target = 10.99.0.1:80

[UDPProxyTunnel]
BindAddress = 127.0.0.1:%d
Target = 10.99.0.1:7001
InactivityTimeout = 30

[TCPServerTunnel]
ListenPort = 8080
Target = %s

[UDPServerTunnel]
ListenPort = 5300
Target = %s

[Resolve]
ResolveStrategy = ipv4
`, socks, httpPort, tcpFwd, udpFwd, app, udpApp)
	path := filepath.Join(dir, "wireproxy.conf")
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := wgconf.ParseFile(path)
	if err != nil {
		t.Fatal(err)
	}
	node, err := sidecar.Start(cfg, sidecar.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	err = peer.SetPeers([]wgconf.Peer{{PublicKey: k.Public(), AllowedIPs: cfg.Interface.Addresses,
		Endpoint: fmt.Sprintf("127.0.0.1:%d", node.ListenPort())}})
	if err != nil {
		t.Fatal(err)
	}

	curl := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("curl", append([]string{"-sS", "--max-time", "20"}, args...)...).CombinedOutput()
		if err != nil {
			t.Errorf("curl %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	for _, url := range []string{"http://10.99.0.1/", "http://[fd00:99::1]/"} {
		if got := curl("--socks5-hostname", fmt.Sprintf("127.0.0.1:%d", socks), "--proxy-user", "alice:wonderland", url); !strings.HasPrefix(got, "peer saw ") {
			t.Errorf("[Socks5] %s: %q", url, got)
		}
		if got := curl("-x", fmt.Sprintf("http://127.0.0.1:%d", httpPort), url); !strings.HasPrefix(got, "peer saw ") {
			t.Errorf("[http] %s: %q", url, got)
		}
	}
	if got := curl(fmt.Sprintf("http://127.0.0.1:%d/", tcpFwd)); !strings.HasPrefix(got, "peer saw 10.99.0.5:") {
		t.Errorf("[TCPClientTunnel]: %q", got)
	}
	c, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", udpFwd))
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("via udp proxy tunnel"))
	buf := make([]byte, 100)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "VIA UDP PROXY TUNNEL" {
		t.Errorf("[UDPProxyTunnel]: %q, %v", buf[:n], err)
	}
	c.Close()

	// The peer reaches the host apps through the tunnel-to-local forwards.
	tc, err := peer.Dial("tcp", "10.99.0.5:8080")
	if err != nil {
		t.Fatal(err)
	}
	testnet.SendAndSum(t, tc, 1<<20)
	uc, err := peer.Dial("udp", "10.99.0.5:5300")
	if err != nil {
		t.Fatal(err)
	}
	uc.SetDeadline(time.Now().Add(10 * time.Second))
	uc.Write([]byte("to the host app"))
	if n, err := uc.Read(buf); err != nil || string(buf[:n]) != "TO THE HOST APP" {
		t.Errorf("[UDPServerTunnel]: %q, %v", buf[:n], err)
	}
	uc.Close()
}
