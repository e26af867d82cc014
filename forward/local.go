package forward

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wgsidecar/sidecar/monitor"
	"github.com/wgsidecar/sidecar/relay"
)

// DefaultUDPTimeout ends a UDP session idle this long.
const DefaultUDPTimeout = 2 * time.Minute

// dialTimeout bounds dialing a forward's target.
const dialTimeout = 10 * time.Second

// TCPForward relays a host TCP port to a target inside the tunnel.
type TCPForward struct {
	ln     net.Listener
	target string
	d      relay.Dialer
	mon    *monitor.Monitor // the dialer's, or nil
	log    *slog.Logger
	conns  *relay.Limiter // client connections and their tunnel sides
}

// Conns reports the connections relayed now and accepted in all.
func (f *TCPForward) Conns() (open int, accepted uint64) { return f.conns.Counts() }

// ListenTCP listens on bind (host network; "127.0.0.1:port" style — the
// caller decides the interface) and relays each connection to target
// ("host:port" inside the tunnel). maxConns <= 0 means
// relay.DefaultMaxConns.
func ListenTCP(bind, target string, d relay.Dialer, maxConns int, log *slog.Logger) (*TCPForward, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("forward: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	f := &TCPForward{ln: ln, target: target, d: d, mon: monitor.Of(d), log: log, conns: relay.NewLimiter(maxConns)}
	f.conns.Go(f.serve)
	return f, nil
}

// Addr is the host address the forward listens on.
func (f *TCPForward) Addr() net.Addr { return f.ln.Addr() }

func (f *TCPForward) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		rec := monitor.ConnRecord{Kind: "tcp-forward", From: c.RemoteAddr().String(), To: f.target}
		ok, refused := f.conns.Admit()
		logBurst(f.log, ok, refused, "forward: connection limit reached; closing new connections", f.ln.Addr(), f.conns.Max())
		if !ok {
			rec.Verdict = fmt.Sprintf("refused: limit of %d connections", f.conns.Max())
			f.mon.DropConn(monitor.FromApp, monitor.ConnLimit, rec)
			c.Close()
			continue
		}
		if !f.conns.Hold(c) {
			f.conns.Release()
			return
		}
		if !f.conns.Go(func() {
			end := func() {
				f.conns.Unhold(c)
				f.conns.Release()
			}
			if !f.relay(c, rec, end) {
				end()
			}
		}) {
			f.conns.Release()
			return
		}
	}
}

// relay dials the target for the client connection c and starts relaying
// between them on goroutines of the relay's own (see relay.Go), which
// call end when done: it reports whether they do. A target that cannot
// be dialed makes the client see a reset.
func (f *TCPForward) relay(c net.Conn, rec monitor.ConnRecord, end func()) bool {
	start := time.Now()
	rec.Verdict = "open"
	f.mon.TraceConn(monitor.FromApp, rec)
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	t, err := f.d.DialContext(ctx, "tcp", f.target)
	cancel()
	if err != nil {
		f.log.Info("forward: dial failed", "target", f.target, "err", err)
		rec.Verdict, rec.Duration = "error: "+err.Error(), time.Since(start)
		f.mon.Conn(rec)
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // the client sees a reset, not a clean close
		}
		c.Close()
		return false
	}
	if !f.conns.Hold(t) {
		c.Close()
		return false
	}
	ok := relay.Go(f.conns, c, t, nil, func(in, out int64) {
		f.conns.Unhold(t)
		rec.Verdict, rec.BytesIn, rec.BytesOut, rec.Duration = "ok", uint64(in), uint64(out), time.Since(start)
		f.mon.Conn(rec)
		end()
	})
	if !ok {
		f.conns.Unhold(t)
	}
	return ok
}

// logBurst logs the first refusal of a burst (msg) and, at the admission
// that ends it, how many were refused: one line each way however many
// clients a burst turns away. ok and refused are relay.Limiter.Admit's.
func logBurst(log *slog.Logger, ok bool, refused int, msg string, listen net.Addr, limit int) {
	switch {
	case !ok && refused == 1:
		log.Warn(msg, "listen", listen.String(), "limit", limit)
	case ok && refused > 0:
		log.Info("forward: accepting connections again", "listen", listen.String(), "refused", refused)
	}
}

// Close stops listening and ends every relayed connection.
func (f *TCPForward) Close() error {
	err := f.ln.Close()
	f.conns.Close()
	return err
}

// UDPForward relays datagrams from a host UDP port to a target inside the
// tunnel, one tunnel socket per client address, each ending after a time
// without traffic.
type UDPForward struct {
	pc      net.PacketConn
	target  string
	d       relay.Dialer
	mon     *monitor.Monitor // the dialer's, or nil
	timeout time.Duration
	log     *slog.Logger
	conns   *relay.Limiter // sessions; holds the host socket too

	mu       sync.Mutex
	sessions map[string]*udpSession
}

