package wgconf

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

func TestNeedRestart(t *testing.T) {
	base := func() *Config {
		return &Config{
			Interface: Interface{ListenPort: 51820, MTU: 1420, Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}},
			Peers:     []Peer{{PublicKey: PublicKey{1}}},
			FlowLog:   &FlowLog{Window: 5 * time.Second},
			Control:   &Control{Socket: "/run/a.sock"},
		}
	}
	for _, c := range []struct {
		name   string
		change func(*Config)
		want   []string
	}{
		{"nothing", func(*Config) {}, nil},
		{"peers and forwards apply live", func(c *Config) {
			c.Peers = nil
			c.Socks5 = []Socks5{{BindAddress: "127.0.0.1:1080"}}
		}, nil},
		{"listen port", func(c *Config) { c.Interface.ListenPort = 1 }, []string{"[Interface]"}},
		{"an address", func(c *Config) { c.Interface.Addresses = nil }, []string{"[Interface]"}},
		{"DNS", func(c *Config) { c.Interface.DNS = []netip.Addr{netip.MustParseAddr("10.0.0.53")} }, []string{"[Interface]"}},
		{"flow log window and metrics", func(c *Config) {
			c.FlowLog.Window = time.Second
			c.Metrics = &Metrics{}
		}, []string{"[FlowLog]", "[Metrics]"}},
		{"control dropped: the binary adds a default", func(c *Config) { c.Control = nil }, nil},
		{"control moved", func(c *Config) { c.Control = &Control{Socket: "/run/b.sock"} }, []string{"[Control]"}},
		{"serve", func(c *Config) { c.Serve = &Serve{Exit: true} }, []string{"[Serve]"}},
		{"ipfix added", func(c *Config) { c.IPFIX = &IPFIX{Collector: "127.0.0.1:4739"} }, []string{"[IPFIX]"}},
	} {
		next := base()
		c.change(next)
		if got := NeedRestart(base(), next); !slices.Equal(got, c.want) {
			t.Errorf("%s: NeedRestart = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestTunnelRoutesAndInactive(t *testing.T) {
	c := &Config{Interface: Interface{Addresses: []netip.Prefix{
		netip.MustParsePrefix("10.0.0.1/24"), netip.MustParsePrefix("fd00::1/128"),
	}}}
	peers := []Peer{{AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16"), netip.MustParsePrefix("fd00::2/128")}}}
	got := c.TunnelRoutes(peers)
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("10.9.0.0/16"), netip.MustParsePrefix("fd00::2/128")}
	if !slices.Equal(got, want) {
		t.Errorf("TunnelRoutes = %v, want %v (own /24 masked, own /128 left out, peers' AllowedIPs)", got, want)
	}
	if r := (&Config{}).TunnelRoutes(nil); r == nil || len(r) != 0 {
		t.Errorf("no routes: %#v, want an empty, non-nil list", r)
	}
	if got := c.Inactive(); len(got) != 0 {
		t.Errorf("Inactive = %v", got)
	}
	c.Interface.CheckAlive = []netip.Addr{netip.MustParseAddr("10.0.0.2")}
	c.SNI = []SNIProxy{{}}
	if got := c.Inactive(); !slices.Equal(got, []string{"[SNI]", "[Interface] CheckAlive"}) {
		t.Errorf("Inactive = %v", got)
	}
}
