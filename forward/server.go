package forward

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wgsidecar/sidecar/monitor"
	"github.com/wgsidecar/sidecar/netstack"
	"github.com/wgsidecar/sidecar/relay"
)

// Server decides what happens to connections and datagrams that reach the
// node's stack with no socket for them: a port on the node's own address
// with a tunnel-to-local forward relays to its host target; a destination
// inside an offered subnet (or anything, for an exit node) is dialed on the
// host network; everything else is refused (TCP RST, ICMP unreachable), as
// a closed port would be. In every case the host side is dialed first, so a
// refused target is refused to the peer at once, not after a handshake.
//
// Set the fields before Attach; they must not change afterwards. SetPorts
// changes the port forwards of an attached server.
type Server struct {
	// TCP and UDP map a port of the node's own addresses to a host target
	// ("host:port"): the forwards Attach starts with.
	TCP map[uint16]string
	UDP map[uint16]string
	// Subnets are served to peers; Exit serves every destination.
	Subnets []netip.Prefix
	Exit    bool
	// IsLocal reports whether an address is the node's own.
	IsLocal func(netip.Addr) bool
	// UDPTimeout ends idle UDP flows; DefaultUDPTimeout when zero.
	UDPTimeout time.Duration
	// MaxConns bounds concurrent relays; relay.DefaultMaxConns when zero.
	MaxConns int
	Log      *slog.Logger
	// Monitor, if set, receives the server's connection records and the
	// reasons it refuses connections and flows.
	Monitor *monitor.Monitor

	dialer net.Dialer
	conns  *relay.Limiter // relays (TCP connections, UDP flows) running or being set up; set by Attach
	ports  atomic.Pointer[ports]

	mu    sync.Mutex
	local map[io.Closer]portRelay // relays of a port forward, by their peer-side connection
	count map[portKey]*portCount  // each port forward's connections (UDP: flows)
}

// portKey names a port forward: its protocol and port.
type portKey struct {
	udp  bool
	port uint16
}

// portCount is what a port forward has relayed: open now and accepted in
// all.
type portCount struct {
	open     atomic.Int64
	accepted atomic.Uint64
}

// counter returns the count of a port forward, made on first use.
func (s *Server) counter(udp bool, port uint16) *portCount {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.count == nil {
		s.count = map[portKey]*portCount{}
	}
	k := portKey{udp, port}
	c := s.count[k]
	if c == nil {
		c = &portCount{}
		s.count[k] = c
	}
	return c
}

// PortConns reports the connections (UDP: flows) a port forward has open
// now and has accepted since the server started.
func (s *Server) PortConns(udp bool, port uint16) (open int, accepted uint64) {
	c := s.counter(udp, port)
	return int(c.open.Load()), c.accepted.Load()
}

// opened counts a relay of a port forward (nil for a served
// destination) and returns what ends it.
func opened(c *portCount) (closed func()) {
	if c == nil {
		return func() {}
	}
	c.accepted.Add(1)
	c.open.Add(1)
	return func() { c.open.Add(-1) }
}

// ports is one version of the port forwards; SetPorts replaces it whole.
type ports struct {
	tcp, udp   map[uint16]string
	udpTimeout time.Duration
}

// portRelay is where a port forward's relay goes.
type portRelay struct {
	udp    bool
	port   uint16
	target string
}

// Attach makes s the stack's handler for unclaimed TCP and UDP. To serve
// subnets or exit traffic, the stack must have been made with
// netstack.Options.Promiscuous.
func (s *Server) Attach(st *netstack.Stack) error {
	if s.Log == nil {
		s.Log = slog.Default()
	}
	if s.UDPTimeout <= 0 {
		s.UDPTimeout = DefaultUDPTimeout
	}
	s.conns = relay.NewLimiter(s.MaxConns)
	s.MaxConns = s.conns.Max()
	if (s.Exit || len(s.Subnets) > 0) && !st.Promiscuous() {
		return errors.New("forward: serving subnets or exit needs a promiscuous stack")
	}
	s.ports.Store(&ports{tcp: s.TCP, udp: s.UDP, udpTimeout: s.UDPTimeout})
	st.HandleTCP(s.handleTCP)
	st.HandleUDP(s.handleUDP)
	return nil
}

