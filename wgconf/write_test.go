package wgconf

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// roundTrip checks that c, as Parse returned it, survives Marshal: the
// output parses back to an equal config and is stable.
func roundTrip(t testing.TB, c *Config, opts Options) {
	t.Helper()
	out := c.Marshal()
	c2, err := Parse("marshaled.conf", out, opts)
	if err != nil {
		t.Fatalf("Parse(Marshal(c)): %v\n%s", err, out)
	}
	if d := diffConfig(c2, c); len(d) > 0 {
		t.Fatalf("Parse(Marshal(c)) differs from c (-got +want):\n%s\nMarshal:\n%s", strings.Join(d, "\n"), out)
	}
	if out2 := c2.Marshal(); !bytes.Equal(out, out2) {
		t.Fatalf("Marshal is not stable:\n%s\nthen:\n%s", out, out2)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	c := parseGood(t)
	// No environment: Marshal writes the variables' values, escaped.
	roundTrip(t, c, testOptions(nil, nil))
}

func TestMarshalGolden(t *testing.T) {
	// The canonical form of goodConf, fixed so that changes to the format
	// are deliberate.
	want := `[Interface]
PrivateKey = ` + testPriv + `
ListenPort = 51820
FwMark = 0x1234
Address = 10.0.0.2/24, fd00::2/64, 10.0.1.2/32
DNS = 10.0.0.1, fd00::1, corp.example.com, example.net
MTU = 1380
Table = off
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
AllowedIPs = 10.0.0.0/24, fd00::/64, 192.168.10.0/24
Endpoint = vpn.example.com:51820
PersistentKeepalive = 25

[Peer]
PublicKey = ` + testPeer2 + `
AllowedIPs = 10.0.0.3/32
Endpoint = [2001:db8::1]:51821

[Socks5]
BindAddress = 127.0.0.1:1080
Username = $$alice
Password = ` + testSocksPW + `

[http]
BindAddress = 127.0.0.1:3128
Username = bob
Password = "` + testHTTPPW + `"
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
ResolveStrategy = ipv4

[UDPServerTunnel]
ListenPort = 5353
Target = 127.0.0.1:53
InactivityTimeout = 90

[Serve]
Subnets = 192.168.50.0/24, 10.99.0.0/16
Exit = true

[FlowLog]
Window = 10s
NodeID = node-a
Output = -
LogExitFlows = true

[LogStream]
URL = https://collector.example.com/logs
Collection = flows
PrivateID = ` + testStreamID + `
CopyID = ` + testCopyID + `
BufferDir = /var/lib/wgsidecar/buffer
MaxBuffer = 10MB

[Control]
Socket = /run/wgsidecar.sock

[Metrics]
BindAddress = [::1]:9100

[IPFIX]
Collector = flows.example.net:4739
Transport = tcp
ObservationDomain = 42
TemplateRefresh = 60s
Layers = virtual, physical
`
	if got := string(parseGood(t).Marshal()); got != want {
		t.Errorf("Marshal:\n%s\nwant:\n%s", got, want)
	}
}

func TestMarshalQuoting(t *testing.T) {
	for _, s := range []string{
		"plain", "two words", " padded ", "a#b", `"quoted"`, `'single'`, `"open`, `it's "x"`,
		"$VAR", "$$", "$", "${X}", "tab\tinside", "a=b", "semi;colon", `x "a" 'b'`,
	} {
		c := &Config{
			Interface: Interface{PrivateKey: mustPriv(testPriv), Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}},
			Socks5:    []Socks5{{BindAddress: ":1080", Username: s, Password: s}},
		}
		if err := c.Validate(); err != nil {
			t.Errorf("%q: Validate: %v", s, err)
			continue
		}
		c2, err := Parse("", c.Marshal(), testOptions(nil, nil))
		if err != nil {
			t.Errorf("%q: %v\n%s", s, err, c.Marshal())
			continue
		}
		if got := c2.Socks5[0]; got.Username != s || got.Password != s {
			t.Errorf("%q: read back as %q\n%s", s, got.Username, c.Marshal())
		}
	}
	// What cannot be written back is rejected by Validate.
	for _, s := range []string{"line\nbreak", "nul\x00", `both ' and " and #`, `"a" 'b'`} {
		c := &Config{
			Interface: Interface{PrivateKey: mustPriv(testPriv)},
			FlowLog:   &FlowLog{NodeID: s},
		}
		if err := c.Validate(); err == nil {
			t.Errorf("Validate accepted NodeID %q", s)
		}
	}
}

