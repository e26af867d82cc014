package wgconf

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Test keys (from wg genkey / wg genpsk) and stream IDs.
const (
	testPriv     = "kNH1TGDZC+AdefOEQcts3GlPUIuRwMrS7cSJZBiZg3Y="
	testPub      = "UHxMj8GpVbnlSMCeIUxoafLspl8wgFmrfb7++r4ruw4=" // of testPriv
	testPeer1    = "IwuuyRi5Ig2j8fjhw7CaP2SaTZgyh6nkGbPMIREOZHM="
	testPeer2    = "rGfGTVVgpc4RX1K3wh2BcqQgS/AK9c/bvKwSt+6hCVI="
	testPSK      = "kl7EbFkIGHK58DGbb+jFL3vFx/8Ze632FVsLKH+J+/Y="
	testPSK2     = "Wjkkw3TSzlwZYE1rQ6IwVjdaj7PjSSK6XSoqX7m2xfA="
	testStreamID = "47ef4ac0a625d86a989f6340f959d8889995cc4f0449daee0731fdef4e273d8c"
	testCopyID   = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	testSocksPW  = "s0cks-Secret!"
	testHTTPPW   = "pa#ss word"
)

// goodConf uses every wg-quick key, every wireproxy section and every
// sidecar section, in mixed case, with comments of both kinds, quotes,
// variables and repeated list keys.
const goodConf = `# A sidecar config: wg-quick, wireproxy and sidecar sections.
; a full-line semicolon comment
[Interface]
PrivateKey = ` + testPriv + `
ListenPort = 51820
Address = 10.0.0.2/24, fd00::2/64
address = 10.0.1.2            # a bare IP is a /32
DNS = 10.0.0.1, fd00::1, corp.example.com
DNS = example.net
MTU = 1380
Table = off
FwMark = 0x1234
SaveConfig = true
PreUp = echo pre-up; logger "going up"
PostUp = iptables -A FORWARD -i %i -j ACCEPT
PostUp = echo second
PreDown = echo pre-down
PostDown = echo post-down
CheckAlive = 10.0.0.1, fd00::1
CheckAliveInterval = 10

[Peer]
PublicKey = ` + testPeer1 + `
PresharedKey = ` + testPSK + `
AllowedIPs = 10.0.0.0/24, fd00::/64
AllowedIPs = 192.168.10.0/24
Endpoint = vpn.example.com:51820
PersistentKeepalive = 25

[peer] # lower case, as wg(8) allows
publickey = ` + testPeer2 + `
AllowedIPs = 10.0.0.3
Endpoint = [2001:db8::1]:51821
PersistentKeepalive = off

[Socks5]
BindAddress = 127.0.0.1:1080
Username = "$$alice"
Password = $SOCKS_PASSWORD

[http]
BindAddress = 127.0.0.1:3128
Username = bob
Password = "` + testHTTPPW + `"   # quoted: keeps its '#'
CertFile = /etc/ssl/proxy.crt
KeyFile = /etc/ssl/proxy.key

[SNI]
BindAddress = :8443

[TCPClientTunnel]
BindAddress = 127.0.0.1:25565
Target = play.example.org:25565

[TCPServerTunnel]
ListenPort = 3422
Target = localhost:25545

[UDPProxyTunnel]
BindAddress = 127.0.0.1:5353
Target = 1.1.1.1:53
InactivityTimeout = 30

[STDIOTunnel]
Target = ssh.example.org:22

[Resolve]
ResolveStrategy = IPv4

[UDPServerTunnel]
ListenPort = 5353
Target = 127.0.0.1:53
InactivityTimeout = 1m30s

[Serve]
Subnets = 192.168.50.0/24, 10.99.7.1/16
Exit = true

[FlowLog]
Window = 10s
NodeID = node-a
Output = -
LogExitFlows = yes

[LogStream]
URL = https://collector.example.com/logs
Collection = flows
PrivateID = ${STREAM_ID}
CopyID = ` + testCopyID + `
BufferDir = /var/lib/wgsidecar/buffer
MaxBuffer = 10MB

[Control]
Socket = /run/wgsidecar.sock

[Metrics]
BindAddress = [::1]:9100

[ipfix]
Collector = flows.example.net:4739
Transport = TCP
ObservationDomain = 42
TemplateRefresh = 1m
Layers = virtual, Physical
`

var goodEnv = map[string]string{
	"SOCKS_PASSWORD": testSocksPW,
	"STREAM_ID":      testStreamID + "\n", // values are trimmed
}

func mustPriv(s string) PrivateKey {
	k, err := ParsePrivateKey(s)
	if err != nil {
		panic(err)
	}
	return k
}

func mustPub(s string) PublicKey {
	k, err := ParsePublicKey(s)
	if err != nil {
		panic(err)
	}
	return k
}

