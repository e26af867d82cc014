package sidecar_test

import (
	"testing"
)

// devices are the WireGuard devices a node can run on: wireguard-go's, and
// the module's own (sidecar.Options.OwnWireGuard).
var devices = []struct {
	name string
	own  bool
}{{"wireguard-go", false}, {"wgdev", true}}

// forEachDevice runs f once per device, as parallel subtests named after
// the device. They run when the calling test function returns, so a test
// that checks for leaked goroutines calls forEachDevice inside a t.Run of
// its own and checks after that returns.
func forEachDevice(t *testing.T, f func(t *testing.T, own bool)) {
	for _, d := range devices {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			f(t, d.own)
		})
	}
}
