// Package besideapp checks that the example configuration stays valid.
package besideapp

import (
	"testing"

	"github.com/wgsidecar/sidecar/wgconf"
)

func TestExampleConfigParses(t *testing.T) {
	k, _ := wgconf.GeneratePrivateKey()
	p, _ := wgconf.GeneratePrivateKey()
	t.Setenv("WG_PRIVATE_KEY", k.Base64())
	t.Setenv("WG_PEER_KEY", p.Public().String())
	cfg, err := wgconf.ParseFile("wg0.conf")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Peers) != 1 || len(cfg.TCPClientTunnels) != 1 || len(cfg.TCPServerTunnels) != 1 || cfg.FlowLog == nil {
		t.Errorf("example parsed to %+v", cfg)
	}
}
