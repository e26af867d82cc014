package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/wgsidecar/sidecar/monitor"
	"github.com/wgsidecar/sidecar/relay"
)

// SOCKS5Config configures a SOCKS5 proxy (RFC 1928). The zero value
// listens on 127.0.0.1:1080 and asks for no authentication.
type SOCKS5Config struct {
	// BindAddress is the host address to listen on; "127.0.0.1:1080"
	// when empty. A UDP association's relay socket binds to the IP
	// address its client connected to.
	BindAddress string
	// Username and Password, when either is set, are required of every
	// client (RFC 1929); each is at most 255 bytes. When neither is set,
	// a client that offers only username/password authentication is
	// let in whatever it sends.
	Username, Password string
	// MaxConns bounds the concurrent client connections, UDP
	// associations' control connections included; relay.DefaultMaxConns
	// when zero. Connections beyond it are closed at once.
	MaxConns int
	// Logger receives the proxy's logs; slog.Default() when nil.
	Logger *slog.Logger

	// handshakeTimeout replaces handshakeTimeout in tests.
	handshakeTimeout time.Duration
}

// SOCKS5 protocol constants (RFC 1928, RFC 1929).
const (
	socksVersion = 0x05
	authVersion  = 0x01

	methodNoAuth       = 0x00
	methodUserPass     = 0x02
	methodNoAcceptable = 0xff

	cmdConnect      = 0x01
	cmdBind         = 0x02
	cmdUDPAssociate = 0x03

	atypIPv4   = 0x01
	atypDomain = 0x03
	atypIPv6   = 0x04

	repSucceeded        = 0x00
	repGeneralFailure   = 0x01
	repNetUnreachable   = 0x03
	repHostUnreachable  = 0x04
	repConnRefused      = 0x05
	repTTLExpired       = 0x06
	repCmdNotSupported  = 0x07
	repAddrNotSupported = 0x08

	authStatusSucceeded = 0x00
	authStatusFailed    = 0x01

	maxSOCKSAddrLen   = 1 + 1 + 255 + 2 // ATYP, length, longest name, port
	maxSOCKSIPAddrLen = 1 + 16 + 2      // ATYP, IPv6 address, port

	defaultSOCKS5BindAddr = "127.0.0.1:1080"

	// lingerTimeout and lingerMax bound how long and how much
	// lingeringClose reads.
	lingerTimeout = 500 * time.Millisecond
	lingerMax     = 64 << 10
)

var (
	errAddrType    = errors.New("unknown address type")
	errShortAddr   = errors.New("truncated address")
	errEmptyName   = errors.New("empty domain name")
	errBadName     = errors.New("malformed domain name")
	errWrongSecret = errors.New("wrong username or password")
)

// ListenSOCKS5 listens on cfg.BindAddress and serves SOCKS5 clients in
// background goroutines until Close: CONNECT and UDP ASSOCIATE through d,
// with domain names resolved by d (as socks5h:// clients expect). BIND is
// refused as not supported.
func ListenSOCKS5(cfg SOCKS5Config, d relay.Dialer) (*Server, error) {
	if len(cfg.Username) > 255 || len(cfg.Password) > 255 {
		return nil, errors.New("proxy: socks5: username and password are at most 255 bytes each (RFC 1929)")
	}
	bind := cfg.BindAddress
	if bind == "" {
		bind = defaultSOCKS5BindAddr
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("proxy: socks5: %w", err)
	}
	s := newServer("socks5", ln, d, cfg.MaxConns, logger(cfg.Logger, "socks5", ln.Addr()))
	p := &socks5{
		s:       s,
		auth:    cfg.Username != "" || cfg.Password != "",
		user:    sha256.Sum256([]byte(cfg.Username)),
		pass:    sha256.Sum256([]byte(cfg.Password)),
		timeout: cfg.handshakeTimeout,
	}
	if p.timeout <= 0 {
		p.timeout = handshakeTimeout
	}
	s.refuse = p.refuse
	s.conns.Enter()
	go s.acceptLoop(p.serve)
	s.log.Info("socks5 proxy listening", "auth", p.auth)
	return s, nil
}