// Conns reports the sessions open now and opened in all.
func (f *UDPForward) Conns() (open int, accepted uint64) { return f.conns.Counts() }

// ListenUDP listens on bind and relays to target. timeout <= 0 means
// DefaultUDPTimeout; maxSessions <= 0 means relay.DefaultMaxConns.
func ListenUDP(bind, target string, d relay.Dialer, timeout time.Duration, maxSessions int, log *slog.Logger) (*UDPForward, error) {
	pc, err := net.ListenPacket("udp", bind)
	if err != nil {
		return nil, fmt.Errorf("forward: %w", err)
	}
	if timeout <= 0 {
		timeout = DefaultUDPTimeout
	}
	if log == nil {
		log = slog.Default()
	}
	f := &UDPForward{pc: pc, target: target, d: d, timeout: timeout, log: log, sessions: map[string]*udpSession{},
		mon: monitor.Of(d), conns: relay.NewLimiter(maxSessions)}
	f.conns.Hold(pc)
	f.conns.Go(f.serve)
	return f, nil
}

// Addr is the host address the forward listens on.
func (f *UDPForward) Addr() net.Addr { return f.pc.LocalAddr() }

func (f *UDPForward) serve() {
	buf := make([]byte, 64<<10)
	for {
		n, client, err := f.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		s := f.session(client)
		if s == nil {
			continue
		}
		s.SetReadDeadline(time.Now().Add(f.timeout))
		if w, err := s.Write(buf[:n]); err == nil {
			s.out.Add(uint64(w))
		}
	}
}

// udpSession is one client's tunnel socket and what it carried from the
// client (the rest of its record is kept by its reading goroutine).
type udpSession struct {
	net.Conn
	out atomic.Uint64
}

// session returns the tunnel socket for client, dialing it on first use.
func (f *UDPForward) session(client net.Addr) *udpSession {
	key := client.String()
	f.mu.Lock()
	s, ok := f.sessions[key]
	f.mu.Unlock()
	if ok {
		return s
	}
	rec := monitor.ConnRecord{Kind: "udp-forward", From: key, To: f.target}
	ok, refused := f.conns.Admit()
	logBurst(f.log, ok, refused, "forward: UDP session limit reached; dropping datagrams of new clients", f.pc.LocalAddr(), f.conns.Max())
	if !ok {
		rec.Verdict = fmt.Sprintf("refused: limit of %d sessions", f.conns.Max())
		f.mon.DropConn(monitor.FromApp, monitor.ConnLimit, rec)
		return nil
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	conn, err := f.d.DialContext(ctx, "udp", f.target)
	cancel()
	if err != nil {
		f.conns.Cancel()
		f.log.Info("forward: dial failed", "target", f.target, "err", err)
		rec.Verdict, rec.Duration = "error: "+err.Error(), time.Since(start)
		f.mon.Conn(rec)
		return nil
	}
	s = &udpSession{Conn: conn}
	if !f.conns.Hold(s) {
		f.conns.Cancel()
		return nil
	}
	f.mu.Lock()
	f.sessions[key] = s
	f.mu.Unlock()
	rec.Verdict = "open"
	f.mon.TraceConn(monitor.FromApp, rec)
	if !f.conns.Go(func() { f.relayBack(key, client, s, rec, start) }) {
		f.endSession(key, s, rec, 0, start)
		return nil
	}
	return s
}

// relayBack relays the session's datagrams back to client until the
// session is idle for the timeout or closed, then ends it.
func (f *UDPForward) relayBack(key string, client net.Addr, s *udpSession, rec monitor.ConnRecord, start time.Time) {
	var in uint64
	defer func() { f.endSession(key, s, rec, in, start) }()
	buf := make([]byte, 64<<10)
	for {
		s.SetReadDeadline(time.Now().Add(f.timeout))
		n, err := s.Read(buf)
		if err != nil {
			return // idle, closed, or refused
		}
		if _, err := f.pc.WriteTo(buf[:n], client); err != nil {
			return
		}
		in += uint64(n)
	}
}

// endSession forgets and closes a session, gives back its place, and
// records it with in bytes carried to the client.
func (f *UDPForward) endSession(key string, s *udpSession, rec monitor.ConnRecord, in uint64, start time.Time) {
	f.mu.Lock()
	delete(f.sessions, key)
	f.mu.Unlock()
	f.conns.Unhold(s)
	s.Close()
	f.conns.Release()
	rec.Verdict, rec.BytesIn, rec.BytesOut, rec.Duration = "ok", in, s.out.Load(), time.Since(start)
	f.mon.Conn(rec)
}

// Close stops listening and ends every session.
func (f *UDPForward) Close() error {
	f.conns.Close()
	return nil
}