func mustPSK(s string) PresharedKey {
	k, err := ParsePresharedKey(s)
	if err != nil {
		panic(err)
	}
	return k
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

// goodWant is what goodConf parses to (Path and Warnings aside).
func goodWant() *Config {
	return &Config{
		Interface: Interface{
			PrivateKey: mustPriv(testPriv),
			ListenPort: 51820,
			MTU:        1380,
			Addresses:  prefixes("10.0.0.2/24", "fd00::2/64", "10.0.1.2/32"),
			DNS:        addrs("10.0.0.1", "fd00::1"),
			DNSSearch:  []string{"corp.example.com", "example.net"},
			Table:      "off",
			FwMark:     "0x1234",
			SaveConfig: true,
			PreUp:      []string{`echo pre-up; logger "going up"`},
			PostUp:     []string{"iptables -A FORWARD -i %i -j ACCEPT", "echo second"},
			PreDown:    []string{"echo pre-down"},
			PostDown:   []string{"echo post-down"},
			CheckAlive: addrs("10.0.0.1", "fd00::1"),

			CheckAliveInterval: 10,
		},
		Peers: []Peer{{
			PublicKey:           mustPub(testPeer1),
			PresharedKey:        mustPSK(testPSK),
			AllowedIPs:          prefixes("10.0.0.0/24", "fd00::/64", "192.168.10.0/24"),
			Endpoint:            "vpn.example.com:51820",
			PersistentKeepalive: 25,
		}, {
			PublicKey:  mustPub(testPeer2),
			AllowedIPs: prefixes("10.0.0.3/32"),
			Endpoint:   "[2001:db8::1]:51821",
		}},
		Socks5: []Socks5{{BindAddress: "127.0.0.1:1080", Username: "$alice", Password: testSocksPW}},
		HTTP: []HTTPProxy{{
			BindAddress: "127.0.0.1:3128", Username: "bob", Password: testHTTPPW,
			CertFile: "/etc/ssl/proxy.crt", KeyFile: "/etc/ssl/proxy.key",
		}},
		SNI:              []SNIProxy{{BindAddress: ":8443"}},
		TCPClientTunnels: []TCPClientTunnel{{BindAddress: "127.0.0.1:25565", Target: "play.example.org:25565"}},
		TCPServerTunnels: []TCPServerTunnel{{ListenPort: 3422, Target: "localhost:25545"}},
		UDPProxyTunnels:  []UDPProxyTunnel{{BindAddress: "127.0.0.1:5353", Target: "1.1.1.1:53", InactivityTimeout: 30 * time.Second}},
		STDIOTunnels:     []STDIOTunnel{{Target: "ssh.example.org:22"}},
		Resolve:          &Resolve{ResolveStrategy: "ipv4"},
		UDPServerTunnels: []UDPServerTunnel{{ListenPort: 5353, Target: "127.0.0.1:53", InactivityTimeout: 90 * time.Second}},
		Serve:            &Serve{Subnets: prefixes("192.168.50.0/24", "10.99.0.0/16"), Exit: true},
		FlowLog:          &FlowLog{Window: 10 * time.Second, NodeID: "node-a", Output: "-", LogExitFlows: true},
		LogStream: &LogStream{
			URL: "https://collector.example.com/logs", Collection: "flows",
			PrivateID: testStreamID, CopyID: testCopyID,
			BufferDir: "/var/lib/wgsidecar/buffer", MaxBuffer: 10_000_000,
		},
		Control: &Control{Socket: "/run/wgsidecar.sock"},
		Metrics: &Metrics{BindAddress: "[::1]:9100"},
		IPFIX: &IPFIX{
			Collector: "flows.example.net:4739", Transport: "tcp", ObservationDomain: 42,
			TemplateRefresh: time.Minute, Layers: []string{"virtual", "physical"},
		},
	}
}

// testFiles is an in-memory file system for Options.ReadFile.
type testFiles map[string]string

func (tf testFiles) ReadFile(name string) ([]byte, error) {
	s, ok := tf[name]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return []byte(s), nil
}

func testOptions(env map[string]string, files testFiles) Options {
	return Options{
		LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok },
		ReadFile:  files.ReadFile,
	}
}

func parseGood(t testing.TB) *Config {
	t.Helper()
	c, err := Parse("good.conf", []byte(goodConf), testOptions(goodEnv, nil))
	if err != nil {
		t.Fatalf("Parse(goodConf): %v", err)
	}
	return c
}

// diffConfig lists the differences between two configs, field by field,
// ignoring Path and Warnings.
func diffConfig(got, want *Config) []string {
	g, w := *got, *want
	g.Path, w.Path, g.Warnings, w.Warnings = "", "", nil, nil
	g.pos, w.pos = nil, nil
	var out []string
	diffValue("Config", reflect.ValueOf(g), reflect.ValueOf(w), &out)
	return out
}

func diffValue(path string, got, want reflect.Value, out *[]string) {
	if reflect.DeepEqual(got.Interface(), want.Interface()) {
		return
	}
	switch got.Kind() {
	case reflect.Struct:
		if got.Type().PkgPath() == "net/netip" {
			break
		}
		for i := range got.NumField() {
			if !got.Type().Field(i).IsExported() {
				continue // Parse's record of positions
			}
			diffValue(path+"."+got.Type().Field(i).Name, got.Field(i), want.Field(i), out)
		}
		return
	case reflect.Pointer:
		if !got.IsNil() && !want.IsNil() {
			diffValue(path, got.Elem(), want.Elem(), out)
			return
		}
	case reflect.Slice:
		if got.Len() == want.Len() && !got.IsNil() && !want.IsNil() {
			for i := range got.Len() {
				diffValue(fmt.Sprintf("%s[%d]", path, i), got.Index(i), want.Index(i), out)
			}
			return
		}
	}
	*out = append(*out, fmt.Sprintf("%s:\n\tgot  %s\n\twant %s", path, show(got), show(want)))
}

