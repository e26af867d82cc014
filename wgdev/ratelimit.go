package wgdev

import (
	"net/netip"
	"sync"
	"time"
)

// The handshake rate limit under load: each source (an IPv4 address, or
// an IPv6 /64) may have limitRate handshake messages a second handled,
// with bursts of limitBurst, once mac2 has proved it owns its address.
// wireguard-go limits alike.
const (
	limitRate  = 20
	limitBurst = 5
	limitIdle  = time.Second // a source unheard of this long is forgotten
)

// limiter is the token buckets of the sources heard from while under
// load. Safe for concurrent use.
type limiter struct {
	mu    sync.Mutex
	seen  map[netip.Prefix]*bucket
	swept time.Time // when idle buckets were last dropped
}

// bucket holds a source's credit in time: each message costs
// time.Second/limitRate of it, and it grows with the time that passes, up
// to limitBurst messages' worth.
type bucket struct {
	credit time.Duration
	last   time.Time
}

// allow reports whether a handshake message from src may be handled now,
// and takes its cost when it may.
func (l *limiter) allow(src netip.Addr, now time.Time) bool {
	const cost = time.Second / limitRate
	key := sourceKey(src)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen = map[netip.Prefix]*bucket{}
	}
	if now.Sub(l.swept) >= limitIdle {
		l.sweep(now)
	}
	b, ok := l.seen[key]
	if !ok {
		b = &bucket{credit: limitBurst * cost, last: now}
		l.seen[key] = b
	}
	b.credit = min(b.credit+max(now.Sub(b.last), 0), limitBurst*cost)
	b.last = now
	if b.credit < cost {
		return false
	}
	b.credit -= cost
	return true
}

// sweep forgets the sources unheard of for limitIdle. l.mu must be held.
func (l *limiter) sweep(now time.Time) {
	for k, b := range l.seen {
		if now.Sub(b.last) >= limitIdle {
			delete(l.seen, k)
		}
	}
	l.swept = now
}

// sourceKey is what a source is limited by: its IPv4 address, or the /64
// of its IPv6 address (one host can have a whole /64).
func sourceKey(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(64)
	return p
}
