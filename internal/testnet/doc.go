// Package testnet is test support only, for the module's own tests: the
// small servers, clients and data a test of any package needs (accept
// loops and echo servers, HTTP on a node's tunnel port, free ports, a
// pseudo-random stream, real curl, the two-namespace underlay of the
// system tests). Nothing outside tests may import it.
//
// Each helper takes the test's testing.TB, fails it on a setup error and
// cleans up what it started with t.Cleanup: servers stop, their
// connections close and their goroutines end before the cleanups
// registered earlier run (so leaktest sees none left).
//
// It depends on the standard library and on netlog (for SumCounts) only,
// not on the sidecar's node: any package's tests may use it, except the
// internal tests of netlog and of what netlog imports.
package testnet