// show prints a value for a diff; test keys are shown in hex.
func show(v reflect.Value) string {
	if (v.Kind() == reflect.Slice || v.Kind() == reflect.Pointer) && v.IsNil() {
		return "nil"
	}
	switch x := v.Interface().(type) {
	case PrivateKey:
		return "PrivateKey(" + x.Hex() + ")"
	case PresharedKey:
		return "PresharedKey(" + x.Hex() + ")"
	case Socks5, HTTPProxy, *LogStream:
		return fmt.Sprintf("%+v (secrets redacted)", x)
	}
	return fmt.Sprintf("%+v", v.Interface())
}

func checkDiff(t *testing.T, what string, got, want *Config) {
	t.Helper()
	if d := diffConfig(got, want); len(d) > 0 {
		t.Errorf("%s differs (-got +want):\n%s", what, strings.Join(d, "\n"))
	}
}

func TestParseGood(t *testing.T) {
	c := parseGood(t)
	if c.Path != "good.conf" {
		t.Errorf("Path = %q, want good.conf", c.Path)
	}
	checkDiff(t, "parsed config", c, goodWant())

	// One warning per ignored key and per hook key (PostUp twice: once).
	wantWarn := []string{
		"good.conf:11: Table: accepted and ignored",
		"good.conf:12: FwMark: accepted and ignored",
		"good.conf:13: SaveConfig: accepted and ignored",
		"good.conf:14: PreUp: never executed",
		"good.conf:15: PostUp: never executed",
		"good.conf:17: PreDown: never executed",
		"good.conf:18: PostDown: never executed",
	}
	var gotWarn []string
	for _, w := range c.Warnings {
		gotWarn = append(gotWarn, w.String())
	}
	if !reflect.DeepEqual(gotWarn, wantWarn) {
		t.Errorf("warnings:\n\tgot  %q\n\twant %q", gotWarn, wantWarn)
	}
}

func TestParseLineEndings(t *testing.T) {
	for name, text := range map[string]string{
		"CRLF":         strings.ReplaceAll(goodConf, "\n", "\r\n"),
		"BOM":          "\ufeff" + goodConf,
		"no final EOL": strings.TrimSuffix(goodConf, "\n"),
		"indented":     strings.ReplaceAll(goodConf, "\n", "\n  \t"),
	} {
		t.Run(name, func(t *testing.T) {
			c, err := Parse("good.conf", []byte(text), testOptions(goodEnv, nil))
			if err != nil {
				t.Fatal(err)
			}
			checkDiff(t, "parsed config", c, goodWant())
		})
	}
}

// minimal is the smallest valid config; tests append sections to it.
const minimal = "[Interface]\nPrivateKey = " + testPriv + "\n"

// runnable is minimal with the Address a node needs: the smallest config
// that passes validation (bad cases use minimal, since the missing
// Address is checked after everything else).
const runnable = minimal + "Address = 10.0.0.1/32\n"

