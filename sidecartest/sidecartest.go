// Package sidecartest starts connected sidecar nodes over loopback for use
// in any go test, in the manner of net/http/httptest: one call gives nodes
// that are up and peered with generated keys, and the test's cleanup closes
// them all.
//
// Set WGSIDECAR_TEST_LOG=debug to see the nodes' logs, WireGuard's included.
//
// Node i has the tunnel addresses Addr4(i) and Addr6(i) and listens for
// WireGuard on 127.0.0.1 at a port the OS picks.
package sidecartest

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"testing"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/netlog"
	"github.com/wgsidecar/sidecar/wgconf"
)

// Options shape the nodes. The zero value builds a full mesh.
type Options struct {
	// Peered reports whether node i has node j as a peer; nil peers every
	// node with every other. The relation need not be symmetric.
	Peered func(i, j int) bool
	// PresharedKeys gives each peered pair a generated pre-shared key.
	PresharedKeys bool
	// Configure, if set, may adjust node i's configuration before it starts
	// (peers are added after start and are not visible here).
	Configure func(i int, cfg *wgconf.Config)
	// Logger for every node; warnings and errors go to the test log when nil.
	Logger *slog.Logger
	// FlowSinks[i], when set, receives node i's flow log (it is node i's
	// sidecar.Options.FlowSink): a *netlog.MemorySink keeps the windows
	// for the test to read, node.CutFlows ends one on demand.
	FlowSinks []netlog.Sink
	// OwnWireGuard runs every node on the module's own WireGuard device
	// (sidecar.Options.OwnWireGuard) instead of wireguard-go's.
	OwnWireGuard bool
	// NodeOptions, if set, may adjust node i's start options (device
	// wrappers, limits, watchdog); Logger, FlowSink and OwnWireGuard are
	// set before it is called.
	NodeOptions func(i int, o *sidecar.Options)
}

// Addr4 is node i's IPv4 tunnel address (10.99.0.i+1).
func Addr4(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 99, 0, byte(i + 1)}) }

// Addr6 is node i's IPv6 tunnel address (fd00:99::i+1).
func Addr6(i int) netip.Addr {
	return netip.AddrFrom16([16]byte{0: 0xfd, 1: 0x00, 2: 0x00, 3: 0x99, 15: byte(i + 1)})
}

// NewPair starts two nodes peered with each other.
func NewPair(t testing.TB) (*sidecar.Node, *sidecar.Node) {
	t.Helper()
	nodes := NewNodes(t, 2, Options{})
	return nodes[0], nodes[1]
}

// NewNodes starts n nodes and peers them as opts says. The nodes are closed
// when the test and its subtests finish.
func NewNodes(t testing.TB, n int, opts Options) []*sidecar.Node {
	t.Helper()
	if n < 1 || n > 250 {
		t.Fatalf("sidecartest: %d nodes; want 1..250", n)
	}
	logger := opts.Logger
	if logger == nil {
		// WGSIDECAR_TEST_LOG=debug (or info, warn, error) sets the level.
		level := slog.LevelWarn
		if v := os.Getenv("WGSIDECAR_TEST_LOG"); v != "" {
			level.UnmarshalText([]byte(v))
		}
		logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: level}))
	}
	keys := make([]wgconf.PrivateKey, n)
	nodes := make([]*sidecar.Node, n)
	for i := range n {
		k, err := wgconf.GeneratePrivateKey()
		if err != nil {
			t.Fatalf("sidecartest: %v", err)
		}
		keys[i] = k
		cfg := &wgconf.Config{Interface: wgconf.Interface{
			PrivateKey: k,
			MTU:        1420,
			Addresses: []netip.Prefix{
				netip.PrefixFrom(Addr4(i), 32),
				netip.PrefixFrom(Addr6(i), 128),
			},
		}}
		if opts.Configure != nil {
			opts.Configure(i, cfg)
		}
		nodeOpts := sidecar.Options{Logger: logger.With("node", i), OwnWireGuard: opts.OwnWireGuard}
		if i < len(opts.FlowSinks) {
			nodeOpts.FlowSink = opts.FlowSinks[i]
		}
		if opts.NodeOptions != nil {
			opts.NodeOptions(i, &nodeOpts)
		}
		node, err := sidecar.Start(cfg, nodeOpts)
		if err != nil {
			t.Fatalf("sidecartest: start node %d: %v", i, err)
		}
		nodes[i] = node
		t.Cleanup(func() { node.Close() })
	}
	psk := map[[2]int]wgconf.PresharedKey{}
	if opts.PresharedKeys {
		for i := range n {
			for j := i + 1; j < n; j++ {
				k, err := wgconf.GeneratePrivateKey()
				if err != nil {
					t.Fatalf("sidecartest: %v", err)
				}
				psk[[2]int{i, j}] = wgconf.PresharedKey(k)
			}
		}
	}
	for i := range n {
		var peers []wgconf.Peer
		for j := range n {
			if i == j || (opts.Peered != nil && !opts.Peered(i, j)) {
				continue
			}
			peers = append(peers, wgconf.Peer{
				PublicKey:    keys[j].Public(),
				PresharedKey: psk[[2]int{min(i, j), max(i, j)}],
				AllowedIPs:   []netip.Prefix{netip.PrefixFrom(Addr4(j), 32), netip.PrefixFrom(Addr6(j), 128)},
				Endpoint:     fmt.Sprintf("127.0.0.1:%d", nodes[j].ListenPort()),
			})
		}
		if err := nodes[i].SetPeers(peers); err != nil {
			t.Fatalf("sidecartest: peer node %d: %v", i, err)
		}
	}
	return nodes
}

// Devices are the WireGuard devices a node can run on, by name:
// wireguard-go's, and the module's own (sidecar.Options.OwnWireGuard, the
// value of Own).
var Devices = []struct {
	Name string
	Own  bool
}{{"wireguard-go", false}, {"wgdev", true}}

// ForEachDevice runs f once per device of Devices, as parallel subtests
// named after the device; own is the OwnWireGuard option (Options or
// sidecar.Options) to start the nodes with. The subtests run when the
// calling test function returns, so a test that checks afterwards (for
// leaked goroutines, say) calls ForEachDevice inside a t.Run of its own
// and checks when that returns.
func ForEachDevice(t *testing.T, f func(t *testing.T, own bool)) {
	for _, d := range Devices {
		t.Run(d.Name, func(t *testing.T) {
			t.Parallel()
			f(t, d.Own)
		})
	}
}
