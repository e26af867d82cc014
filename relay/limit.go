package relay

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync"
)

// Dialer is what the proxies and forwards need from a node; package
// sidecar's *Node satisfies it. DialContext reaches an address through the
// tunnel, resolving host names itself (through the tunnel's DNS, for a
// node); LookupNetIP resolves a name, e.g. for a SOCKS5 UDP datagram; and
// ListenPacket("udp", ":0") opens a UDP socket on the node's tunnel
// address.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
	ListenPacket(network, address string) (net.PacketConn, error)
}

// DefaultMaxConns bounds the concurrent connections (UDP: sessions or
// flows) of a proxy or forward whose config leaves its limit zero.
const DefaultMaxConns = 1024

// Limiter is the bookkeeping of one proxy or forward: it counts the
// connections open against a maximum, keeps the connections and sockets
// that Close must end, and counts the goroutines Close must wait for. Its
// methods are safe for concurrent use.
type Limiter struct {
	max int

	mu       sync.Mutex
	open     int    // places taken by Admit and not yet given back
	accepted uint64 // admissions in all, less those cancelled
	refused  int    // refusals in the current burst
	closed   bool
	held     map[io.Closer]struct{} // closed by Close
	wg       sync.WaitGroup         // goroutines Close waits for
}

// NewLimiter returns a Limiter for at most max open connections;
// DefaultMaxConns when max <= 0.
func NewLimiter(max int) *Limiter {
	if max <= 0 {
		max = DefaultMaxConns
	}
	return &Limiter{max: max, held: map[io.Closer]struct{}{}}
}

// Max returns the limit.
func (l *Limiter) Max() int { return l.max }

// Admit takes a place for one more connection, or reports false when Max
// are open already. A refusal starts or extends a burst, which the next
// admission ends. refused is the number of refusals in the burst: after a
// refusal, this one included (1 for the first, the one a caller logs);
// after an admission, those of the burst it ended (0 when none).
func (l *Limiter) Admit() (ok bool, refused int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open >= l.max {
		l.refused++
		return false, l.refused
	}
	l.open++
	l.accepted++
	refused, l.refused = l.refused, 0
	return true, refused
}

// Release gives back a place that Admit took.
func (l *Limiter) Release() {
	l.mu.Lock()
	l.open--
	l.mu.Unlock()
}

// Cancel gives back a place that Admit took for a connection that never
// opened (its target could not be dialed): unlike Release, it is not
// counted as accepted.
func (l *Limiter) Cancel() {
	l.mu.Lock()
	l.open--
	l.accepted--
	l.mu.Unlock()
}

// Counts reports the places taken now and the admissions since the
// Limiter was made.
func (l *Limiter) Counts() (open int, accepted uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open, l.accepted
}

// Hold registers c to be closed by Close. It reports false, having closed
// c, once Close has begun.
func (l *Limiter) Hold(c io.Closer) bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		c.Close()
		return false
	}
	l.held[c] = struct{}{}
	l.mu.Unlock()
	return true
}

// Unhold forgets c; the caller closes it.
func (l *Limiter) Unhold(c io.Closer) {
	l.mu.Lock()
	delete(l.held, c)
	l.mu.Unlock()
}

// Enter counts a goroutine that Close must wait for, or reports false once
// Close has begun. A true result must be matched by Done.
func (l *Limiter) Enter() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.wg.Add(1)
	return true
}

// Done ends the count that Enter began.
func (l *Limiter) Done() { l.wg.Done() }

// Go runs f in a goroutine that Close waits for, or reports false, not
// running f, once Close has begun.
func (l *Limiter) Go(f func()) bool {
	if !l.Enter() {
		return false
	}
	go func() {
		defer l.wg.Done()
		f()
	}()
	return true
}

// Closed reports whether Close has begun.
func (l *Limiter) Closed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// Close refuses what is held or entered from now on, closes everything
// held, and waits for every goroutine entered. Only the first call closes;
// every call waits.
func (l *Limiter) Close() {
	l.mu.Lock()
	l.closed = true
	held := l.held
	l.held = map[io.Closer]struct{}{}
	l.mu.Unlock()
	for c := range held {
		c.Close()
	}
	l.wg.Wait()
}