// socks5 is the SOCKS5 protocol of a Server.
type socks5 struct {
	s          *Server
	auth       bool
	user, pass [sha256.Size]byte // hashed, so comparing them leaks no length
	timeout    time.Duration
}

// socksAddr is a SOCKS5 address: an IP address or a domain name, and a
// port.
type socksAddr struct {
	ip   netip.Addr
	name string // set for a domain name that is not an IP literal
	port uint16
}

// String returns the address as "host:port", for dialing.
func (a socksAddr) String() string {
	if a.name != "" {
		return net.JoinHostPort(a.name, strconv.Itoa(int(a.port)))
	}
	return netip.AddrPortFrom(a.ip, a.port).String()
}

// parseAddr parses ATYP, DST.ADDR and DST.PORT at the start of b and
// returns the address and the bytes it took.
func parseAddr(b []byte) (socksAddr, int, error) {
	var a socksAddr
	if len(b) < 1 {
		return a, 0, errShortAddr
	}
	var n int
	switch b[0] {
	case atypIPv4:
		n = 1 + 4 + 2
		if len(b) < n {
			return a, 0, errShortAddr
		}
		a.ip = netip.AddrFrom4([4]byte(b[1:5]))
	case atypIPv6:
		n = 1 + 16 + 2
		if len(b) < n {
			return a, 0, errShortAddr
		}
		a.ip = netip.AddrFrom16([16]byte(b[1:17])).Unmap()
	case atypDomain:
		if len(b) < 2 {
			return a, 0, errShortAddr
		}
		l := int(b[1])
		n = 1 + 1 + l + 2
		if len(b) < n {
			return a, 0, errShortAddr
		}
		if l == 0 {
			return a, 0, errEmptyName
		}
		name := string(b[2 : 2+l])
		if ip, err := netip.ParseAddr(name); err == nil && ip.Zone() == "" {
			a.ip = ip.Unmap() // an IP literal sent as a name
		} else if validName(b[2 : 2+l]) {
			a.name = name
		} else {
			return a, 0, errBadName
		}
	default:
		return a, 0, errAddrType
	}
	a.port = binary.BigEndian.Uint16(b[n-2 : n])
	return a, n, nil
}

// validName reports whether a domain name from a client can be passed
// on as the host of a "host:port" address: no control characters,
// spaces, or characters that delimit ports, IPv6 literals, zones, paths or
// user information. Letters beyond ASCII (UTF-8) pass; the resolver
// decides what they mean.
func validName(name []byte) bool {
	for _, c := range name {
		if c <= ' ' || c == 0x7f || strings.IndexByte(":[]%/\\@", c) >= 0 {
			return false
		}
	}
	return true
}

// readAddr reads ATYP, DST.ADDR and DST.PORT from r, knowing atyp
// already.
func readAddr(r io.Reader, atyp byte) (socksAddr, error) {
	var buf [maxSOCKSAddrLen]byte
	buf[0] = atyp
	var n int
	switch atyp {
	case atypIPv4:
		n = 1 + 4 + 2
	case atypIPv6:
		n = 1 + 16 + 2
	case atypDomain:
		if _, err := io.ReadFull(r, buf[1:2]); err != nil {
			return socksAddr{}, err
		}
		n = 1 + 1 + int(buf[1]) + 2
	default:
		return socksAddr{}, errAddrType
	}
	start := 1
	if atyp == atypDomain {
		start = 2
	}
	if _, err := io.ReadFull(r, buf[start:n]); err != nil {
		return socksAddr{}, err
	}
	a, _, err := parseAddr(buf[:n])
	return a, err
}