func TestParseDefaults(t *testing.T) {
	c, err := Parse("", []byte(runnable+`[Peer]
PublicKey = `+testPeer1+`
[Resolve]
[FlowLog]
[LogStream]
URL = http://127.0.0.1:8080
Collection = c
PrivateID = `+testStreamID+`
[Control]
[Metrics]
[Serve]
[IPFIX]
Collector = 127.0.0.1:4739
`), testOptions(nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Interface: Interface{PrivateKey: mustPriv(testPriv), MTU: DefaultMTU, Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}},
		Peers:     []Peer{{PublicKey: mustPub(testPeer1)}},
		Resolve:   &Resolve{ResolveStrategy: "auto"},
		FlowLog:   &FlowLog{Window: 5 * time.Second},
		LogStream: &LogStream{URL: "http://127.0.0.1:8080", Collection: "c", PrivateID: testStreamID, MaxBuffer: 64 << 20},
		Control:   &Control{},
		Metrics:   &Metrics{BindAddress: "127.0.0.1:9586"},
		Serve:     &Serve{},
		IPFIX:     &IPFIX{Collector: "127.0.0.1:4739", Transport: "udp", TemplateRefresh: 10 * time.Minute, Layers: []string{"virtual", "subnet", "exit"}},
	}
	checkDiff(t, "defaults", c, want)
	if len(c.Warnings) != 0 {
		t.Errorf("unexpected warnings %v", c.Warnings)
	}

	c, err = Parse("", []byte(runnable+"CheckAlive = 10.0.0.1\n"), testOptions(nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Interface.CheckAliveInterval != DefaultCheckAliveInterval {
		t.Errorf("CheckAliveInterval = %d, want %d", c.Interface.CheckAliveInterval, DefaultCheckAliveInterval)
	}
}

func TestParseValues(t *testing.T) {
	env := map[string]string{"V": "from-env", "EMPTY": ""}
	for _, tc := range []struct{ line, want string }{
		{`NodeID = plain`, "plain"},
		{`NodeID = two words  # comment`, "two words"},
		{`NodeID = "  padded  "`, "  padded  "},
		{`NodeID = 'has "double" quotes'`, `has "double" quotes`},
		{`NodeID = "a # b" # comment`, "a # b"},
		{`NodeID = "unclosed`, `"unclosed`},
		{`NodeID = it's`, "it's"},
		{`NodeID = a;b`, "a;b"},
		{`NodeID = x=y`, "x=y"},
		{`NodeID = $V`, "from-env"},
		{`NodeID = ${V}`, "from-env"},
		{`NodeID = "$V"`, "from-env"},
		{`NodeID = $$V`, "$V"},
		{`NodeID = $$$V`, "$$V"},
		{`NodeID = cost$V`, "cost$V"},
		{`nodeid=tight`, "tight"},
		{"NodeID\t=\ttabs\t", "tabs"},
	} {
		c, err := Parse("", []byte(runnable+"[FlowLog]\n"+tc.line+"\n"), testOptions(env, nil))
		if err != nil {
			t.Errorf("%s: %v", tc.line, err)
			continue
		}
		if got := c.FlowLog.NodeID; got != tc.want {
			t.Errorf("%s: NodeID = %q, want %q", tc.line, got, tc.want)
		}
	}
}

func TestParseSizesAndDurations(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"1", 1}, {"512B", 512}, {"10MB", 10e6}, {"64MiB", 64 << 20}, {"1GiB", 1 << 30},
		{"1 gib", 1 << 30}, {"2k", 2048}, {"3kB", 3000}, {"1TiB", 1 << 40},
	} {
		n, err := parseSize(tc.in)
		if err != nil || n != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", tc.in, n, err, tc.want)
		}
		if back, err := parseSize(formatSize(n)); err != nil || back != n {
			t.Errorf("parseSize(formatSize(%d) = %q) = %d, %v", n, formatSize(n), back, err)
		}
	}
	for _, bad := range []string{"", "MiB", "-1", "1.5MiB", "12 parsecs", "99999999999TiB"} {
		if n, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) = %d, want error", bad, n)
		}
	}
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"30", 30 * time.Second}, {"0", 0}, {"1m30s", 90 * time.Second}, {"250ms", 250 * time.Millisecond}, {"1h", time.Hour},
	} {
		var d time.Duration
		if err := setDuration(&d, tc.in, true); err != nil || d != tc.want {
			t.Errorf("setDuration(%q) = %v, %v; want %v", tc.in, d, err, tc.want)
		}
	}
}

// badCase is a config that Parse must reject with an error at file:line,
// about key.
type badCase struct {
	name    string
	text    string
	file    string // error's File; "test.conf" when empty
	line    int
	key     string
	msg     string   // the message must contain this
	secrets []string // the message must not contain these
}

// Fragments used by the bad cases.
const (
	peer1 = "[Peer]\nPublicKey = " + testPeer1 + "\n"
	// key31 is 31 bytes in 44 characters of base64, key33 is 33 bytes.
	key31 = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHw=="
	key33 = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAh"
)