// SetPorts replaces the port forwards of an attached server: from now on
// tcp and udp decide where connections to the node's own ports go, and UDP
// flows of port forwards end after udpTimeout idle (DefaultUDPTimeout when
// zero). Relays of a port whose target is unchanged carry on; those of a
// port that was removed or now goes elsewhere are closed. Subnets and Exit
// are not changed. It is safe to call while traffic flows.
func (s *Server) SetPorts(tcp, udp map[uint16]string, udpTimeout time.Duration) {
	if udpTimeout <= 0 {
		udpTimeout = DefaultUDPTimeout
	}
	s.ports.Store(&ports{tcp: tcp, udp: udp, udpTimeout: udpTimeout})
	s.mu.Lock()
	defer s.mu.Unlock()
	for c, r := range s.local {
		m := tcp
		if r.udp {
			m = udp
		}
		if m[r.port] != r.target {
			c.Close() // ends the relay; it removes itself
		}
	}
}

// trackLocal records c as the peer side of a port forward's relay, so that
// SetPorts can end it; untrack forgets it. A relay set up while SetPorts
// removed its port is closed here.
func (s *Server) trackLocal(c io.Closer, r portRelay) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.local == nil {
		s.local = map[io.Closer]portRelay{}
	}
	s.local[c] = r
	p := s.ports.Load()
	m := p.tcp
	if r.udp {
		m = p.udp
	}
	if m[r.port] != r.target {
		c.Close()
	}
}

func (s *Server) untrack(c io.Closer) {
	s.mu.Lock()
	delete(s.local, c)
	s.mu.Unlock()
}

// Close ends every relay the server started.
func (s *Server) Close() error {
	if s.conns != nil {
		s.conns.Close()
	}
	return nil
}

// target is where a flow to dst goes on the host network, or "";
// local reports that it is a port forward of the node's own address.
func (s *Server) target(dst netip.AddrPort, ports map[uint16]string) (target string, local bool) {
	if s.IsLocal != nil && s.IsLocal(dst.Addr()) {
		return ports[dst.Port()], true
	}
	if s.Exit {
		return dst.String(), false
	}
	for _, p := range s.Subnets {
		if p.Contains(dst.Addr()) {
			return dst.String(), false
		}
	}
	return "", false
}

// refusal says why a flow to dst with no target, or none of the MaxConns
// places free, is refused.
func (s *Server) refusal(dst netip.AddrPort, target string) monitor.DropReason {
	switch {
	case target != "":
		return monitor.ConnLimit
	case s.IsLocal != nil && !s.IsLocal(dst.Addr()):
		return monitor.NotLocal
	}
	return monitor.NoListener
}

func (s *Server) handleTCP(r *netstack.TCPRequest) {
	target, local := s.target(r.Dst, s.ports.Load().tcp)
	if target == "" || !s.reserve(r.Dst) {
		s.Monitor.DropConn(monitor.FromPeer, s.refusal(r.Dst, target),
			monitor.ConnRecord{Kind: "tcp", From: r.Src.String(), To: r.Dst.String(), Verdict: "refused"})
		r.Refuse()
		return
	}
	held := true // the reservation, until the relay goroutine takes it over
	defer func() {
		if held {
			s.conns.Release()
		}
	}()
	start := time.Now()
	rec := monitor.ConnRecord{Kind: "tcp-forward", From: r.Src.String(), To: target}
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	host, err := s.dialer.DialContext(ctx, "tcp", target)
	cancel()
	if err != nil {
		s.Log.Info("forward: target refused; resetting the peer", "from", r.Src.String(), "to", r.Dst.String(), "target", target, "err", err)
		rec.Verdict = "refused: " + err.Error()
		s.Monitor.DropConn(monitor.FromPeer, monitor.ForwardRefused, rec)
		r.Refuse()
		return
	}
	c, err := r.Accept()
	if err != nil {
		host.Close()
		return
	}
	if !s.conns.Hold(c) {
		host.Close()
		return
	}
	if !s.conns.Hold(host) {
		s.conns.Unhold(c)
		c.Close()
		return
	}
	if local {
		s.trackLocal(c, portRelay{port: r.Dst.Port(), target: target})
	}
	rec.Verdict = "open"
	s.Monitor.TraceConn(monitor.ToApp, rec)
	var pc *portCount
	if local {
		pc = s.counter(false, r.Dst.Port())
	}
	closed := opened(pc)
	if !relay.Go(s.conns, c, host, nil, func(toPeer, toHost int64) {
		s.untrack(c)
		s.conns.Unhold(c)
		s.conns.Unhold(host)
		rec.Verdict, rec.BytesIn, rec.BytesOut, rec.Duration = "ok", uint64(toHost), uint64(toPeer), time.Since(start)
		s.Monitor.Conn(rec)
		closed()
		s.conns.Release()
	}) {
		closed()
		s.untrack(c) // Close has begun; it ends c and host
		return
	}
	held = false
}

