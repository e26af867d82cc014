// Package proxy owns the SOCKS5 and HTTP proxy protocols: it accepts
// clients on the host network and reaches what they ask for through a
// Dialer it is given. It knows nothing of WireGuard or gVisor.
//
// Both proxies share one Server type: a listener, a bound on concurrent
// client connections, and a Close that ends every relayed connection and
// UDP association and waits for all the goroutines it started.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/wgsidecar/sidecar/monitor"
	"github.com/wgsidecar/sidecar/relay"
)

// Dialer is what the proxies need from a node; package sidecar's *Node
// satisfies it. DialContext resolves host names itself (through the
// tunnel's DNS, for a node), LookupNetIP resolves a name for a UDP
// datagram, and ListenPacket("udp", ":0") opens a UDP socket on the
// node's tunnel address.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
	ListenPacket(network, address string) (net.PacketConn, error)
}

// DefaultMaxConns bounds a proxy's concurrent client connections when its
// config leaves MaxConns zero.
const DefaultMaxConns = 1024

const (
	// handshakeTimeout bounds a client's SOCKS5 handshake and the header
	// of each HTTP request, so idle half-opened clients hold nothing
	// for long.
	handshakeTimeout = 10 * time.Second
	// dialTimeout bounds a dial through the Dialer.
	dialTimeout = 30 * time.Second
	// lookupTimeout bounds resolving the name in a SOCKS5 UDP datagram.
	lookupTimeout = 10 * time.Second
)

// Server is a running proxy. Its methods are safe for concurrent use.
type Server struct {
	kind     string           // "socks5" or "http", for connection records
	mon      *monitor.Monitor // the dialer's (a node's), or nil
	ln       net.Listener
	d        Dialer
	log      *slog.Logger
	maxConns int

	// ctx is cancelled by Close; every dial and request derives from it.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	closed  bool
	active  int                    // client connections admitted and not yet closed
	refused int                    // connections refused in the current burst
	held    map[io.Closer]struct{} // closed by Close: client and upstream conns, UDP sockets
	wg      sync.WaitGroup         // every goroutine the server started

	closeOnce sync.Once
	closeErr  error

	// Set for an HTTP proxy only.
	http      *http.Server
	transport *http.Transport
}

func newServer(kind string, ln net.Listener, d Dialer, maxConns int, log *slog.Logger) *Server {
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		kind:     kind,
		mon:      monitor.Of(d),
		ln:       ln,
		d:        d,
		log:      log,
		maxConns: maxConns,
		ctx:      ctx,
		cancel:   cancel,
		held:     make(map[io.Closer]struct{}),
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

// Close stops the proxy: it closes the listener and every client
// connection, relayed connection and UDP association, and returns once
// every goroutine the server started has finished. It is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		held := s.held
		s.held = nil
		s.mu.Unlock()

		s.cancel()
		err := s.ln.Close()
		if s.http != nil {
			// Closes the listener wrapper too, and every connection
			// it has not handed to a handler by hijacking.
			s.http.Close()
		}
		for c := range held {
			c.Close()
		}
		s.wg.Wait()
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
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active >= s.maxConns {
		s.refused++
		if s.refused == 1 {
			s.log.Warn("connection limit reached; refusing new connections", "max_conns", s.maxConns)
		}
		return false
	}
	s.active++
	if s.refused > 0 {
		s.log.Info("accepting connections again", "refused", s.refused)
		s.refused = 0
	}
	return true
}

// release uncounts a client connection that admit counted.
func (s *Server) release() {
	s.mu.Lock()
	s.active--
	s.mu.Unlock()
}

// hold registers c to be closed by Close. It reports false, having closed
// c, when the server is closed already.
func (s *Server) hold(c io.Closer) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.Close()
		return false
	}
	s.held[c] = struct{}{}
	s.mu.Unlock()
	return true
}

// unhold forgets c; the caller closes it.
func (s *Server) unhold(c io.Closer) {
	s.mu.Lock()
	delete(s.held, c)
	s.mu.Unlock()
}

// enter counts a goroutine that Close must wait for, or reports false
// when the server is closed. A true result must be matched by s.wg.Done.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// isClosed reports whether Close has begun.
func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// acceptLoop accepts client connections until the listener is closed,
// admitting each against MaxConns and serving it with handle in its own
// goroutine. handle need not close the connection.
func (s *Server) acceptLoop(handle func(net.Conn)) {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if s.isClosed() || errors.Is(err, net.ErrClosed) {
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
			s.mon.DropConn(monitor.FromApp, monitor.ConnLimit, monitor.ConnRecord{
				Kind: s.kind, From: c.RemoteAddr().String(), Verdict: fmt.Sprintf("refused: limit of %d connections", s.maxConns)})
			c.Close()
			continue
		}
		if !s.enter() {
			s.release()
			c.Close()
			return
		}
		if !s.hold(c) {
			s.release()
			s.wg.Done()
			return
		}
		go func() {
			defer s.wg.Done()
			defer s.release()
			defer c.Close()
			defer s.unhold(c)
			handle(c)
		}()
	}
}

// relayed records a connection from client to target that the proxy
// relays: a from-app trace now, and a connection record with its bytes
// when it ends. It returns when the relay is over.
func (s *Server) relayed(kind string, client, up net.Conn, target string, early []byte, start time.Time) {
	rec := monitor.ConnRecord{Kind: kind, From: client.RemoteAddr().String(), To: target, Verdict: "open"}
	s.mon.TraceConn(monitor.FromApp, rec)
	in, out := relay.Conns(client, up, early)
	rec.Verdict, rec.BytesIn, rec.BytesOut, rec.Duration = "ok", uint64(in), uint64(out), time.Since(start)
	s.mon.Conn(rec)
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
