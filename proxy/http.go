package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wgsidecar/sidecar/monitor"
	"github.com/wgsidecar/sidecar/relay"
)

// HTTPConfig configures an HTTP proxy. The zero value listens on
// 127.0.0.1:3128 and asks for no authentication.
type HTTPConfig struct {
	// BindAddress is the host address to listen on; "127.0.0.1:3128"
	// when empty.
	BindAddress string
	// Username and Password, when either is set, are required of every
	// request as Basic credentials in Proxy-Authorization.
	Username, Password string
	// MaxConns bounds the concurrent client connections; relay.DefaultMaxConns
	// when zero. Connections beyond it are closed at once.
	MaxConns int
	// Logger receives the proxy's logs; slog.Default() when nil.
	Logger *slog.Logger
}

const (
	defaultHTTPBindAddr = "127.0.0.1:3128"
	// maxHeaderBytes bounds a request's header; a longer one gets 431.
	maxHeaderBytes = 64 << 10
	// httpIdleTimeout closes a client's idle keep-alive connection.
	httpIdleTimeout = 2 * time.Minute
	// proxyRealm is sent with 407 responses.
	proxyRealm = "wgsidecar"
	// viaName is how the proxy names itself in Via headers.
	viaName = "wgsidecar"
)

// hopHeaders are the hop-by-hop fields of RFC 9110 §7.6.1 (and the
// Proxy-Connection of older clients), plus the proxy authentication
// fields, which are meant for this proxy alone. The fields that
// Connection names are removed too.
var hopHeaders = []string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"TE",
	"Transfer-Encoding",
	"Upgrade",
	"Proxy-Authenticate",
	"Proxy-Authorization",
}

// ListenHTTP listens on cfg.BindAddress and serves HTTP proxy clients in
// background goroutines until Close: CONNECT host:port is tunnelled, and
// requests for absolute http:// (or https://) URLs are forwarded, both
// through d.
func ListenHTTP(cfg HTTPConfig, d relay.Dialer) (*Server, error) {
	bind := cfg.BindAddress
	if bind == "" {
		bind = defaultHTTPBindAddr
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("proxy: http: %w", err)
	}
	s := newServer("http", ln, d, cfg.MaxConns, logger(cfg.Logger, "http", ln.Addr()))
	h := &httpProxy{
		s:    s,
		auth: cfg.Username != "" || cfg.Password != "",
		user: sha256.Sum256([]byte(cfg.Username)),
		pass: sha256.Sum256([]byte(cfg.Password)),
	}
	s.transport = &http.Transport{
		Proxy:                 nil, // never the environment's proxy
		DialContext:           h.dialUpstream,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   handshakeTimeout,
		ExpectContinueTimeout: time.Second,
		// The client's Accept-Encoding goes upstream as it is and the
		// body comes back untouched.
		DisableCompression: true,
	}
	s.http = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: handshakeTimeout,
		IdleTimeout:       httpIdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return s.ctx },
		ConnState:         h.connState,
	}
	s.refuse = refuseHTTP
	s.conns.Enter()
	go func() {
		defer s.conns.Done()
		s.http.Serve(httpListener{s})
	}()
	s.log.Info("http proxy listening", "auth", h.auth)
	return s, nil
}

// refuseHTTP answers a client over the connection limit with 503 before
// it reads the request (lingeringClose then reads what the client sends,
// so the answer is not lost to a reset).
func refuseHTTP(c net.Conn) {
	const msg = "503 Service Unavailable: the proxy is at its connection limit\n"
	io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"+
		"Connection: close\r\nContent-Length: "+strconv.Itoa(len(msg))+"\r\n\r\n"+msg)
}

// httpProxy is the HTTP proxy protocol of a Server.
type httpProxy struct {
	s          *Server
	auth       bool
	user, pass [sha256.Size]byte // hashed, so comparing them leaks no length
}

// httpListener admits connections against MaxConns before net/http sees
// them. Each one it returns is counted in s.wg until net/http reports it
// closed or hijacked (connState).
type httpListener struct{ s *Server }