var badCases = []badCase{
	{name: "bad private key", text: "[Interface]\nPrivateKey = not-a-key\n", line: 2, key: "PrivateKey", msg: "not a valid key", secrets: []string{"not-a-key"}},
	{name: "31-byte private key", text: "[Interface]\nPrivateKey = " + key31 + "\n", line: 2, key: "PrivateKey", msg: "not a valid key", secrets: []string{key31, "AQIDBAUG"}},
	{name: "33-byte private key", text: "[Interface]\nPrivateKey = " + key33 + "\n", line: 2, key: "PrivateKey", secrets: []string{key33, "AQIDBAUG"}},
	{name: "all-zero private key", text: "[Interface]\nPrivateKey = AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", line: 2, key: "PrivateKey", msg: "all-zero"},
	{name: "bad public key", text: minimal + "[Peer]\nPublicKey = " + testPeer1[:40] + "\n", line: 4, key: "PublicKey", msg: "not a valid key"},
	{name: "bad preshared key", text: minimal + peer1 + "PresharedKey = " + key31 + "\n", line: 5, key: "PresharedKey", secrets: []string{key31, "AQIDBAUG"}},
	{name: "missing private key", text: "# x\n[Interface]\nListenPort = 1\n", line: 2, key: "PrivateKey", msg: "required key is missing"},
	{name: "missing [Interface]", text: peer1, line: 0, key: "", msg: "no [Interface] section"},
	{name: "peer without public key", text: minimal + peer1 + "\n[Peer]\nAllowedIPs = 10.0.0.9/32\n", line: 6, key: "PublicKey", msg: "required key is missing"},
	{name: "duplicate peer public key", text: minimal + peer1 + "[Peer]\nAllowedIPs = 10.0.0.9/32\nPublicKey = " + testPeer1 + "\n", line: 7, key: "PublicKey", msg: "duplicate peer: [Peer] at test.conf:3"},
	{name: "peer is self", text: minimal + "[Peer]\nPublicKey = " + testPub + "\n", line: 4, key: "PublicKey", msg: "own public key"},
	{name: "no Address", text: minimal, line: 1, key: "Address", msg: "required key is missing"},
	{name: "bad Address", text: minimal + "Address = 10.0.0.300/24\n", line: 3, key: "Address", msg: `"10.0.0.300/24" is not an IP prefix`},
	{name: "Address with zone", text: minimal + "Address = fe80::1%eth0\n", line: 3, key: "Address", msg: "zone"},
	{name: "bad AllowedIPs entry", text: minimal + peer1 + "AllowedIPs = 10.0.0.0/24, 10.0.1.0/33\n", line: 5, key: "AllowedIPs", msg: `"10.0.1.0/33"`},
	{name: "ListenPort out of range", text: minimal + "ListenPort = 65536\n", line: 3, key: "ListenPort", msg: "65536 is out of range 0..65535"},
	{name: "ListenPort not a number", text: minimal + "ListenPort = 51820a\n", line: 3, key: "ListenPort", msg: "not an integer"},
	{name: "MTU too small", text: minimal + "MTU = 575\n", line: 3, key: "MTU", msg: "out of range 576..65535"},
	{name: "MTU zero", text: minimal + "MTU = 0\n", line: 3, key: "MTU", msg: "out of range"},
	{name: "MTU too large", text: minimal + "MTU = 65536\n", line: 3, key: "MTU", msg: "out of range"},
	{name: "MTU too small for IPv6", text: minimal + "MTU = 1279\nAddress = 10.0.0.2/32, fd00::2/128\n", line: 3, key: "MTU", msg: "minimum for IPv6"},
	{name: "Endpoint without port", text: minimal + peer1 + "Endpoint = vpn.example.com\n", line: 5, key: "Endpoint", msg: "not host:port"},
	{name: "Endpoint port 0", text: minimal + peer1 + "Endpoint = 10.0.0.1:0\n", line: 5, key: "Endpoint", msg: "port must be a number from 1 to 65535"},
	{name: "Endpoint unbracketed IPv6", text: minimal + peer1 + "Endpoint = 2001:db8::1:51820\n", line: 5, key: "Endpoint", msg: "brackets"},
	{name: "bad PersistentKeepalive", text: minimal + peer1 + "PersistentKeepalive = often\n", line: 5, key: "PersistentKeepalive", msg: "not an integer"},
	{name: "PersistentKeepalive out of range", text: minimal + peer1 + "PersistentKeepalive = 65536\n", line: 5, key: "PersistentKeepalive", msg: "out of range"},
	{name: "unknown key", text: minimal + "Frobnicate = yes\n", line: 3, key: "Frobnicate", msg: "unknown key in [Interface]"},
	{name: "key of another section", text: minimal + "Endpoint = 10.0.0.1:51820\n", line: 3, key: "Endpoint", msg: "unknown key in [Interface] (it belongs in [Peer])"},
	{name: "unknown section", text: minimal + "\n[Bogus]\nKey = 1\n", line: 4, key: "[Bogus]", msg: "unknown section"},
	{name: "key outside section", text: "PrivateKey = " + testPriv + "\n" + minimal, line: 1, key: "PrivateKey", msg: "outside any section", secrets: []string{testPriv}},
	{name: "pasted key line", text: minimal + testPSK + "\n", line: 3, key: "", msg: "malformed line", secrets: []string{testPSK[:20]}},
	{name: "malformed line", text: minimal + "just some words\n", line: 3, msg: "malformed line"},
	{name: "malformed section header", text: minimal + "[Peer\n", line: 3, msg: "malformed section header"},
	{name: "duplicate PrivateKey", text: minimal + "PrivateKey = " + testPriv + "\n", line: 3, key: "PrivateKey", msg: "duplicate key (first set at line 2)", secrets: []string{testPriv}},
	{name: "PrivateKeyFile with PrivateKey", text: minimal + "PrivateKeyFile = key\n", line: 3, key: "PrivateKeyFile", msg: "conflicts with PrivateKey at line 2"},
	{name: "duplicate ListenPort", text: minimal + "ListenPort = 1\nlistenport = 2\n", line: 4, key: "ListenPort", msg: "duplicate key"},
	{name: "duplicate [Interface]", text: minimal + "[Interface]\n", line: 3, key: "[Interface]", msg: "duplicate section (first at test.conf:1)"},
	{name: "duplicate [Resolve]", text: minimal + "[Resolve]\n[resolve]\n", line: 4, key: "[Resolve]", msg: "duplicate section"},
	{name: "unset variable", text: minimal + "[Socks5]\nBindAddress = 127.0.0.1:1080\nPassword = $NOPE\n", line: 5, key: "Password", msg: "environment variable NOPE is not set"},
	{name: "unset braced variable", text: "[Interface]\nPrivateKey = ${WG_KEY}\n", line: 2, key: "PrivateKey", msg: "WG_KEY is not set"},
	{name: "malformed variable", text: minimal + "[Socks5]\nBindAddress = 127.0.0.1:1080\nPassword = $ecret!\n", line: 5, key: "Password", msg: "malformed variable reference", secrets: []string{"ecret"}},
	{name: "missing PrivateKeyFile", text: "[Interface]\nPrivateKeyFile = /nonexistent/wg.key\n", line: 2, key: "PrivateKeyFile", msg: "open /nonexistent/wg.key: file does not exist"},
	{name: "bad key in PrivateKeyFile", text: "[Interface]\nPrivateKeyFile = bad.key\n", line: 2, key: "PrivateKeyFile", msg: "not a valid key", secrets: []string{key31, "AQIDBAUG"}},
	{name: "bad key in PresharedKeyFile", text: minimal + peer1 + "PresharedKeyFile = bad.key\n", line: 5, key: "PresharedKeyFile", msg: "not a valid key", secrets: []string{key31, "AQIDBAUG"}},
	{name: "bad duration", text: minimal + "[UDPProxyTunnel]\nBindAddress = :53\nTarget = 1.1.1.1:53\nInactivityTimeout = 5 parsecs\n", line: 6, key: "InactivityTimeout", msg: "not a duration"},
	{name: "negative duration", text: minimal + "[UDPServerTunnel]\nListenPort = 53\nTarget = 127.0.0.1:53\nInactivityTimeout = -5s\n", line: 6, key: "InactivityTimeout", msg: "negative"},
	{name: "zero Window", text: minimal + "[FlowLog]\nWindow = 0\n", line: 4, key: "Window", msg: "more than 0"},
	{name: "bad boolean", text: minimal + "[Serve]\nExit = maybe\n", line: 4, key: "Exit", msg: `"maybe" is not a boolean`},
	{name: "bad Subnets", text: minimal + "[Serve]\nSubnets = 10.0.0.0/8, lan\n", line: 4, key: "Subnets", msg: `"lan" is not an IP address`},
	{name: "WGConfig missing file", text: "WGConfig = wg0.conf\n[Socks5]\nBindAddress = :1080\n", line: 1, key: "WGConfig", msg: "open wg0.conf: file does not exist"},
	{name: "WGConfig file with an error", text: "# import\nWGConfig = bad-wg0.conf\n", file: "bad-wg0.conf", line: 4, key: "PublicKey", msg: "not a valid key"},
	{name: "WGConfig file without [Interface]", text: "WGConfig = peers-only.conf\n", file: "peers-only.conf", line: 0, msg: "no [Interface] section"},
	{name: "WGConfig file with a wireproxy section", text: "WGConfig = socks.conf\n", file: "socks.conf", line: 3, key: "[Socks5]", msg: "not allowed in a wg-quick file"},
	{name: "WGConfig and [Interface]", text: "WGConfig = good-wg0.conf\n" + minimal, line: 2, key: "[Interface]", msg: "WGConfig at test.conf:1 already imports"},
	{name: "WGConfig after a section", text: minimal + "WGConfig = wg0.conf\n", line: 3, key: "WGConfig", msg: "must come before the first [Section]"},
	{name: "duplicate WGConfig", text: "WGConfig = good-wg0.conf\nWGConfig = good-wg0.conf\n", line: 2, key: "WGConfig", msg: "duplicate key"},
	{name: "CheckAliveInterval without CheckAlive", text: minimal + "CheckAliveInterval = 5\n", line: 3, key: "CheckAliveInterval", msg: "only valid when CheckAlive is set"},
	{name: "bad FwMark", text: minimal + "FwMark = mark\n", line: 3, key: "FwMark", msg: "not a firewall mark"},
	{name: "DNS that looks like an IP", text: minimal + "DNS = 1.2.3\n", line: 3, key: "DNS", msg: `"1.2.3" is not an IP address`},
	{name: "bad search domain", text: minimal + "DNS = bad..domain\n", line: 3, key: "DNS", msg: "search domain"},
	{name: "text after closing quote", text: minimal + "[FlowLog]\nNodeID = \"a\" b\n", line: 4, key: "NodeID", msg: "after the closing quote"},
	{name: "empty value", text: minimal + "ListenPort =\n", line: 3, key: "ListenPort", msg: "not an integer"},
	{name: "Socks5 without BindAddress", text: minimal + "[Socks5]\nUsername = u\n", line: 3, key: "BindAddress", msg: "required key is missing"},
	{name: "bad BindAddress", text: minimal + "[http]\nBindAddress = localhost\n", line: 4, key: "BindAddress", msg: "not host:port"},
	{name: "CertFile without KeyFile", text: minimal + "[http]\nBindAddress = :3128\nCertFile = c.pem\n", line: 5, key: "CertFile", msg: "KeyFile is required"},
	{name: "tunnel without Target", text: minimal + "[TCPClientTunnel]\nBindAddress = :25565\n", line: 3, key: "Target", msg: "required key is missing"},
	{name: "duplicate tunnel ListenPort", text: minimal + "[TCPServerTunnel]\nListenPort = 80\nTarget = a:80\n[TCPServerTunnel]\nListenPort = 80\nTarget = b:80\n", line: 7, key: "ListenPort", msg: "80 is already used by [TCPServerTunnel] at test.conf:3"},
	{name: "UDPServerTunnel port 0", text: minimal + "[UDPServerTunnel]\nListenPort = 0\nTarget = 127.0.0.1:53\n", line: 4, key: "ListenPort", msg: "0 is out of range 1..65535"},
	{name: "bad ResolveStrategy", text: minimal + "[Resolve]\nResolveStrategy = ipv5\n", line: 4, key: "ResolveStrategy", msg: `"ipv5" is not one of`},
	{name: "LogStream without URL", text: minimal + "[LogStream]\nCollection = c\n", line: 3, key: "URL", msg: "required key is missing"},
	{name: "LogStream bad URL", text: minimal + "[LogStream]\nURL = ftp://x\n", line: 4, key: "URL", msg: "not an http:// or https:// URL"},
	{name: "LogStream bad PrivateID", text: minimal + "[LogStream]\nURL = http://c\nCollection = c\nPrivateID = " + testStreamID[:63] + "\n", line: 6, key: "PrivateID", msg: "64 hex digits", secrets: []string{testStreamID[:63]}},
	{name: "bad MaxBuffer", text: minimal + "[LogStream]\nMaxBuffer = lots\n", line: 4, key: "MaxBuffer", msg: "not a size"},
	{name: "bad Metrics BindAddress", text: minimal + "[Metrics]\nBindAddress = 127.0.0.1:99999\n", line: 4, key: "BindAddress", msg: "port must be a number"},
	{name: "IPFIX without Collector", text: minimal + "[IPFIX]\nTransport = udp\n", line: 3, key: "Collector", msg: "required key is missing"},
	{name: "IPFIX Collector port 0", text: minimal + "[IPFIX]\nCollector = 127.0.0.1:0\n", line: 4, key: "Collector", msg: "port must be a number from 1 to 65535"},
	{name: "IPFIX Collector without port", text: minimal + "[IPFIX]\nCollector = flows.example.net\n", line: 4, key: "Collector", msg: "not host:port"},
	{name: "IPFIX unknown layer", text: minimal + "[IPFIX]\nCollector = 127.0.0.1:4739\nLayers = virtual, wire\n", line: 5, key: "Layers", msg: `"wire" is not one of virtual, subnet, exit, physical`},
	{name: "IPFIX bad Transport", text: minimal + "[IPFIX]\nCollector = 127.0.0.1:4739\nTransport = sctp\n", line: 5, key: "Transport", msg: `"sctp" is not one of udp, tcp`},
	{name: "IPFIX ObservationDomain 0", text: minimal + "[IPFIX]\nCollector = 127.0.0.1:4739\nObservationDomain = 0\n", line: 5, key: "ObservationDomain", msg: "not a number from 1 to 4294967295"},
	{name: "IPFIX ObservationDomain too large", text: minimal + "[IPFIX]\nCollector = 127.0.0.1:4739\nObservationDomain = 4294967296\n", line: 5, key: "ObservationDomain", msg: "not a number from 1"},
	{name: "IPFIX TemplateRefresh 0", text: minimal + "[IPFIX]\nCollector = 127.0.0.1:4739\nTemplateRefresh = 0\n", line: 5, key: "TemplateRefresh", msg: "must be more than 0"},
	{name: "control character from env", text: minimal + "[FlowLog]\nNodeID = $CTRL\n", line: 4, key: "NodeID", msg: "control character"},
}

