// Package proxy owns the SOCKS5 and HTTP proxy protocols: it accepts
// clients on the host network and reaches what they ask for through the
// relay.Dialer it is given. It knows nothing of WireGuard or gVisor.
//
// Both proxies share one Server type: a listener, a bound on concurrent
// client connections (a relay.Limiter, which also holds what Close must
// end), and a Close that ends every relayed connection and UDP association
// and waits for all the goroutines it started.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wgsidecar/sidecar/monitor"
	"github.com/wgsidecar/sidecar/relay"
)

const (
	// handshakeTimeout bounds a client's SOCKS5 handshake and the header
	// of each HTTP request, so idle half-opened clients hold nothing
	// for long.
	handshakeTimeout = 10 * time.Second
	// dialTimeout bounds a dial through the Dialer.
	dialTimeout = 30 * time.Second
	// lookupTimeout bounds resolving the name in a SOCKS5 UDP datagram.
	lookupTimeout = 10 * time.Second
	// refuseTimeout bounds the exchange that tells a client over the
	// connection limit why it is refused (a SOCKS5 reply, an HTTP 503).
	refuseTimeout = 2 * time.Second
	// maxRefusing bounds the refused clients being answered at once;
	// beyond it a refused connection is closed without a word, so a
	// flood costs no more than a few goroutines.
	maxRefusing = 16
)

// Server is a running proxy. Its methods are safe for concurrent use.
type Server struct {
	kind string           // "socks5" or "http", for connection records
	mon  *monitor.Monitor // the dialer's (a node's), or nil
	ln   net.Listener
	d    relay.Dialer
	log  *slog.Logger

	// ctx is cancelled by Close; every dial and request derives from it.
	ctx    context.Context
	cancel context.CancelFunc

	// conns counts client connections against MaxConns, holds what Close
	// ends (client and upstream conns, UDP sockets) and counts every
	// goroutine the server started.
	conns *relay.Limiter

	closeOnce sync.Once
	closeErr  error

	// refuse tells a client over the connection limit why it is
	// refused, in the proxy's protocol, within refuseTimeout; nil
	// closes such a client at once. refusing counts those being told.
	refuse   func(net.Conn)
	refusing atomic.Int32

	// Set for an HTTP proxy only.
	http      *http.Server
	transport *http.Transport
}

func newServer(kind string, ln net.Listener, d relay.Dialer, maxConns int, log *slog.Logger) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		kind:   kind,
		mon:    monitor.Of(d),
		ln:     ln,
		d:      d,
		log:    log,
		ctx:    ctx,
		cancel: cancel,
		conns:  relay.NewLimiter(maxConns),
	}
}

// logger returns l with the proxy kind and listen address attached, or
// the default logger's equivalent when l is nil.
func logger(l *slog.Logger, kind string, addr net.Addr) *slog.Logger {
	if l == nil {
		l = slog.Default()
	}
	return l.With("proxy", kind, "listen", addr.String())
}

// Addr returns the address the proxy listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Conns reports the client connections open now and admitted since the
// proxy started (those refused at the limit are not counted).
func (s *Server) Conns() (open int, accepted uint64) { return s.conns.Counts() }

// Close stops the proxy: it closes the listener and every client
// connection, relayed connection and UDP association, and returns once
// every goroutine the server started has finished. It is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		err := s.ln.Close()
		if s.http != nil {
			// Closes the listener wrapper too, and every connection
			// it has not handed to a handler by hijacking.
			s.http.Close()
		}
		s.conns.Close()
		if s.transport != nil {
			// Every handler has returned, so no upstream connection
			// is in use any more.
			s.transport.CloseIdleConnections()
		}
		if errors.Is(err, net.ErrClosed) {
			err = nil
		}
		s.closeErr = err
	})
	return s.closeErr
}