func (l httpListener) Accept() (net.Conn, error) {
	for {
		c, err := l.s.ln.Accept()
		if err != nil {
			return nil, err
		}
		if !l.s.admit() {
			l.s.refused(c)
			continue
		}
		if !l.s.conns.Enter() {
			l.s.conns.Release()
			c.Close()
			return nil, net.ErrClosed
		}
		return &httpConn{Conn: c, s: l.s}, nil
	}
}

func (l httpListener) Close() error   { return l.s.ln.Close() }
func (l httpListener) Addr() net.Addr { return l.s.ln.Addr() }

// httpConn is an admitted client connection; closing it makes room for
// another.
type httpConn struct {
	net.Conn
	s    *Server
	once sync.Once
}

func (c *httpConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.s.conns.Release)
	return err
}

// CloseWrite half-closes the connection, for relaying a CONNECT tunnel.
func (c *httpConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// SyscallConn gives the client socket's raw conn, so that a CONNECT
// tunnel's relay can poll it (see relay.Go); an error when the socket
// has none.
func (c *httpConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

// connState ends the count that httpListener.Accept began, once net/http
// is done with the connection. A hijacked one is counted again by the
// handler that relays it.
func (h *httpProxy) connState(_ net.Conn, state http.ConnState) {
	if state == http.StateClosed || state == http.StateHijacked {
		h.s.conns.Done()
	}
}

// dialUpstream dials for the forwarding transport.
func (h *httpProxy) dialUpstream(ctx context.Context, network, address string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	return h.s.d.DialContext(ctx, network, address)
}

func (h *httpProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.authorized(r) {
		h.s.mon.DropConn(monitor.FromApp, monitor.PolicyRefused, monitor.ConnRecord{
			Kind: "http", From: r.RemoteAddr, To: r.Host, Verdict: "refused: proxy authentication required"})
		w.Header().Set("Proxy-Authenticate", `Basic realm="`+proxyRealm+`"`)
		http.Error(w, "407 Proxy Authentication Required", http.StatusProxyAuthRequired)
		return
	}
	if r.Method == http.MethodConnect {
		h.connect(w, r)
		return
	}
	h.forward(w, r)
}

// authorized checks the request's Basic credentials, when the proxy wants
// any.
func (h *httpProxy) authorized(r *http.Request) bool {
	if !h.auth {
		return true
	}
	scheme, cred, _ := strings.Cut(strings.TrimSpace(r.Header.Get("Proxy-Authorization")), " ")
	if !strings.EqualFold(scheme, "Basic") {
		return false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if err != nil {
		return false
	}
	user, pass, ok := strings.Cut(string(raw), ":")
	if !ok {
		return false
	}
	userSum, passSum := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(pass))
	return subtle.ConstantTimeCompare(userSum[:], h.user[:])&subtle.ConstantTimeCompare(passSum[:], h.pass[:]) == 1
}

// badGateway answers a failed dial or upstream request: 504 for a
// timeout, 502 for the rest, with the reason.
func (h *httpProxy) badGateway(w http.ResponseWriter, r *http.Request, err error) {
	status := httpStatusFor(err)
	h.s.log.Debug("http proxy: upstream failed", "client", r.RemoteAddr, "method", r.Method, "target", r.RequestURI, "status", status, "err", err)
	http.Error(w, fmt.Sprintf("%d %s: %v", status, http.StatusText(status), err), status)
}

// connect answers CONNECT host:port: it dials the target, answers 200 and
// relays bytes both ways.
func (h *httpProxy) connect(w http.ResponseWriter, r *http.Request) {
	target := r.URL.Host
	host, port, err := net.SplitHostPort(target)
	if err == nil && host == "" {
		err = fmt.Errorf("no host in %q", target)
	}
	if err == nil {
		if n, perr := strconv.ParseUint(port, 10, 16); perr != nil || n == 0 {
			err = fmt.Errorf("bad port in %q", target)
		}
	}
	if err != nil {
		http.Error(w, "400 Bad Request: CONNECT needs host:port: "+err.Error(), http.StatusBadRequest)
		return
	}
	// Not r.Context(): net/http cancels that when the client shuts
	// down its writing side, which a client may do right after its
	// request. A client that leaves altogether is noticed when the
	// answer cannot be written.
	start := time.Now()
	ctx, cancel := context.WithTimeout(h.s.ctx, dialTimeout)
	up, err := h.s.d.DialContext(ctx, "tcp", target)
	cancel()
	if err != nil {
		h.s.dialFailed("http-connect", r.RemoteAddr, target, err, start)
		h.badGateway(w, r, err)
		return
	}
	// The relay outlives net/http's interest in the connection: count
	// it before hijacking ends that interest.
	if !h.s.conns.Enter() {
		up.Close()
		http.Error(w, "503 Service Unavailable: proxy closing", http.StatusServiceUnavailable)
		return
	}
	defer h.s.conns.Done()
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		up.Close()
		http.Error(w, "500 Internal Server Error: "+err.Error(), http.StatusInternalServerError)
		return
	}
	// Bytes the client sent after its request (a TLS ClientHello, say)
	// may already sit in net/http's buffer.
	var early []byte
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		early = append([]byte(nil), b...)
	}
	if !h.s.conns.Hold(c) {
		up.Close()
		return
	}
	end := func() { h.s.conns.Unhold(c) }
	if !h.s.conns.Hold(up) {
		end()
		c.Close()
		return
	}
	c.SetWriteDeadline(time.Now().Add(handshakeTimeout))
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		end()
		h.s.conns.Unhold(up)
		c.Close()
		up.Close()
		return
	}
	c.SetDeadline(time.Time{})
	h.s.log.Debug("http proxy: connect", "client", r.RemoteAddr, "target", target)
	if !h.s.relayed("http-connect", c, up, target, early, start, end) {
		end()
	}
}