// badFiles are the files the bad cases import or read, next to test.conf.
var badFiles = testFiles{
	"bad-wg0.conf":    "[Interface]\nPrivateKey = " + testPriv + "\n[Peer]\nPublicKey = nope\n",
	"peers-only.conf": peer1,
	"good-wg0.conf":   minimal,
	"socks.conf":      minimal + "[Socks5]\nBindAddress = :1080\n",
	"bad.key":         key31 + "\n",
}

var badEnv = map[string]string{"CTRL": "a\x01b"}

func TestParseBad(t *testing.T) {
	if len(badCases) < 18 {
		t.Fatalf("only %d bad cases", len(badCases))
	}
	for _, tc := range badCases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("test.conf", []byte(tc.text), testOptions(badEnv, badFiles))
			if err == nil {
				t.Fatalf("Parse succeeded, want an error; config:\n%s", c.Marshal())
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is a %T, want *Error", err, err)
			}
			file := tc.file
			if file == "" {
				file = "test.conf"
			}
			if e.File != file || e.Line != tc.line || e.Key != tc.key {
				t.Errorf("error at %q line %d key %q, want %q line %d key %q\n\t%v", e.File, e.Line, e.Key, file, tc.line, tc.key, err)
			}
			prefix := location(file, tc.line, tc.key)
			if msg := err.Error(); !strings.HasPrefix(msg, prefix) || !strings.Contains(msg, tc.msg) {
				t.Errorf("error %q, want prefix %q and containing %q", msg, prefix, tc.msg)
			}
			for _, s := range append(tc.secrets, testPriv, testPSK, testStreamID) {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q contains the secret %q", err, s)
				}
			}
		})
	}
}

