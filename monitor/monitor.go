// Package monitor owns live packet and connection events for observers:
// trace events at named observation points, drop events with stable
// numbered reasons, and connection records from the proxies and forwards.
//
// It costs nothing while nobody listens: [Monitor.Active] is one atomic
// load, and the event methods return at once when it is false, before
// copying or parsing anything. Each [Listener] has a bounded queue; events
// that do not fit are counted, and the listener receives one coalesced
// [KindLost] event carrying that count before the next event it is given,
// so losses are never silent.
//
// Packets are dissected with gVisor's tcpip/header views. The taps
// (taps.go) are the node's observation points: wrappers of wireguard-go's
// tun.Device and conn.Bind, its logger (the only voice of the device's own
// drops), and the observer of the stack's refusals; each drop is reported
// by the part that decides it. The package counts only its own events and
// logs nothing; the node decides where the taps sit.
package monitor

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Kind says what an [Event] reports.
type Kind uint8

const (
	KindTrace Kind = iota + 1 // a packet passed an observation point
	KindDrop                  // a packet was dropped, see Event.Reason
	KindConn                  // a proxied or forwarded connection ended, see Event.Conn
	KindLost                  // the listener's queue overflowed, see Event.Lost
)

func (k Kind) String() string {
	switch k {
	case KindTrace:
		return "trace"
	case KindDrop:
		return "drop"
	case KindConn:
		return "conn"
	case KindLost:
		return "lost"
	}
	return fmt.Sprintf("kind-%d", uint8(k))
}

// Point is an observation point: where in the datapath a packet was seen.
// The zero Point means none (connection records and lost reports).
type Point uint8

const (
	FromPeer    Point = iota + 1 // virtual: decrypted by WireGuard, entering the stack
	ToPeer                       // virtual: leaving the stack, to be encrypted for a peer
	FromNetwork                  // physical: a UDP datagram received from the network
	ToNetwork                    // physical: a UDP datagram sent to the network
	FromApp                      // a proxy or forward read from the local application side
	ToApp                        // a proxy or forward wrote to the local application side
)

var pointNames = [...]string{
	FromPeer:    "from-peer",
	ToPeer:      "to-peer",
	FromNetwork: "from-network",
	ToNetwork:   "to-network",
	FromApp:     "from-app",
	ToApp:       "to-app",
}

func (p Point) String() string {
	if p == 0 {
		return "none"
	}
	if int(p) < len(pointNames) {
		return pointNames[p]
	}
	return fmt.Sprintf("point-%d", uint8(p))
}

// DropReason says why a packet was dropped. The numbers are part of the
// wire and log formats: they are stable and never reused. Add new reasons
// at the end; retire old ones by leaving their number unused.
type DropReason uint16

const (
	NoPeer              DropReason = 1  // to-peer: no peer's AllowedIPs cover the destination
	NoListener          DropReason = 2  // from-peer: nothing listens on the destination port (answered with RST or ICMP)
	Malformed           DropReason = 3  // a datagram that is no WireGuard message, or an IP packet that does not parse
	QueueFull           DropReason = 4  // to-peer: the queue from the stack to WireGuard was full
	ForwardRefused      DropReason = 5  // from-peer: a tunnel-to-local forward's target refused or was unreachable
	PolicyRefused       DropReason = 6  // from-app: a proxy refused the client's credentials
	NotLocal            DropReason = 7  // from-peer: the destination is neither this node's address nor a served one
	SourceNotAllowed    DropReason = 8  // from-peer: WireGuard refused a packet whose source is outside the peer's AllowedIPs
	UnsupportedProtocol DropReason = 9  // from-peer: the stack handles no such transport protocol
	ConnLimit           DropReason = 10 // from-app/from-peer: a proxy or forward was at its connection limit
	HandshakeRefused    DropReason = 11 // from-network: a handshake initiation no configured peer's key matches
)