// forward passes a request for an absolute URL upstream and streams the
// answer back.
func (h *httpProxy) forward(w http.ResponseWriter, r *http.Request) {
	if !r.URL.IsAbs() || r.URL.Host == "" {
		http.Error(w, "400 Bad Request: a proxy request needs an absolute URL (http://host/path)", http.StatusBadRequest)
		return
	}
	if r.URL.Scheme != "http" && r.URL.Scheme != "https" {
		http.Error(w, "400 Bad Request: unsupported URL scheme "+strconv.Quote(r.URL.Scheme), http.StatusBadRequest)
		return
	}
	if p := r.URL.Port(); p != "" {
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
			http.Error(w, "400 Bad Request: bad port in "+strconv.Quote(r.URL.Host), http.StatusBadRequest)
			return
		}
	}
	// Both directions may stream at once: the upstream may answer
	// before the client has sent all of its body.
	rc := http.NewResponseController(w)
	rc.EnableFullDuplex()

	// As in connect, the upstream request lives as long as the proxy,
	// not as long as the client keeps its writing side open.
	ctx, cancel := context.WithCancel(h.s.ctx)
	defer cancel()
	out := upstreamRequest(ctx, r)

	start := time.Now()
	sent := &countingBody{}
	if out.Body != nil {
		sent.ReadCloser = out.Body
		out.Body = sent
	}
	resp, err := h.s.transport.RoundTrip(out)
	if err != nil {
		if ctx.Err() != nil {
			return // the proxy is closing
		}
		if berr := sent.readErr(); berr != nil {
			// The client's own body was at fault (a malformed
			// chunk, say), not the upstream.
			h.s.dialFailed("http", r.RemoteAddr, r.URL.Host, berr, start)
			http.Error(w, "400 Bad Request: reading the request body: "+berr.Error(), http.StatusBadRequest)
			return
		}
		h.s.dialFailed("http", r.RemoteAddr, r.URL.Host, err, start)
		h.badGateway(w, r, err)
		return
	}
	rec := monitor.ConnRecord{Kind: "http", From: r.RemoteAddr, To: r.URL.Host, Verdict: "open"}
	h.s.mon.TraceConn(monitor.FromApp, rec)
	defer resp.Body.Close()
	writeHeader(w, rc, resp)

	received, err := h.copyBody(w, rc, resp.Body)
	rec.BytesIn, rec.BytesOut, rec.Duration = uint64(received), sent.n.Load(), time.Since(start)
	if err != nil {
		rec.Verdict = "error: response body cut off: " + err.Error()
		h.s.mon.Conn(rec)
		// The client must not mistake a cut-off body for a whole
		// one: abort the response, which closes the connection.
		h.s.log.Debug("http proxy: response body cut off", "client", r.RemoteAddr, "target", r.RequestURI, "err", err)
		panic(http.ErrAbortHandler)
	}
	rec.Verdict = fmt.Sprintf("ok %d", resp.StatusCode)
	h.s.mon.Conn(rec)
	dst := w.Header()
	for k, vv := range resp.Trailer {
		dst[k] = vv
	}
}