func TestParseFileErrors(t *testing.T) {
	_, err := ParseFile("/nonexistent/sidecar.conf")
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ParseFile of a missing file: %v (%T), want an *Error wrapping fs.ErrNotExist", err, err)
	}
	if want := "/nonexistent/sidecar.conf: no such file or directory"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}

func TestParseImports(t *testing.T) {
	files := testFiles{
		"/etc/wgsidecar/wg0.conf": "[Interface]\nPrivateKeyFile = keys/wg0.key\nTable = off\nAddress = 10.0.0.1/32\n" +
			"[Peer]\nPublicKey = " + testPeer1 + "\nPresharedKeyFile = /run/secrets/psk\n",
		"/etc/wgsidecar/keys/wg0.key": "  " + testPriv + "\n\n",
		"/run/secrets/psk":            testPSK2,
		"/etc/wgsidecar/stream.id":    testStreamID + "\n",
	}
	main := "# wireproxy style\nWGConfig = wg0.conf\n\n[Socks5]\nBindAddress = 127.0.0.1:1080\n" +
		"[LogStream]\nURL = https://c.example\nCollection = x\nPrivateIDFile = stream.id\n"
	c, err := Parse("/etc/wgsidecar/main.conf", []byte(main), testOptions(nil, files))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Interface: Interface{PrivateKey: mustPriv(testPriv), MTU: DefaultMTU, Table: "off", Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}},
		Peers:     []Peer{{PublicKey: mustPub(testPeer1), PresharedKey: mustPSK(testPSK2)}},
		Socks5:    []Socks5{{BindAddress: "127.0.0.1:1080"}},
		LogStream: &LogStream{URL: "https://c.example", Collection: "x", PrivateID: testStreamID, MaxBuffer: DefaultMaxBuffer},
	}
	checkDiff(t, "imported config", c, want)
	wantWarn := []Warning{{File: "/etc/wgsidecar/wg0.conf", Line: 3, Key: "Table", Msg: msgIgnored}}
	if !reflect.DeepEqual(c.Warnings, wantWarn) {
		t.Errorf("warnings %v, want %v", c.Warnings, wantWarn)
	}
	// A missing Address is named in the file that holds [Interface] (#15:
	// sidecar check refuses what up cannot run).
	files["/etc/wgsidecar/wg0.conf"] = "[Interface]\nPrivateKeyFile = keys/wg0.key\n[Peer]\nPublicKey = " + testPeer1 + "\n"
	_, err = Parse("/etc/wgsidecar/main.conf", []byte(main), testOptions(nil, files))
	if want := "/etc/wgsidecar/wg0.conf:1: Address: required key is missing"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %v, want prefix %q", err, want)
	}
	// The imported file's problems name it and its line.
	files["/etc/wgsidecar/wg0.conf"] = "[Interface]\nPrivateKeyFile = keys/wg0.key\n[Peer]\nPublicKey = " + testPeer1 + "\nEndpoint = nowhere\n"
	_, err = Parse("/etc/wgsidecar/main.conf", []byte(main), testOptions(nil, files))
	if want := "/etc/wgsidecar/wg0.conf:5: Endpoint: "; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %v, want prefix %q", err, want)
	}
}

