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

// Dialer reaches the tunnel; a sidecar node is one.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// DefaultMaxConns bounds a forward's concurrent connections or sessions.
const DefaultMaxConns = 1024

// DefaultUDPTimeout ends a UDP session idle this long.
const DefaultUDPTimeout = 2 * time.Minute

// dialTimeout bounds dialing a forward's target.
const dialTimeout = 10 * time.Second

// TCPForward relays a host TCP port to a target inside the tunnel.
type TCPForward struct {
	ln     net.Listener
	target string
	d      Dialer
	mon    *monitor.Monitor // the dialer's, or nil
	log    *slog.Logger
	max    int
	conns  conns

	open     atomic.Int64 // client connections being relayed
	accepted atomic.Uint64
}

// Conns reports the connections relayed now and accepted in all.
func (f *TCPForward) Conns() (open int, accepted uint64) {
	return int(f.open.Load()), f.accepted.Load()
}

// ListenTCP listens on bind (host network; "127.0.0.1:port" style — the
// caller decides the interface) and relays each connection to target
// ("host:port" inside the tunnel). maxConns <= 0 means DefaultMaxConns.
func ListenTCP(bind, target string, d Dialer, maxConns int, log *slog.Logger) (*TCPForward, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("forward: %w", err)
	}
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	if log == nil {
		log = slog.Default()
	}
	f := &TCPForward{ln: ln, target: target, d: d, mon: monitor.Of(d), log: log, max: maxConns}
	f.conns.wg.Add(1)
	go f.serve()
	return f, nil
}

// Addr is the host address the forward listens on.
func (f *TCPForward) Addr() net.Addr { return f.ln.Addr() }

func (f *TCPForward) serve() {
	defer f.conns.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		mon := f.mon
		rec := monitor.ConnRecord{Kind: "tcp-forward", From: c.RemoteAddr().String(), To: f.target}
		if int(f.open.Load()) >= f.max {
			f.log.Warn("forward: connection limit reached; closing new connection", "listen", f.ln.Addr().String(), "limit", f.max)
			rec.Verdict = fmt.Sprintf("refused: limit of %d connections", f.max)
			mon.DropConn(monitor.FromApp, monitor.ConnLimit, rec)
			c.Close()
			continue
		}
		if !f.conns.add(c) {
			return
		}
		f.accepted.Add(1)
		f.open.Add(1)
		f.conns.wg.Add(1)
		go func() {
			defer f.conns.wg.Done()
			defer f.open.Add(-1)
			defer f.conns.remove(c)
			start := time.Now()
			rec.Verdict = "open"
			mon.TraceConn(monitor.FromApp, rec)
			ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
			t, err := f.d.DialContext(ctx, "tcp", f.target)
			cancel()
			if err != nil {
				f.log.Info("forward: dial failed", "target", f.target, "err", err)
				rec.Verdict, rec.Duration = "error: "+err.Error(), time.Since(start)
				mon.Conn(rec)
				if tc, ok := c.(*net.TCPConn); ok {
					tc.SetLinger(0) // the client sees a reset, not a clean close
				}
				c.Close()
				return
			}
			if !f.conns.add(t) {
				c.Close()
				return
			}
			defer f.conns.remove(t)
			in, out := relay.Conns(c, t, nil)
			rec.Verdict, rec.BytesIn, rec.BytesOut, rec.Duration = "ok", uint64(in), uint64(out), time.Since(start)
			mon.Conn(rec)
		}()
	}
}

// Close stops listening and ends every relayed connection.
func (f *TCPForward) Close() error {
	err := f.ln.Close()
	f.conns.closeAll()
	return err
}

// UDPForward relays datagrams from a host UDP port to a target inside the
// tunnel, one tunnel socket per client address, each ending after a time
// without traffic.
type UDPForward struct {
	pc      net.PacketConn
	target  string
	d       Dialer
	mon     *monitor.Monitor // the dialer's, or nil
	timeout time.Duration
	max     int
	log     *slog.Logger

	mu       sync.Mutex
	sessions map[string]*udpSession
	conns    conns
	accepted atomic.Uint64 // sessions opened in all
}

// Conns reports the sessions open now and opened in all.
func (f *UDPForward) Conns() (open int, accepted uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.sessions), f.accepted.Load()
}

// ListenUDP listens on bind and relays to target. timeout <= 0 means
// DefaultUDPTimeout; maxSessions <= 0 means DefaultMaxConns.
func ListenUDP(bind, target string, d Dialer, timeout time.Duration, maxSessions int, log *slog.Logger) (*UDPForward, error) {
	pc, err := net.ListenPacket("udp", bind)
	if err != nil {
		return nil, fmt.Errorf("forward: %w", err)
	}
	if timeout <= 0 {
		timeout = DefaultUDPTimeout
	}
	if maxSessions <= 0 {
		maxSessions = DefaultMaxConns
	}
	if log == nil {
		log = slog.Default()
	}
	f := &UDPForward{pc: pc, target: target, d: d, timeout: timeout, max: maxSessions, log: log, sessions: map[string]*udpSession{}, mon: monitor.Of(d)}
	f.conns.add(pc)
	f.conns.wg.Add(1)
	go f.serve()
	return f, nil
}

// Addr is the host address the forward listens on.
func (f *UDPForward) Addr() net.Addr { return f.pc.LocalAddr() }

func (f *UDPForward) serve() {
	defer f.conns.wg.Done()
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
	full := len(f.sessions) >= f.max
	f.mu.Unlock()
	if ok {
		return s
	}
	mon := f.mon
	rec := monitor.ConnRecord{Kind: "udp-forward", From: key, To: f.target}
	if full {
		f.log.Warn("forward: UDP session limit reached; dropping datagram", "listen", f.pc.LocalAddr().String(), "limit", f.max)
		rec.Verdict = fmt.Sprintf("refused: limit of %d sessions", f.max)
		mon.DropConn(monitor.FromApp, monitor.ConnLimit, rec)
		return nil
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	conn, err := f.d.DialContext(ctx, "udp", f.target)
	cancel()
	if err != nil {
		f.log.Info("forward: dial failed", "target", f.target, "err", err)
		rec.Verdict, rec.Duration = "error: "+err.Error(), time.Since(start)
		mon.Conn(rec)
		return nil
	}
	s = &udpSession{Conn: conn}
	if !f.conns.add(s) {
		return nil
	}
	f.mu.Lock()
	f.sessions[key] = s
	f.mu.Unlock()
	f.accepted.Add(1)
	rec.Verdict = "open"
	mon.TraceConn(monitor.FromApp, rec)
	f.conns.wg.Add(1)
	go func() {
		defer f.conns.wg.Done()
		var in uint64
		defer func() {
			f.mu.Lock()
			delete(f.sessions, key)
			f.mu.Unlock()
			f.conns.remove(s)
			s.Close()
			rec.Verdict, rec.BytesIn, rec.BytesOut, rec.Duration = "ok", in, s.out.Load(), time.Since(start)
			mon.Conn(rec)
		}()
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
	}()
	return s
}

// Close stops listening and ends every session.
func (f *UDPForward) Close() error {
	f.conns.closeAll()
	return nil
}