// upstreamRequest returns the request to send upstream for the client's
// request r, in ctx: its absolute URL without user info, its headers
// without hop-by-hop fields and with our Via, its body and trailers.
func upstreamRequest(ctx context.Context, r *http.Request) *http.Request {
	out := r.Clone(ctx)
	out.RequestURI = ""
	out.URL.User = nil
	// The target's authority wins over the Host field (RFC 9112 §3.2.2).
	out.Host = ""
	out.Close = false
	if r.ContentLength == 0 {
		out.Body = nil // a server request's empty body is not nil
	}
	// Trailers arrive in r.Trailer after the body; share the map.
	out.Trailer = r.Trailer
	removeHopByHop(out.Header)
	addVia(out.Header, r.ProtoMajor, r.ProtoMinor)
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = []string{""} // not Go's own
	}
	return out
}

// writeHeader sends the client the upstream's status and header, without
// hop-by-hop fields, with the trailers it announces and our Via.
func writeHeader(w http.ResponseWriter, rc *http.ResponseController, resp *http.Response) {
	removeHopByHop(resp.Header)
	resp.Header.Del("Trailer")
	dst := w.Header()
	for k, vv := range resp.Header {
		dst[k] = vv
	}
	for k := range resp.Trailer {
		dst.Add("Trailer", k)
	}
	addVia(dst, resp.ProtoMajor, resp.ProtoMinor)
	w.WriteHeader(resp.StatusCode)
	// The header goes out now, not with the first piece of body: the
	// client may be waiting for it before it sends the rest of its own.
	rc.Flush()
}

// copyBody streams an upstream body to the client, flushing after every
// write so that slow and endless bodies (event streams) arrive as they
// come. It returns the upstream's read error, not the client's write
// error: a client that left is net/http's to notice.
func (h *httpProxy) copyBody(w io.Writer, rc *http.ResponseController, body io.Reader) (written int64, err error) {
	bp := bodyBufs.Get().(*[]byte)
	defer bodyBufs.Put(bp)
	buf := *bp
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			m, err := w.Write(buf[:n])
			written += int64(m)
			if err != nil {
				return written, nil
			}
			if err := rc.Flush(); err != nil {
				return written, nil
			}
		}
		if rerr == io.EOF {
			return written, nil
		}
		if rerr != nil {
			return written, rerr
		}
	}
}

// countingBody counts what the transport reads of a request body (it may
// still be sending while the response streams: full duplex), and keeps
// the first error reading it other than its end.
type countingBody struct {
	io.ReadCloser
	n   atomic.Uint64
	err atomic.Pointer[error]
}

func (c *countingBody) Read(b []byte) (int, error) {
	n, err := c.ReadCloser.Read(b)
	c.n.Add(uint64(n))
	if err != nil && err != io.EOF {
		c.err.CompareAndSwap(nil, &err)
	}
	return n, err
}

// readErr is the first error reading the body, or nil.
func (c *countingBody) readErr() error {
	if p := c.err.Load(); p != nil {
		return *p
	}
	return nil
}

// removeHopByHop deletes the hop-by-hop fields from h: those Connection
// names, and hopHeaders.
func removeHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = textproto.TrimString(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

// addVia appends this proxy to the Via field (RFC 9110 §7.6.3).
func addVia(h http.Header, major, minor int) {
	proto := strconv.Itoa(major) + "." + strconv.Itoa(minor)
	if major == 2 || major == 3 {
		proto = strconv.Itoa(major)
	}
	h.Add("Via", proto+" "+viaName)
}