// handleUDP runs on the packet path: it only decides and starts a
// goroutine; the host socket is dialed there.
func (s *Server) handleUDP(r *netstack.UDPRequest) bool {
	p := s.ports.Load()
	target, local := s.target(r.Dst, p.udp)
	if target == "" || !s.reserve(r.Dst) {
		s.Monitor.Drop(monitor.FromPeer, s.refusal(r.Dst, target), r.Packet())
		return false
	}
	c, err := r.Accept()
	if err != nil {
		s.conns.Release()
		return false
	}
	if !s.conns.Hold(c) {
		s.conns.Release()
		return true
	}
	var pc *portCount
	if local {
		s.trackLocal(c, portRelay{udp: true, port: r.Dst.Port(), target: target})
		pc = s.counter(true, r.Dst.Port())
	}
	closed := opened(pc)
	if !s.conns.Go(func() {
		defer s.conns.Release()
		defer closed()
		defer s.conns.Unhold(c)
		defer s.untrack(c)
		timeout := p.udpTimeout
		if !local {
			timeout = s.UDPTimeout
		}
		s.relayUDP(r, c, target, timeout)
	}) {
		closed()
		s.untrack(c)
		s.conns.Release()
	}
	return true
}

// reserve takes a place for one more relay to dst, or reports (and logs,
// once until a relay is admitted again) that MaxConns are taken.
func (s *Server) reserve(dst netip.AddrPort) bool {
	ok, refused := s.conns.Admit()
	if !ok && refused == 1 {
		s.Log.Warn("forward: connection limit reached; refusing new connections from the tunnel", "limit", s.MaxConns, "to", dst.String())
	}
	return ok
}

// refused reports whether err means the target actively refused (RST or
// ICMP unreachable), as opposed to a timeout.
func refused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH)
}

// relayUDP moves datagrams between the peer's flow c and a connected host
// socket to target until the flow is idle for timeout. A target that
// refuses makes the peer's first datagram come back as ICMP unreachable.
func (s *Server) relayUDP(r *netstack.UDPRequest, c net.Conn, target string, timeout time.Duration) {
	start := time.Now()
	rec := monitor.ConnRecord{Kind: "udp-forward", From: r.Src.String(), To: target}
	host, err := s.dialer.Dial("udp", target)
	if err != nil {
		c.Close()
		r.Unreachable()
		return
	}
	rec.Verdict = "open"
	s.Monitor.TraceConn(monitor.ToApp, rec)
	var toHost, toPeer atomic.Uint64
	defer func() {
		if rec.Verdict == "open" {
			rec.Verdict = "ok"
		}
		rec.BytesIn, rec.BytesOut, rec.Duration = toHost.Load(), toPeer.Load(), time.Since(start)
		s.Monitor.Conn(rec)
	}()
	if !s.conns.Hold(host) {
		c.Close()
		return
	}
	defer s.conns.Unhold(host)
	var once sync.Once
	stop := func() { once.Do(func() { c.Close(); host.Close() }) }
	var refusedByTarget atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() { // host -> peer
		defer stop()
		buf := make([]byte, 64<<10)
		for {
			host.SetReadDeadline(time.Now().Add(timeout))
			n, err := host.Read(buf)
			if err != nil {
				refusedByTarget.Store(refused(err))
				return
			}
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
			toPeer.Add(uint64(n))
		}
	})
	buf := make([]byte, 64<<10)
	for { // peer -> host
		c.SetReadDeadline(time.Now().Add(timeout))
		n, err := c.Read(buf)
		if err != nil {
			break
		}
		if _, err := host.Write(buf[:n]); err != nil {
			if refused(err) {
				refusedByTarget.Store(true)
			}
			break
		}
		toHost.Add(uint64(n))
	}
	stop()
	wg.Wait()
	if refusedByTarget.Load() {
		s.Log.Info("forward: UDP target refused; answering the peer with ICMP unreachable", "from", r.Src.String(), "target", target)
		rec.Verdict = "refused"
		r.Unreachable()
	}
}