func TestMarshalBuiltInCode(t *testing.T) {
	// Zero values mean defaults: Validate accepts them, Marshal writes the
	// defaults, and the result parses.
	priv, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	peer, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	c := &Config{
		Interface: Interface{PrivateKey: priv, Addresses: []netip.Prefix{netip.MustParsePrefix("fd00::1/128")}},
		Peers:     []Peer{{PublicKey: peer.Public(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("fd00::2/128")}, Endpoint: "127.0.0.1:51820"}},
		Resolve:   &Resolve{},
		FlowLog:   &FlowLog{},
		LogStream: &LogStream{URL: "http://127.0.0.1:1", Collection: "c", PrivateID: testStreamID},
		Metrics:   &Metrics{},
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c2, err := Parse("", c.Marshal(), testOptions(nil, nil))
	if err != nil {
		t.Fatalf("%v\n%s", err, c.Marshal())
	}
	if c2.Interface.MTU != DefaultMTU || c2.FlowLog.Window != DefaultFlowWindow || c2.Metrics.BindAddress != DefaultMetricsAddress ||
		c2.LogStream.MaxBuffer != DefaultMaxBuffer || c2.Resolve.ResolveStrategy != DefaultResolveStrategy {
		t.Errorf("defaults not written: %+v %+v %+v %+v %+v", c2.Interface.MTU, c2.FlowLog, c2.Metrics, c2.LogStream, c2.Resolve)
	}
}

func TestValidateBuiltInCode(t *testing.T) {
	good := func() *Config {
		return &Config{Interface: Interface{PrivateKey: mustPriv(testPriv), Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}}, Peers: []Peer{{PublicKey: mustPub(testPeer1)}, {PublicKey: mustPub(testPeer2)}}}
	}
	if err := good().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		mod  func(c *Config)
		want string
	}{
		{"no private key", func(c *Config) { c.Interface.PrivateKey = PrivateKey{} }, "<config>: PrivateKey: required key is missing (set PrivateKey or PrivateKeyFile) (in [Interface])"},
		{"no address", func(c *Config) { c.Interface.Addresses = nil }, "<config>: Address: required key is missing: the node's own tunnel addresses, e.g. Address = 10.0.0.2/32 (in [Interface])"},
		{"peer without key", func(c *Config) { c.Peers[1].PublicKey = PublicKey{} }, "<config>: PublicKey: required key is missing (in [Peer] #2)"},
		{"duplicate peer", func(c *Config) { c.Peers[1].PublicKey = c.Peers[0].PublicKey }, "<config>: PublicKey: duplicate peer: [Peer] #1 has the same key (in [Peer] #2)"},
		{"bad port", func(c *Config) { c.Path = "x.conf"; c.Interface.ListenPort = -1 }, "x.conf: ListenPort: -1 is out of range 0..65535 (in [Interface])"},
		{"bad keepalive", func(c *Config) { c.Peers[0].PersistentKeepalive = 1 << 16 }, "<config>: PersistentKeepalive: 65536 is out of range 0..65535 (seconds) (in [Peer] #1)"},
		{"bad endpoint", func(c *Config) { c.Peers[0].Endpoint = "x" }, `<config>: Endpoint: "x" is not host:port (write an IPv6 address in brackets) (in [Peer] #1)`},
		{"invalid prefix", func(c *Config) { c.Peers[0].AllowedIPs = []netip.Prefix{{}} }, "<config>: AllowedIPs: entry 1 is not a valid prefix (in [Peer] #1)"},
		{"negative timeout", func(c *Config) {
			c.UDPServerTunnels = []UDPServerTunnel{{ListenPort: 1, Target: "a:1", InactivityTimeout: -time.Second}}
		}, "<config>: InactivityTimeout: -1s is out of range (in [UDPServerTunnel] #1)"},
		{"missing listen port", func(c *Config) { c.TCPServerTunnels = []TCPServerTunnel{{Target: "a:1"}} }, "<config>: ListenPort: required key is missing (1..65535) (in [TCPServerTunnel] #1)"},
		{"hook with #", func(c *Config) { c.Interface.PostUp = []string{"echo # no"} }, "<config>: PostUp: contains '#', which starts a comment (in [Interface])"},
		{"secret not echoed", func(c *Config) { c.HTTP = []HTTPProxy{{BindAddress: ":1", Password: "p\nw"}} }, "<config>: Password: value cannot be written back: contains a control character (in [http] #1)"},
	} {
		c := good()
		tc.mod(c)
		err := c.Validate()
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s: Validate() = %v\n\twant %s", tc.name, err, tc.want)
		}
	}
}

func TestWGQuick(t *testing.T) {
	c := parseGood(t)
	out := c.WGQuick()
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "[") && line != "[Interface]" && line != "[Peer]" {
			t.Errorf("WGQuick wrote section %s", line)
		}
		if strings.HasPrefix(line, "CheckAlive") || strings.Contains(line, "$") {
			t.Errorf("WGQuick wrote %q", line)
		}
	}
	// It re-parses to the same [Interface] and [Peer]s, less wireproxy's
	// CheckAlive keys.
	c2, err := Parse("wg0.conf", out, testOptions(nil, nil))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := &Config{Interface: c.Interface, Peers: c.Peers}
	want.Interface.CheckAlive, want.Interface.CheckAliveInterval = nil, 0
	checkDiff(t, "WGQuick re-parsed", c2, want)
	if len(c2.Warnings) != 7 {
		t.Errorf("re-parsed WGQuick: %d warnings, want 7", len(c2.Warnings))
	}
}