var reasonNames = [...]string{
	NoPeer:              "no-peer",
	NoListener:          "no-listener",
	Malformed:           "malformed",
	QueueFull:           "queue-full",
	ForwardRefused:      "forward-refused",
	PolicyRefused:       "policy-refused",
	NotLocal:            "not-local",
	SourceNotAllowed:    "source-not-allowed",
	UnsupportedProtocol: "unsupported-protocol",
	ConnLimit:           "conn-limit",
	HandshakeRefused:    "handshake-refused",
}

// Reasons returns every defined drop reason in number order.
func Reasons() []DropReason {
	var rs []DropReason
	for r := range reasonNames {
		if reasonNames[r] != "" {
			rs = append(rs, DropReason(r))
		}
	}
	return rs
}

func (r DropReason) String() string {
	if int(r) < len(reasonNames) && reasonNames[r] != "" {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason-%d", uint16(r))
}

// Event is one observation delivered to a [Listener].
type Event struct {
	Time   time.Time
	Kind   Kind
	Point  Point      // KindTrace, KindDrop
	Reason DropReason // KindDrop
	// Packet is a copy of the IP packet (KindTrace, KindDrop). The copy is
	// shared by every listener that receives the event: treat it as read-only.
	Packet []byte
	// Conn is the connection a KindConn record describes; a KindTrace or
	// KindDrop event at from-app or to-app, or a refused connection, carries
	// it instead of a packet. Shared by the listeners like Packet: read-only.
	Conn *ConnRecord
	// Detail says more where there is no packet to show, for example which
	// peer sent a packet WireGuard refused. It never holds a secret.
	Detail string
	Lost   uint64 // KindLost: events this listener missed
}

// ConnRecord describes a connection handled by a proxy or forward.
type ConnRecord struct {
	Kind              string // "socks5", "http-connect", "tcp-forward", "udp-forward", ...
	From, To          string // addresses as host:port; To may be a name
	Verdict           string // "ok", "refused", "error: ...", chosen by the caller
	BytesIn, BytesOut uint64 // BytesIn towards the app, BytesOut from it
	Duration          time.Duration
}

// Monitor fans events out to its listeners. The zero value is ready for
// use, and all methods are safe for concurrent use.
type Monitor struct {
	n         atomic.Int32                // len(*listeners); read on every packet
	listeners atomic.Pointer[[]*Listener] // copy on write; nil means none
	mu        sync.Mutex                  // serialises writers of listeners

	// Counted whether anyone listens or not (connection events are rare
	// next to packets): see Counts.
	refused    [len(reasonNames)]atomic.Uint64
	connErrors atomic.Uint64
	lost       atomic.Uint64
}

// Counts are a Monitor's running totals.
type Counts struct {
	Listeners int
	// Lost is the events all listeners have missed so far.
	Lost uint64
	// Refused counts the connections refused (DropConn) by reason,
	// whether or not anyone listened.
	Refused map[DropReason]uint64
	// ConnErrors counts the connection records whose verdict is an error
	// (a dial that failed, say), whether or not anyone listened.
	ConnErrors uint64
}

// Counts returns the monitor's totals so far.
func (m *Monitor) Counts() Counts {
	c := Counts{Listeners: int(m.n.Load()), Lost: m.lost.Load(), ConnErrors: m.connErrors.Load(), Refused: map[DropReason]uint64{}}
	for _, r := range Reasons() {
		c.Refused[r] = m.refused[r].Load()
	}
	return c
}

// Active reports whether anyone listens. It is one atomic load: callers on
// the packet path may test it and skip all monitoring work when false.
// A nil Monitor is never active, and its event methods do nothing.
func (m *Monitor) Active() bool { return m != nil && m.n.Load() > 0 }

// Trace reports that pkt, an IP packet, passed point p. pkt is copied only
// if a listener wants the event; the caller keeps ownership of pkt.
func (m *Monitor) Trace(p Point, pkt []byte) {
	if !m.Active() {
		return
	}
	m.publishPacket(KindTrace, p, 0, pkt)
}

// Drop reports that pkt, an IP packet seen at point p, was dropped for
// reason r. pkt is copied only if a listener wants the event.
func (m *Monitor) Drop(p Point, r DropReason, pkt []byte) {
	if !m.Active() {
		return
	}
	m.publishPacket(KindDrop, p, r, pkt)
}

// Conn reports a connection record: a proxied or forwarded connection
// ended.
func (m *Monitor) Conn(rec ConnRecord) {
	if m == nil {
		return
	}
	if strings.HasPrefix(rec.Verdict, "error") {
		m.connErrors.Add(1)
	}
	if !m.Active() {
		return
	}
	m.publishConn(KindConn, 0, 0, rec)
}

// TraceConn reports that a connection passed point p (from-app when an
// application connects to a proxy or local-to-tunnel forward, to-app when a
// tunnel-to-local forward connects to its target).
func (m *Monitor) TraceConn(p Point, rec ConnRecord) {
	if !m.Active() {
		return
	}
	m.publishConn(KindTrace, p, 0, rec)
}

// DropConn reports a connection refused at point p for reason r.
func (m *Monitor) DropConn(p Point, r DropReason, rec ConnRecord) {
	if m == nil {
		return
	}
	if int(r) < len(m.refused) {
		m.refused[r].Add(1)
	}
	if !m.Active() {
		return
	}
	m.publishConn(KindDrop, p, r, rec)
}

// DropDetail reports a drop at point p for reason r where the packet is
// not at hand (WireGuard dropped it inside the device); detail says what
// is known, such as the sending peer.
func (m *Monitor) DropDetail(p Point, r DropReason, detail string) {
	if !m.Active() {
		return
	}
	ls := m.snapshot()
	var ev Event
	for _, l := range ls {
		if !l.filter.matchPacket(KindDrop, netip.Addr{}, netip.Addr{}) {
			continue
		}
		if ev.Kind == 0 {
			ev = Event{Time: time.Now(), Kind: KindDrop, Point: p, Reason: r, Detail: detail}
		}
		l.deliver(ev)
	}
}

func (m *Monitor) publishConn(k Kind, p Point, r DropReason, rec ConnRecord) {
	ls := m.snapshot()
	var ev Event
	for _, l := range ls {
		if !l.filter.matchConn(k, &rec) {
			continue
		}
		if ev.Kind == 0 {
			c := rec
			ev = Event{Time: time.Now(), Kind: k, Point: p, Reason: r, Conn: &c}
		}
		l.deliver(ev)
	}
}

func (m *Monitor) publishPacket(k Kind, p Point, r DropReason, pkt []byte) {
	ls := m.snapshot()
	src, dst := packetAddrs(pkt)
	var ev Event
	for _, l := range ls {
		if !l.filter.matchPacket(k, src, dst) {
			continue
		}
		if l.full.Load() && l.lose() {
			continue // no copy of a packet nobody will see
		}
		if ev.Kind == 0 {
			ev = Event{Time: time.Now(), Kind: k, Point: p, Reason: r, Packet: slices.Clone(pkt)}
		}
		l.deliver(ev)
	}
}

func (m *Monitor) snapshot() []*Listener {
	if p := m.listeners.Load(); p != nil {
		return *p
	}
	return nil
}

// Listen adds a listener that receives the events matching f. Up to
// queue events (at least 1) wait for the reader, plus one in hand ready
// to be received; beyond that, events are counted as lost. Listen starts
// one goroutine, which Close stops.
func (m *Monitor) Listen(queue int, f Filter) *Listener {
	queue = max(queue, 1)
	l := &Listener{
		m:      m,
		filter: f.clone(),
		queue:  queue,
		ring:   make([]Event, queue+1), // +1: room for a Lost marker
		wake:   make(chan struct{}, 1),
		out:    make(chan Event),
		done:   make(chan struct{}),
		exited: make(chan struct{}),
	}
	go l.pump()

	m.mu.Lock()
	defer m.mu.Unlock()
	next := append(slices.Clone(m.snapshot()), l)
	m.listeners.Store(&next)
	m.n.Store(int32(len(next)))
	return l
}

func (m *Monitor) remove(l *Listener) {
	m.mu.Lock()
	defer m.mu.Unlock()
	next := slices.DeleteFunc(slices.Clone(m.snapshot()), func(x *Listener) bool { return x == l })
	m.listeners.Store(&next)
	m.n.Store(int32(len(next)))
}

// A Listener receives the events of one observer. Events wait in a
// bounded queue until read from [Listener.Events]; when the queue is full,
// new events are counted instead, and the count is delivered as one
// KindLost event ahead of the next event that fits (or as soon as the
// queue drains, if no other event comes).
type Listener struct {
	m      *Monitor
	filter Filter
	queue  int

	mu     sync.Mutex
	ring   []Event // guarded by mu
	head   int     // guarded by mu
	count  int     // guarded by mu
	lost   uint64  // guarded by mu: events dropped since the last Lost marker
	closed bool    // guarded by mu
	// full mirrors count >= queue, for publishers to skip copying a
	// packet that could only be counted as lost. It is a hint: deliver
	// decides under mu.
	full atomic.Bool

	wake      chan struct{} // cap 1: the ring gained an entry
	out       chan Event
	done      chan struct{}
	exited    chan struct{}
	closeOnce sync.Once
}

// Events returns the channel of events. It is closed after Close.
func (l *Listener) Events() <-chan Event { return l.out }

// Close removes the listener from its monitor, stops its delivery, and
// closes the Events channel. Events still queued are discarded. Close may
// be called more than once.
func (l *Listener) Close() {
	l.closeOnce.Do(func() {
		l.m.remove(l)
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		close(l.done)
		<-l.exited
	})
}

// lose counts an event the listener has no room for, without building it,
// and reports true; if room was made meanwhile it reports false and the
// caller delivers the event after all.
func (l *Listener) lose() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.count < l.queue && !l.closed {
		return false
	}
	if !l.closed {
		l.lost++
		l.m.lost.Add(1)
	}
	return true
}

