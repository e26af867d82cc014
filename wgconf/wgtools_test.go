package wgconf

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wgsidecar/sidecar/internal/wggo"
)

// TestWGTools feeds WGQuick's output to the real wireguard-tools: `wg-quick
// strip` must accept it, and `wg setconf` must apply the stripped file to
// a user-space WireGuard interface (wireguard-go) in a network namespace
// of the test's own. The interface is never brought up and its namespace
// has only a loopback that is down, so nothing is sent anywhere.
func TestWGTools(t *testing.T) {
	if why := wggo.Missing("wg-quick"); why != "" {
		t.Skip(why)
	}

	c := parseGood(t)
	// wg setconf resolves host names; keep to IP literals.
	c.Peers[0].Endpoint = "127.0.0.1:51820"
	c.Peers[1].Endpoint = "[::1]:51821"

	// Names unique to this process: /var/run/wireguard is shared by all.
	id := os.Getpid() % 1_000_000
	ifname := fmt.Sprintf("wgcf%d", id) // at most 10 of the 15 characters allowed
	netns := fmt.Sprintf("wgconf-test-%d", id)

	dir := t.TempDir()
	// wg-quick wants the file named after a valid interface name.
	conf := filepath.Join(dir, ifname+".conf")
	if err := os.WriteFile(conf, c.WGQuick(), 0o600); err != nil {
		t.Fatal(err)
	}
	stripped := run(t, "wg-quick", "strip", conf)
	for _, gone := range []string{"Address", "DNS", "MTU", "Table", "SaveConfig", "PreUp", "PostUp", "PreDown", "PostDown"} {
		if strings.Contains(stripped, gone+" =") {
			t.Errorf("wg-quick strip kept %s:\n%s", gone, stripped)
		}
	}
	strippedFile := filepath.Join(dir, "stripped.conf")
	if err := os.WriteFile(strippedFile, []byte(stripped), 0o600); err != nil {
		t.Fatal(err)
	}

	run(t, "ip", "netns", "add", netns)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", netns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", netns, err, out)
		}
	})

	wggo.Start(t, netns, ifname)

	run(t, "ip", "netns", "exec", netns, "wg", "setconf", ifname, strippedFile)
	shown := run(t, "ip", "netns", "exec", netns, "wg", "showconf", ifname)
	for _, want := range []string{
		"ListenPort = 51820",
		"FwMark = 0x1234",
		"PublicKey = " + testPeer1,
		"PublicKey = " + testPeer2,
		"PresharedKey = " + testPSK,
		"Endpoint = 127.0.0.1:51820",
		"Endpoint = [::1]:51821",
		"PersistentKeepalive = 25",
		"AllowedIPs = 10.0.0.0/24, fd00::/64, 192.168.10.0/24",
	} {
		if !strings.Contains(shown, want) {
			t.Errorf("wg showconf lacks %q:\n%s", want, shown)
		}
	}

	// And what wg showconf prints is a valid sidecar [Interface]/[Peer].
	// wg-quick strip removes Address; a sidecar needs it back.
	withAddr := strings.Replace(shown, "[Interface]\n", "[Interface]\nAddress = 10.0.0.1/32\n", 1)
	back, err := Parse("showconf", []byte(withAddr), testOptions(nil, nil))
	if err != nil {
		t.Fatalf("Parse(wg showconf): %v", err)
	}
	if back.Interface.PrivateKey != c.Interface.PrivateKey || len(back.Peers) != 2 {
		t.Errorf("wg showconf parsed to %+v", back)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}