// appendAddr appends ap as ATYP, BND.ADDR and BND.PORT; an invalid
// address is sent as 0.0.0.0.
func appendAddr(b []byte, ap netip.AddrPort) []byte {
	ip := ap.Addr().Unmap()
	switch {
	case ip.Is4():
		a := ip.As4()
		b = append(b, atypIPv4)
		b = append(b, a[:]...)
	case ip.Is6():
		a := ip.As16()
		b = append(b, atypIPv6)
		b = append(b, a[:]...)
	default:
		b = append(b, atypIPv4, 0, 0, 0, 0)
	}
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

// writeReply sends a reply: VER REP RSV ATYP BND.ADDR BND.PORT.
func writeReply(w io.Writer, rep byte, bnd netip.AddrPort) error {
	var buf [3 + maxSOCKSIPAddrLen]byte
	b := append(buf[:0], socksVersion, rep, 0)
	_, err := w.Write(appendAddr(b, bnd))
	return err
}

// request is what a client asked for.
type request struct {
	cmd byte
	dst socksAddr
}

// handshake reads the client's greeting, authenticates it and reads its
// request, writing the replies the protocol calls for on the way. An
// unsupported command or address type is refused here with its reply
// code; the caller answers CONNECT and UDP ASSOCIATE, the only commands
// it returns.
func (p *socks5) handshake(rw io.ReadWriter) (request, error) {
	// Greeting: VER NMETHODS METHODS.
	var buf [255]byte
	if _, err := io.ReadFull(rw, buf[:2]); err != nil {
		return request{}, fmt.Errorf("greeting: %w", err)
	}
	if buf[0] != socksVersion {
		return request{}, fmt.Errorf("greeting: version %d, not SOCKS5", buf[0])
	}
	methods := buf[:buf[1]]
	if _, err := io.ReadFull(rw, methods); err != nil {
		return request{}, fmt.Errorf("greeting: %w", err)
	}
	method := p.chooseMethod(methods)
	if _, err := rw.Write([]byte{socksVersion, method}); err != nil {
		return request{}, err
	}
	switch method {
	case methodNoAcceptable:
		return request{}, errors.New("greeting: no acceptable authentication method offered")
	case methodUserPass:
		if err := p.authenticate(rw); err != nil {
			return request{}, err
		}
	}

	// Request: VER CMD RSV ATYP DST.ADDR DST.PORT.
	var hdr [4]byte
	if _, err := io.ReadFull(rw, hdr[:]); err != nil {
		return request{}, fmt.Errorf("request: %w", err)
	}
	if hdr[0] != socksVersion {
		writeReply(rw, repGeneralFailure, netip.AddrPort{})
		return request{}, fmt.Errorf("request: version %d, not SOCKS5", hdr[0])
	}
	dst, err := readAddr(rw, hdr[3])
	switch {
	case errors.Is(err, errAddrType):
		writeReply(rw, repAddrNotSupported, netip.AddrPort{})
		return request{}, fmt.Errorf("request: address type %d: %w", hdr[3], err)
	case errors.Is(err, errEmptyName), errors.Is(err, errBadName):
		writeReply(rw, repHostUnreachable, netip.AddrPort{})
		return request{}, fmt.Errorf("request: %w", err)
	case err != nil:
		return request{}, fmt.Errorf("request: %w", err)
	}
	switch hdr[1] {
	case cmdConnect, cmdUDPAssociate:
		return request{cmd: hdr[1], dst: dst}, nil
	}
	writeReply(rw, repCmdNotSupported, netip.AddrPort{})
	if hdr[1] == cmdBind {
		return request{}, errors.New("request: BIND is not supported")
	}
	return request{}, fmt.Errorf("request: unknown command %d", hdr[1])
}

// chooseMethod picks the authentication method for the offered ones.
func (p *socks5) chooseMethod(offered []byte) byte {
	has := func(m byte) bool {
		for _, o := range offered {
			if o == m {
				return true
			}
		}
		return false
	}
	switch {
	case p.auth && has(methodUserPass):
		return methodUserPass
	case p.auth:
		return methodNoAcceptable
	case has(methodNoAuth):
		return methodNoAuth
	case has(methodUserPass):
		return methodUserPass // any credentials will do
	}
	return methodNoAcceptable
}

// authenticate runs the username/password subnegotiation (RFC 1929):
// VER ULEN UNAME PLEN PASSWD, answered with VER STATUS.
func (p *socks5) authenticate(rw io.ReadWriter) error {
	var buf [255]byte
	if _, err := io.ReadFull(rw, buf[:2]); err != nil {
		return fmt.Errorf("authentication: %w", err)
	}
	if buf[0] != authVersion {
		rw.Write([]byte{authVersion, authStatusFailed})
		return fmt.Errorf("authentication: subnegotiation version %d, not 1", buf[0])
	}
	user := buf[:buf[1]]
	if _, err := io.ReadFull(rw, user); err != nil {
		return fmt.Errorf("authentication: %w", err)
	}
	userSum := sha256.Sum256(user)
	if _, err := io.ReadFull(rw, buf[:1]); err != nil {
		return fmt.Errorf("authentication: %w", err)
	}
	pass := buf[:buf[0]]
	if _, err := io.ReadFull(rw, pass); err != nil {
		return fmt.Errorf("authentication: %w", err)
	}
	passSum := sha256.Sum256(pass)
	ok := !p.auth ||
		subtle.ConstantTimeCompare(userSum[:], p.user[:])&subtle.ConstantTimeCompare(passSum[:], p.pass[:]) == 1
	status := byte(authStatusSucceeded)
	if !ok {
		status = authStatusFailed
	}
	if _, err := rw.Write([]byte{authVersion, status}); err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("authentication: %w", errWrongSecret)
	}
	return nil
}