// deliver queues ev or counts it as lost. It never blocks on the reader.
func (l *Listener) deliver(ev Event) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	if l.count >= l.queue {
		l.lost++
		l.m.lost.Add(1)
		l.full.Store(true)
		l.mu.Unlock()
		return
	}
	if l.lost > 0 {
		// count < queue and the ring has queue+1 slots: both fit.
		l.pushLocked(Event{Time: ev.Time, Kind: KindLost, Lost: l.lost})
		l.lost = 0
	}
	l.pushLocked(ev)
	if l.count >= l.queue {
		l.full.Store(true)
	}
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *Listener) pushLocked(ev Event) {
	l.ring[(l.head+l.count)%len(l.ring)] = ev
	l.count++
}

// next takes the oldest queued event, or a Lost report if the queue is
// empty but events were lost.
func (l *Listener) next() (Event, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.count > 0 {
		ev := l.ring[l.head]
		l.ring[l.head] = Event{}
		l.head = (l.head + 1) % len(l.ring)
		l.count--
		if l.count < l.queue {
			l.full.Store(false)
		}
		return ev, true
	}
	if l.lost > 0 {
		ev := Event{Time: time.Now(), Kind: KindLost, Lost: l.lost}
		l.lost = 0
		return ev, true
	}
	return Event{}, false
}

// pump hands queued events to the reader; it runs until Close.
func (l *Listener) pump() {
	defer close(l.exited)
	defer close(l.out)
	for {
		ev, ok := l.next()
		if !ok {
			select {
			case <-l.wake:
				continue
			case <-l.done:
				return
			}
		}
		select {
		case l.out <- ev:
		case <-l.done:
			return
		}
	}
}

// Of returns the Monitor v offers through a Monitor() *Monitor method (a
// sidecar node does), or nil if it offers none. The proxies and forwards
// find their node's monitor this way through the dialer they are given;
// the event methods of a nil Monitor do nothing.
func Of(v any) *Monitor {
	if m, ok := v.(interface{ Monitor() *Monitor }); ok {
		return m.Monitor()
	}
	return nil
}
