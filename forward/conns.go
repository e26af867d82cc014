// Package forward owns the port forwards between the host network and the
// tunnel, both ways, and serving peers as a subnet router or exit node:
// local-to-tunnel (a host port relays to a tunnel address), tunnel-to-local
// (a port on the node's tunnel address relays to a host app) and served
// destinations (a peer's packets for a non-local address in an offered
// prefix are dialed on the host network).
//
// It relays bytes and datagrams; it knows nothing of WireGuard, counting or
// logging, and of gVisor only through package netstack's requests.
package forward

import (
	"errors"
	"io"
	"sync"
	"syscall"
)

// refused reports whether err means the target actively refused (RST or
// ICMP unreachable), as opposed to a timeout.
func refused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH)
}

// conns tracks the live connections of a forward so Close can end them.
// The zero value is ready for use.
type conns struct {
	mu     sync.Mutex
	set    map[io.Closer]struct{}
	closed bool
	wg     sync.WaitGroup
}

// add registers c; it reports false (and closes c) once the set is closed.
func (cs *conns) add(c io.Closer) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.closed {
		c.Close()
		return false
	}
	if cs.set == nil {
		cs.set = map[io.Closer]struct{}{}
	}
	cs.set[c] = struct{}{}
	return true
}

func (cs *conns) remove(c io.Closer) {
	cs.mu.Lock()
	delete(cs.set, c)
	cs.mu.Unlock()
}

func (cs *conns) len() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.set)
}

// closeAll closes every live connection, refuses new ones, and waits for
// the goroutines counted in wg.
func (cs *conns) closeAll() {
	cs.mu.Lock()
	cs.closed = true
	for c := range cs.set {
		c.Close()
	}
	cs.mu.Unlock()
	cs.wg.Wait()
}
