package main

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wgsidecar/sidecar/wgconf"
)

// TestCheckNeedsAddress: `sidecar check` refuses a file that `up` could
// not run, naming the file, the [Interface] line and the key (#15).
func TestCheckNeedsAddress(t *testing.T) {
	k, _ := wgconf.GeneratePrivateKey()
	f := writeFile(t, "noaddr.conf", fmt.Sprintf("# no address\n[Interface]\nPrivateKey = %s\n", k.Base64()))
	for _, verb := range []string{"check", "up"} {
		code, _, stderr := runCmd(t, "", verb, "-c", f)
		if want := f + ":2: Address: required key is missing"; code != 1 || !strings.Contains(stderr, want) {
			t.Errorf("%s: exit %d, stderr %q; want it to contain %q", verb, code, stderr, want)
		}
	}
}

// TestUpRefusalsNameFileLineKey: what `up` refuses at start-up, past
// parsing (a port taken, an output that cannot be opened), names the
// file, line and key as a parse error does.
func TestUpRefusalsNameFileLineKey(t *testing.T) {
	k, _ := wgconf.GeneratePrivateKey()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenUDP, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer takenUDP.Close()
	udpPort := takenUDP.LocalAddr().(*net.UDPAddr).Port
	dir := t.TempDir()
	head := fmt.Sprintf("[Interface]\nPrivateKey = %s\nAddress = 10.5.0.1/32\n", k.Base64()) // lines 1-3
	for _, tc := range []struct {
		name, body, want string
	}{
		{"forward port taken", "[Control]\nSocket = " + filepath.Join(dir, "a.sock") + "\n[TCPClientTunnel]\nTarget = 10.5.0.2:80\nBindAddress = " + taken.Addr().String() + "\n",
			":8: BindAddress: "},
		{"socks port taken", "[Control]\nSocket = " + filepath.Join(dir, "b.sock") + "\n[Socks5]\nBindAddress = " + taken.Addr().String() + "\n",
			":7: BindAddress: "},
		{"metrics port taken", "[Control]\nSocket = " + filepath.Join(dir, "c.sock") + "\n[Metrics]\nBindAddress = " + taken.Addr().String() + "\n",
			":7: BindAddress: "},
		{"flow log output", "[Control]\nSocket = " + filepath.Join(dir, "d.sock") + "\n[FlowLog]\nOutput = " + filepath.Join(dir, "no", "such", "dir", "flows") + "\n",
			":7: Output: "},
		{"listen port taken", fmt.Sprintf("ListenPort = %d\n[Control]\nSocket = %s\n", udpPort, filepath.Join(dir, "e.sock")),
			":4: ListenPort: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := writeFile(t, "up.conf", head+tc.body)
			code, _, stderr := runCmd(t, "", "up", "-c", f)
			if want := f + tc.want; code != 1 || !strings.Contains(stderr, want) {
				t.Errorf("up: exit %d, stderr %q; want it to contain %q", code, stderr, want)
			}
		})
	}
}