// admit counts a new client connection, or reports false when MaxConns
// connections are open already. The first refusal of a burst is logged,
// and so is the end of the burst.
func (s *Server) admit() bool {
	ok, refused := s.conns.Admit()
	switch {
	case !ok && refused == 1:
		s.log.Warn("connection limit reached; refusing new connections", "max_conns", s.conns.Max())
	case ok && refused > 0:
		s.log.Info("accepting connections again", "refused", refused)
	}
	return ok
}

// refused records a client connection over the limit and tells the
// client why (s.refuse) in a goroutine of its own, unless maxRefusing
// are being told already; then, or without s.refuse, c is closed at once.
func (s *Server) refused(c net.Conn) {
	s.mon.DropConn(monitor.FromApp, monitor.ConnLimit, monitor.ConnRecord{
		Kind: s.kind, From: c.RemoteAddr().String(), Verdict: fmt.Sprintf("refused: limit of %d connections", s.conns.Max())})
	if s.refuse == nil {
		c.Close()
		return
	}
	if s.refusing.Add(1) > maxRefusing || !s.conns.Enter() {
		s.refusing.Add(-1)
		c.Close()
		return
	}
	if !s.conns.Hold(c) {
		s.refusing.Add(-1)
		s.conns.Done()
		return
	}
	go func() {
		defer s.conns.Done()
		defer s.refusing.Add(-1)
		defer c.Close()
		defer s.conns.Unhold(c)
		c.SetDeadline(time.Now().Add(refuseTimeout))
		s.refuse(c)
		lingeringClose(c)
	}()
}

// acceptLoop accepts client connections until the listener is closed,
// admitting each against MaxConns and serving it with handle in its own
// goroutine. handle need not close the connection; when it reports true
// it has handed the connection on to something (a relay) that calls end
// once done with it, and end forgets, closes and uncounts it.
func (s *Server) acceptLoop(handle func(c net.Conn, end func()) bool) {
	defer s.conns.Done()
	var backoff time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if s.conns.Closed() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait and retry,
			// as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed", "err", err, "retry_in", backoff)
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		if !s.admit() {
			s.refused(c)
			continue
		}
		if !s.conns.Enter() {
			s.conns.Release()
			c.Close()
			return
		}
		if !s.conns.Hold(c) {
			s.conns.Release()
			s.conns.Done()
			return
		}
		go func() {
			defer s.conns.Done()
			end := func() {
				s.conns.Unhold(c)
				c.Close()
				s.conns.Release()
			}
			if !handle(c, end) {
				end()
			}
		}()
	}
}

// relayed relays between client and up (held by s.conns) on goroutines
// of the relay's own and records the connection: a from-app trace now,
// and a connection record with its bytes when it ends. It returns at
// once: true when the relay runs, and then, once it is over, up is
// forgotten and end called; false, with both conns closed and up
// forgotten, when the proxy is closing.
func (s *Server) relayed(kind string, client, up net.Conn, target string, early []byte, start time.Time, end func()) bool {
	rec := monitor.ConnRecord{Kind: kind, From: client.RemoteAddr().String(), To: target, Verdict: "open"}
	s.mon.TraceConn(monitor.FromApp, rec)
	if !relay.Go(s.conns, client, up, early, func(in, out int64) {
		s.conns.Unhold(up)
		rec.Verdict, rec.BytesIn, rec.BytesOut, rec.Duration = "ok", uint64(in), uint64(out), time.Since(start)
		s.mon.Conn(rec)
		end()
	}) {
		s.conns.Unhold(up)
		return false
	}
	return true
}

// dialFailed records a connection the proxy could not set up.
func (s *Server) dialFailed(kind, client, target string, err error, start time.Time) {
	s.mon.Conn(monitor.ConnRecord{Kind: kind, From: client, To: target, Verdict: "error: " + err.Error(), Duration: time.Since(start)})
}

// addrPortOf returns a's IP address (IPv4-mapped addresses unmapped) and
// port; the zero value when a is not an IP address.
func addrPortOf(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	case nil:
		return netip.AddrPort{}
	default:
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