// serve runs one client connection; true when a relay took it over
// (see Server.acceptLoop).
func (p *socks5) serve(c net.Conn, end func()) bool {
	c.SetDeadline(time.Now().Add(p.timeout))
	req, err := p.handshake(c)
	if err != nil {
		level := slog.LevelDebug
		if errors.Is(err, errWrongSecret) {
			level = slog.LevelInfo
			p.s.mon.DropConn(monitor.FromApp, monitor.PolicyRefused, monitor.ConnRecord{
				Kind: "socks5", From: c.RemoteAddr().String(), Verdict: "refused: " + errWrongSecret.Error()})
		}
		p.s.log.Log(p.s.ctx, level, "socks5 handshake failed", "client", c.RemoteAddr().String(), "err", err)
		lingeringClose(c)
		return false
	}
	if req.cmd == cmdConnect {
		return p.connect(c, req.dst, end)
	}
	p.associate(c, req.dst)
	return false
}

// refuse answers a client over the connection limit: it lets the
// greeting through (any credentials: nothing is served) and answers the
// request with a general failure (0x01), so the client can say why
// instead of seeing the connection drop.
func (p *socks5) refuse(c net.Conn) {
	open := socks5{s: p.s} // no authentication to check
	if _, err := open.handshake(c); err == nil {
		writeReply(c, repGeneralFailure, netip.AddrPort{})
	}
}

// lingeringClose shuts down c's writing side and discards what the
// client still sends, for a moment, before the caller closes c. Closing
// at once with unread input would reset the connection, and a reset can
// destroy the error reply before the client reads it.
func lingeringClose(c net.Conn) {
	if cw, ok := c.(closeWriter); ok {
		cw.CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(lingerTimeout))
	io.CopyN(io.Discard, c, lingerMax)
}

// connect answers CONNECT: it dials dst and starts relaying, reporting
// true when the relay took c over (see Server.acceptLoop).
func (p *socks5) connect(c net.Conn, dst socksAddr, end func()) bool {
	start := time.Now()
	ctx, cancel := context.WithTimeout(p.s.ctx, dialTimeout)
	up, err := p.s.d.DialContext(ctx, "tcp", dst.String())
	cancel()
	// The dial may have outlasted the handshake's deadline; the reply
	// gets a deadline of its own.
	c.SetDeadline(time.Now().Add(p.timeout))
	if err != nil {
		rep := socksReplyFor(err)
		p.s.log.Debug("socks5 connect failed", "client", c.RemoteAddr().String(), "dst", dst.String(), "reply", rep, "err", err)
		p.s.dialFailed("socks5", c.RemoteAddr().String(), dst.String(), err, start)
		writeReply(c, rep, netip.AddrPort{})
		lingeringClose(c)
		return false
	}
	if !p.s.conns.Hold(up) {
		return false
	}
	if err := writeReply(c, repSucceeded, addrPortOf(up.LocalAddr())); err != nil {
		p.s.conns.Unhold(up)
		up.Close()
		return false
	}
	c.SetDeadline(time.Time{})
	p.s.log.Debug("socks5 connect", "client", c.RemoteAddr().String(), "dst", dst.String())
	return p.s.relayed("socks5", c, up, dst.String(), nil, start, end)
}
