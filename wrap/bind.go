package wrap

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/wgsidecar/sidecar/stats"
)

// WireGuard message types and sizes (the protocol's wire format).
const (
	msgInitiation = 1
	msgResponse   = 2
	msgCookie     = 3
	msgTransport  = 4

	keepaliveSize = 32 // a transport message with no payload
)

// MessageCounts counts WireGuard messages by kind in one direction.
type MessageCounts struct {
	Initiations, Responses, CookieReplies, Keepalives uint64
}

// Bind counts the datagrams that cross a conn.Bind, keyed by the remote
// UDP endpoint with protocol 0, and counts WireGuard messages by kind. The
// key's source is left empty: which peer an endpoint belongs to is known
// above the bind, and the flow logger fills it in.
type Bind struct {
	conn.Bind
	stats atomic.Pointer[stats.Stats]

	// Per-kind counters, for handshakes and keepalives only (data
	// messages are the flows): rare, so a shared atomic costs nothing.
	sent, received kindCounters

	// What a watchdog needs to see a peer in trouble: when an initiation
	// was last sent to an endpoint and when a send to it last failed.
	// Both are rare (one initiation per 5 s at most per peer; errors only
	// while the socket is bad), so a mutex is no cost.
	sendErrs  atomic.Uint64
	troubleMu sync.Mutex
	initAt    map[netip.AddrPort]time.Time
	errAt     map[netip.AddrPort]time.Time
}

// maxTrouble bounds the endpoints whose trouble times are kept; past it the
// record starts again (a peer in trouble shows up again on its next try).
const maxTrouble = 4096

type kindCounters struct {
	initiations, responses, cookies, keepalives atomic.Uint64
}

// NewBind wraps b.
func NewBind(b conn.Bind) *Bind { return &Bind{Bind: b} }

// SetStatistics starts counting into s, or stops counting when s is nil.
func (b *Bind) SetStatistics(s *stats.Stats) { b.stats.Store(s) }

// Messages returns the handshake and keepalive messages sent and received
// since the bind was made.
func (b *Bind) Messages() (sent, received MessageCounts) {
	return b.sent.load(), b.received.load()
}

func (c *kindCounters) load() MessageCounts {
	return MessageCounts{
		Initiations: c.initiations.Load(), Responses: c.responses.Load(),
		CookieReplies: c.cookies.Load(), Keepalives: c.keepalives.Load(),
	}
}

// count counts msg if it is a handshake message or a keepalive; data
// messages (the flows) cost one comparison.
func (c *kindCounters) count(msg []byte) {
	if len(msg) == 0 {
		return
	}
	switch msg[0] {
	case msgInitiation:
		c.initiations.Add(1)
	case msgResponse:
		c.responses.Add(1)
	case msgCookie:
		c.cookies.Add(1)
	case msgTransport:
		if len(msg) == keepaliveSize {
			c.keepalives.Add(1)
		}
	}
}

// Open opens the bind and wraps its receive functions.
func (b *Bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := b.Bind.Open(port)
	if err != nil {
		return nil, 0, err
	}
	wrapped := make([]conn.ReceiveFunc, len(fns))
	for i, fn := range fns {
		wrapped[i] = func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
			n, err := fn(packets, sizes, eps)
			if n > 0 {
				b.countReceived(packets[:n], sizes[:n], eps[:n])
			}
			return n, err
		}
	}
	return wrapped, actual, nil
}

func (b *Bind) countReceived(packets [][]byte, sizes []int, eps []conn.Endpoint) {
	s := b.stats.Load()
	var batch stats.Batch
	if s != nil {
		batch = s.Begin()
	}
	var k stats.Key
	var last netip.AddrPort
	for i, p := range packets {
		msg := p[:sizes[i]]
		b.received.count(msg)
		if s != nil {
			// A batch mostly comes from one peer: build its key once.
			if ap := EndpointAddr(eps[i]); i == 0 || ap != last {
				k, last = stats.MakeKey(0, netip.AddrPort{}, ap), ap
			}
			batch.Count(stats.Physical, &k, len(msg), stats.Rx)
		}
	}
	if s != nil {
		batch.End()
	}
}

// Send counts each datagram as sent to ep, then sends the batch. A
// handshake initiation, and a failed send, are noted for Trouble.
func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	s := b.stats.Load()
	var k stats.Key
	var batch stats.Batch
	if s != nil {
		k = stats.MakeKey(0, netip.AddrPort{}, EndpointAddr(ep))
		batch = s.Begin()
	}
	initiation := false
	for _, msg := range bufs {
		b.sent.count(msg)
		if len(msg) > 0 && msg[0] == msgInitiation {
			initiation = true
		}
		if s != nil {
			batch.Count(stats.Physical, &k, len(msg), stats.Tx)
		}
	}
	if s != nil {
		batch.End()
	}
	err := b.Bind.Send(bufs, ep)
	if err != nil {
		b.sendErrs.Add(1)
	}
	if initiation || err != nil {
		b.noteTrouble(EndpointAddr(ep), initiation, err != nil)
	}
	return err
}

func (b *Bind) noteTrouble(ap netip.AddrPort, initiation, failed bool) {
	now := time.Now()
	b.troubleMu.Lock()
	defer b.troubleMu.Unlock()
	if b.initAt == nil || len(b.initAt)+len(b.errAt) > maxTrouble {
		b.initAt = map[netip.AddrPort]time.Time{}
		b.errAt = map[netip.AddrPort]time.Time{}
	}
	if initiation {
		b.initAt[ap] = now
	}
	if failed {
		b.errAt[ap] = now
	}
}

// Trouble reports when a handshake initiation was last sent to the remote
// endpoint ap and when a send to it last failed; zero times when never.
// An initiation later than the peer's last handshake is one not answered
// (yet).
func (b *Bind) Trouble(ap netip.AddrPort) (lastInitiation, lastSendError time.Time) {
	b.troubleMu.Lock()
	defer b.troubleMu.Unlock()
	return b.initAt[ap], b.errAt[ap]
}

// SendErrors counts the sends that failed since the bind was made.
func (b *Bind) SendErrors() uint64 { return b.sendErrs.Load() }

// EndpointAddr returns the remote address of ep, without allocating for
// the node's bind (udpbind) and wireguard-go's standard one.
func EndpointAddr(ep conn.Endpoint) netip.AddrPort {
	switch e := ep.(type) {
	case interface{ DstAddrPort() netip.AddrPort }:
		return e.DstAddrPort()
	case *conn.StdNetEndpoint:
		return e.AddrPort
	}
	ap, _ := netip.ParseAddrPort(ep.DstToString())
	return ap
}