// wireproxySample is wireproxy's README sample, unchanged.
const wireproxySample = `[Interface]
Address = 10.200.200.2/32 # The subnet should be /32 and /128 for IPv4 and v6 respectively
# MTU = 1420 (optional)
PrivateKey = uCTIK+56CPyCvwJxmU5dBfuyJvPuSXAq1FzHdnIxe1Q=
# PrivateKey = $MY_WIREGUARD_PRIVATE_KEY # Alternatively, reference environment variables
DNS = 10.200.200.1

[Peer]
PublicKey = QP+A67Z2UBrMgvNIdHv8gPel5URWNLS4B3ZQ2hQIZlg=
# PresharedKey = UItQuvLsyh50ucXHfjF0bbR4IIpVBd74lwKc8uIPXXs= (optional)
Endpoint = my.ddns.example.com:51820
# PersistentKeepalive = 25 (optional)

[TCPClientTunnel]
BindAddress = 127.0.0.1:25565
Target = play.cubecraft.net:25565

[TCPServerTunnel]
ListenPort = 3422
Target = localhost:25545

[STDIOTunnel]
Target = ssh.myserver.net:22

[Socks5]
BindAddress = 127.0.0.1:25344
#Username = ...
#Password = ...

[http]
BindAddress = 127.0.0.1:25345

[SNI]
BindAddress = 0.0.0.0:443

[UDPProxyTunnel]
BindAddress = 127.0.0.1:53
Target = 1.1.1.1:53
InactivityTimeout = 30 # If its set to 0, it will never timeout

[Resolve]
ResolveStrategy = auto 
`

func TestParseWireproxyExample(t *testing.T) {
	c, err := Parse("wireproxy.conf", []byte(wireproxySample), testOptions(nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(c.TCPClientTunnels) + len(c.TCPServerTunnels) + len(c.STDIOTunnels) + len(c.Socks5) + len(c.HTTP) + len(c.SNI) + len(c.UDPProxyTunnels); got != 7 {
		t.Errorf("got %d wireproxy routines, want 7", got)
	}
	if c.UDPProxyTunnels[0].InactivityTimeout != 30*time.Second || c.Resolve.ResolveStrategy != "auto" {
		t.Errorf("UDPProxyTunnel %+v, Resolve %+v", c.UDPProxyTunnels[0], c.Resolve)
	}
}
