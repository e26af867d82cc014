// Package systest holds the module's system tests: those that need root,
// network namespaces or external programs (wireguard-go, wg, ip, ping,
// curl, nft), and check the sidecar against them. Each skips itself when
// what it needs is missing. It has no code of its own beyond this comment.
//
// The namespace tests run their own test binary again inside the
// namespaces they create (os.Executable with -test.run naming the test,
// and an environment variable naming the child's role), so they work from
// whichever package holds them. Run them as root:
//
//	go test -race ./internal/systest/
package systest
