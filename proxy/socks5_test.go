package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/internal/leaktest"
	"github.com/wgsidecar/sidecar/relay"
)

func TestSOCKS5CurlNoAuth(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	web, _ := startWeb(t, "127.0.0.1")
	d := &hostDialer{}
	s := startSOCKS5(t, SOCKS5Config{}, d)

	out, err := curl(t, "--socks5-hostname", s.Addr().String(), "http://localhost:"+port(web.Listener.Addr())+"/no-auth")
	if err != nil {
		t.Fatal(err)
	}
	if out != "hello /no-auth" {
		t.Errorf("body %q; want %q", out, "hello /no-auth")
	}
	// socks5h: the name went to the proxy, which resolved it through
	// the Dialer.
	if got := d.lookups(); !slices.Contains(got, "localhost") {
		t.Errorf("Dialer resolved %q; want localhost among them", got)
	}
	s.Close()
}

func TestSOCKS5CurlAuth(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	web, _ := startWeb(t, "127.0.0.1")
	s := startSOCKS5(t, SOCKS5Config{Username: "u", Password: "p"}, &hostDialer{})
	url := "http://localhost:" + port(web.Listener.Addr()) + "/auth"

	t.Run("right", func(t *testing.T) {
		out, err := curl(t, "--proxy", "socks5h://u:p@"+s.Addr().String(), url)
		if err != nil {
			t.Fatal(err)
		}
		if out != "hello /auth" {
			t.Errorf("body %q", out)
		}
	})
	t.Run("proxy-user", func(t *testing.T) {
		out, err := curl(t, "--socks5-hostname", s.Addr().String(), "--proxy-user", "u:p", url)
		if err != nil {
			t.Fatal(err)
		}
		if out != "hello /auth" {
			t.Errorf("body %q", out)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		if out, err := curl(t, "--proxy", "socks5h://u:wrong@"+s.Addr().String(), url); err == nil {
			t.Fatalf("curl succeeded with a wrong password: %q", out)
		}
	})
	t.Run("no credentials", func(t *testing.T) {
		if out, err := curl(t, "--socks5-hostname", s.Addr().String(), url); err == nil {
			t.Fatalf("curl succeeded without credentials: %q", out)
		}
	})
	t.Run("status", func(t *testing.T) {
		// RFC 1929: a wrong password gets status 0x01, then the
		// connection closes.
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte{5, 1, methodUserPass, 1, 1, 'u', 1, 'x'})
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		if want := []byte{5, methodUserPass, 1, authStatusFailed}; !bytes.Equal(got, want) {
			t.Errorf("got %x; want %x then close", got, want)
		}
	})
	s.Close()
}

func TestSOCKS5CurlIPv6(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	web, _ := startWeb(t, "::1")
	s := startSOCKS5(t, SOCKS5Config{}, &hostDialer{})
	for _, flag := range []string{"--socks5-hostname", "--socks5"} {
		out, err := curl(t, flag, s.Addr().String(), "http://[::1]:"+port(web.Listener.Addr())+"/v6")
		if err != nil {
			t.Fatal(err)
		}
		if out != "hello /v6" {
			t.Errorf("%s: body %q", flag, out)
		}
	}
	s.Close()
}

func TestSOCKS5Connect(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	remotes := make(chan string, 8)
	up4 := startTCP(t, "tcp", "127.0.0.1:0", func(c net.Conn) { remotes <- c.RemoteAddr().String(); echo(c) })
	up6 := startTCP(t, "tcp", "[::1]:0", func(c net.Conn) { remotes <- c.RemoteAddr().String(); echo(c) })
	s := startSOCKS5(t, SOCKS5Config{}, &hostDialer{})

	for _, target := range []string{
		up4.Addr(),
		up6.Addr(),
		"localhost:" + port(up4.ln.Addr()),
		"[::ffff:127.0.0.1]:" + port(up4.ln.Addr()), // IPv4-mapped, as ATYP IPv6
	} {
		t.Run(target, func(t *testing.T) {
			c, bnd, err := socksConnect(s.Addr().String(), target, "", "")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// BND.ADDR and BND.PORT: the proxy's end of the upstream
			// connection, as the upstream sees it.
			if got := <-remotes; got != bnd.String() {
				t.Errorf("BND %v; upstream saw the proxy as %v", bnd, got)
			}
			msg := []byte("hello " + target)
			c.Write(msg)
			c.(*net.TCPConn).CloseWrite()
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(got, msg) {
				t.Errorf("echo %q, %v; want %q", got, err, msg)
			}
		})
	}
	s.Close()
}

func TestSOCKS5ReplyCodes(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedAddr := closed.Addr().String()
	closed.Close()

	for _, tc := range []struct {
		name   string
		d      relay.Dialer
		target string
		want   byte
	}{
		{"refused", &hostDialer{}, refusedAddr, repConnRefused},
		{"name not found", &hostDialer{}, "nowhere.invalid:80", repHostUnreachable},
		{"host unreachable", &errDialer{err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.EHOSTUNREACH}}, "10.0.0.1:80", repHostUnreachable},
		{"network unreachable", &errDialer{err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ENETUNREACH}}, "10.0.0.1:80", repNetUnreachable},
		{"timeout", &errDialer{err: fmt.Errorf("dial: %w", context.DeadlineExceeded)}, "10.0.0.1:80", repTTLExpired},
		{"gvisor refused", &errDialer{err: &net.OpError{Op: "connect", Net: "tcp", Err: errors.New("connection was refused")}}, "10.0.0.1:80", repConnRefused},
		{"gvisor no route", &errDialer{err: &net.OpError{Op: "connect", Net: "tcp", Err: errors.New("no route to host")}}, "10.0.0.1:80", repHostUnreachable},
		{"other", &errDialer{err: errors.New("boom")}, "10.0.0.1:80", repGeneralFailure},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startSOCKS5(t, SOCKS5Config{}, tc.d)
			_, _, err := socksConnect(s.Addr().String(), tc.target, "", "")
			var se socksError
			if !errors.As(err, &se) || byte(se) != tc.want {
				t.Errorf("got %v; want reply %#02x", err, tc.want)
			}
			s.Close()
		})
	}
}

// TestSOCKS5ProtocolErrors feeds malformed and unsupported handshakes and
// checks the exact answer, followed by a clean close.
func TestSOCKS5ProtocolErrors(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	noAuth := startSOCKS5(t, SOCKS5Config{}, &hostDialer{})
	auth := startSOCKS5(t, SOCKS5Config{Username: "u", Password: "p"}, &hostDialer{})
	const (
		greet     = "\x05\x01\x00"
		ok        = "\x05\x00"
		v4target  = "\x01\x7f\x00\x00\x01\x00\x50"
		zeroReply = "\x01\x00\x00\x00\x00\x00\x00"
	)
	for _, tc := range []struct {
		name     string
		auth     bool
		in, want string
	}{
		{"empty", false, "", ""},
		{"socks4", false, "\x04\x01\x00\x50\x7f\x00\x00\x01\x00", ""},
		{"http", false, "GET / HTTP/1.1\r\n\r\n", ""},
		{"no methods", false, "\x05\x00", "\x05\xff"},
		{"gssapi only", false, "\x05\x01\x01", "\x05\xff"},
		{"truncated greeting", false, "\x05\x03\x00", ""},
		{"no auth offered to auth server", true, greet, "\x05\xff"},
		{"auth bad version", true, "\x05\x01\x02\x05\x01u\x01p", "\x05\x02\x01\x01"},
		{"auth truncated", true, "\x05\x01\x02\x01\x05us", "\x05\x02"},
		{"auth wrong user", true, "\x05\x01\x02\x01\x01v\x01p", "\x05\x02\x01\x01"},
		{"auth empty", true, "\x05\x01\x02\x01\x00\x00", "\x05\x02\x01\x01"},
		{"bind", false, greet + "\x05\x02\x00" + v4target, ok + "\x05\x07\x00" + zeroReply},
		{"unknown command", false, greet + "\x05\x09\x00" + v4target, ok + "\x05\x07\x00" + zeroReply},
		{"bad atyp", false, greet + "\x05\x01\x00\x05\x7f\x00\x00\x01\x00\x50", ok + "\x05\x08\x00" + zeroReply},
		{"bind bad atyp", false, greet + "\x05\x02\x00\x02", ok + "\x05\x08\x00" + zeroReply},
		{"bad request version", false, greet + "\x04\x01\x00" + v4target, ok + "\x05\x01\x00" + zeroReply},
		{"empty name", false, greet + "\x05\x01\x00\x03\x00\x00\x50", ok + "\x05\x04\x00" + zeroReply},
		{"malformed name", false, greet + "\x05\x01\x00\x03\x05a/b:c\x00\x50", ok + "\x05\x04\x00" + zeroReply},
		{"truncated request", false, greet + "\x05\x01\x00", ok},
		{"truncated ipv4", false, greet + "\x05\x01\x00\x01\x7f\x00", ok},
		{"truncated ipv6", false, greet + "\x05\x01\x00\x04\x00\x00\x00", ok},
		{"truncated name", false, greet + "\x05\x01\x00\x03\x10abc", ok},
		{"truncated port", false, greet + "\x05\x01\x00\x03\x03abc\x00", ok},
		{"no such name", false, greet + "\x05\x01\x00\x03\x07invalid\x00\x50", ok + "\x05\x04\x00" + zeroReply},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := noAuth
			if tc.auth {
				s = auth
			}
			c, err := net.Dial("tcp", s.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			c.Write([]byte(tc.in))
			c.(*net.TCPConn).CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("after %q: %v (want the proxy to close)", got, err)
			}
			if string(got) != tc.want {
				t.Errorf("got %q; want %q", got, tc.want)
			}
		})
	}
	noAuth.Close()
	auth.Close()
}

func TestSOCKS5HandshakeTimeout(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	s := startSOCKS5(t, SOCKS5Config{handshakeTimeout: 200 * time.Millisecond}, &hostDialer{})
	for _, in := range []string{"", "\x05", "\x05\x01\x00", "\x05\x01\x00\x05\x01\x00\x03\x09"} {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(in))
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadAll(c); err != nil {
			t.Errorf("%q: %v; want the proxy to give up and close", in, err)
		}
		c.Close()
	}
	s.Close()
}

func TestSOCKS5HalfClose(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	reply := bytes.Repeat([]byte("answer "), 100_000)
	up := startTCP(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		// Answer only once the request has ended.
		req, err := io.ReadAll(c)
		if err != nil || string(req) != "question" {
			return
		}
		c.Write(reply)
	})
	s := startSOCKS5(t, SOCKS5Config{}, &hostDialer{})
	c, _, err := socksConnect(s.Addr().String(), up.Addr(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("question"))
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, reply) {
		t.Errorf("got %d bytes; want the whole %d-byte answer", len(got), len(reply))
	}
	c.Close()
	s.Close()
}

func TestSOCKS5UDPAssociate(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	echo4 := udpEcho(t, "127.0.0.1:0")
	echo6 := udpEcho(t, "[::1]:0")

	for _, tc := range []struct {
		name, bind, local, target string
		wantFrom                  string
	}{
		{"ipv4", "127.0.0.1:0", "127.0.0.1:0", echo4.String(), echo4.String()},
		{"ipv6", "[::1]:0", "127.0.0.1:0", echo6.String(), echo6.String()},
		{"name", "127.0.0.1:0", "127.0.0.1:0", "localhost:" + port(echo4), echo4.String()},
		{"ipv6 client", "127.0.0.1:0", "[::1]:0", echo4.String(), echo4.String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proxyBind := "127.0.0.1:0"
			if strings.HasPrefix(tc.local, "[") {
				proxyBind = "[::1]:0"
			}
			s := startSOCKS5(t, SOCKS5Config{BindAddress: proxyBind}, &hostDialer{udpBind: tc.bind})
			u, err := socksAssociate(s.Addr().String(), tc.local)
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			// The relay socket is on the proxy's bind IP.
			if want := addrPortOf(s.Addr()).Addr(); u.relay.Addr() != want {
				t.Errorf("relay on %v; want %v", u.relay.Addr(), want)
			}
			for i := range 3 {
				msg := fmt.Appendf(nil, "datagram %d", i)
				if err := u.send(tc.target, msg); err != nil {
					t.Fatal(err)
				}
				from, got, err := u.recv(10 * time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if from.String() != tc.wantFrom || string(got) != "echo:"+string(msg) {
					t.Errorf("got %q from %v; want %q from %v", got, from, "echo:"+string(msg), tc.wantFrom)
				}
			}
			u.Close()
			s.Close()
		})
	}

	t.Run("drops", func(t *testing.T) {
		s := startSOCKS5(t, SOCKS5Config{}, &hostDialer{})
		u, err := socksAssociate(s.Addr().String(), "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		hdr := append([]byte{0, 0, 0}, encodeAddr(echo4.String())...)
		// A fragment, a bad address type, a header cut short and an
		// unknown name are all dropped.
		u.sendRaw(append([]byte{0, 0, 1}, append(encodeAddr(echo4.String()), "fragment"...)...))
		u.sendRaw([]byte{0, 0, 0, 9, 1, 2, 3, 4, 0, 80, 'x'})
		u.sendRaw([]byte{0, 0, 0, atypIPv6, 1, 2})
		u.sendRaw([]byte{0, 0})
		u.send("nowhere.invalid:7", []byte("unknown name"))
		// A stranger (another IP address) cannot use the association.
		stranger, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
		if err != nil {
			t.Fatal(err)
		}
		defer stranger.Close()
		stranger.WriteToUDPAddrPort(append(hdr, "stranger"...), u.relay)
		// Give the drops time to arrive first: datagrams on loopback
		// keep their order within a socket but not across sockets.
		time.Sleep(100 * time.Millisecond)
		u.sendRaw(append(hdr, "whole"...))
		_, got, err := u.recv(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "echo:whole" {
			t.Errorf("first answer %q; want echo:whole (everything before was to be dropped)", got)
		}
		u.Close()
		s.Close()
	})

	t.Run("client port", func(t *testing.T) {
		// The request names the port the client will send from; the
		// client's other ports are strangers.
		s := startSOCKS5(t, SOCKS5Config{}, &hostDialer{})
		u, err := socksAssociate(s.Addr().String(), "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		other, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		hdr := append([]byte{0, 0, 0}, encodeAddr(echo4.String())...)
		other.WriteToUDPAddrPort(append(hdr, "other port"...), u.relay)
		other.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if n, _, err := other.ReadFrom(make([]byte, 100)); err == nil {
			t.Errorf("another port got an answer (%d bytes)", n)
		}
		u.Close()
		s.Close()
	})

	t.Run("ends with control connection", func(t *testing.T) {
		s := startSOCKS5(t, SOCKS5Config{}, &hostDialer{})
		u, err := socksAssociate(s.Addr().String(), "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		u.send(echo4.String(), []byte("before"))
		if _, _, err := u.recv(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		u.ctrl.Close()
		// Once the relay socket is closed, the kernel answers a
		// datagram sent to it with ICMP port unreachable, which a
		// connected socket reports as ECONNREFUSED.
		probe, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(u.relay))
		if err != nil {
			t.Fatal(err)
		}
		defer probe.Close()
		deadline := time.Now().Add(10 * time.Second)
		for {
			probe.Write([]byte{0, 0, 0})
			probe.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			_, err := probe.Read(make([]byte, 10))
			if errors.Is(err, syscall.ECONNREFUSED) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("relay socket still open after the control connection closed")
			}
		}
		s.Close()
	})
}

func TestSOCKS5MaxConns(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	up := startTCP(t, "tcp", "127.0.0.1:0", echo)
	logs := newCountingHandler(t)
	s := startSOCKS5(t, SOCKS5Config{MaxConns: 2, Logger: slog.New(logs)}, &hostDialer{})
	var open []net.Conn
	for range 2 {
		c, _, err := socksConnect(s.Addr().String(), up.Addr(), "", "")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		open = append(open, c)
	}
	// More get a general failure (0x01) to their request, not a silent
	// close, and the burst is logged once.
	for range 3 {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = socksHandshake(c, "", "", cmdConnect, encodeAddr(up.Addr()))
		if err != socksError(repGeneralFailure) {
			t.Errorf("connection over the limit: %v; want reply 1 (general failure)", err)
		}
		c.Close()
	}
	out, err := curl(t, "-x", "socks5h://"+s.Addr().String(), "http://"+up.Addr()+"/")
	if err == nil || !strings.Contains(err.Error(), "(1)") {
		t.Errorf("curl over the limit: %q, %v; want it to report SOCKS reply 1", out, err)
	}
	if n := logs.count("connection limit reached; refusing new connections"); n != 1 {
		t.Errorf("limit logged %d times for one burst; want once", n)
	}
	// Closing one makes room.
	open[0].Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, _, err := socksConnect(s.Addr().String(), up.Addr(), "", "")
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no room after a connection closed: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := logs.count("accepting connections again"); n != 1 {
		t.Errorf("end of the burst logged %d times; want once", n)
	}
	s.Close()
}

// TestSOCKS5Close checks that Close ends relayed connections, UDP
// associations and handshakes in progress, and leaves no goroutine.
func TestSOCKS5Close(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	up := startTCP(t, "tcp", "127.0.0.1:0", echo)
	echo4 := udpEcho(t, "127.0.0.1:0")
	s := startSOCKS5(t, SOCKS5Config{}, &hostDialer{})

	relayed, _, err := socksConnect(s.Addr().String(), up.Addr(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer relayed.Close()
	u, err := socksAssociate(s.Addr().String(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	u.send(echo4.String(), []byte("x"))
	if _, _, err := u.recv(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	half, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	half.Write([]byte{5, 1})

	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	for name, c := range map[string]net.Conn{"relayed": relayed, "udp control": u.ctrl, "handshake": half} {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadAll(c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s connection: %v; want it closed", name, err)
		}
	}
	if c, err := net.DialTimeout("tcp", s.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Errorf("listener still accepts after Close")
	}
}

// TestSOCKS5Load relays 2,000 concurrent connections, each echoing 4 KiB.
func TestSOCKS5Load(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	t.Cleanup(leaktest.Check(t))
	const conns, size = 2000, 4 << 10
	up := startTCP(t, "tcp", "127.0.0.1:0", echo)
	s := startSOCKS5(t, SOCKS5Config{MaxConns: 2 * conns}, &hostDialer{})
	deadline := time.Now().Add(2 * time.Minute)

	// Open every connection first, so that all are relayed at once;
	// a few workers do the handshakes (the race detector bounds the
	// goroutines alive at once, and the proxy needs two per relay).
	open := make([]net.Conn, conns)
	defer func() {
		for _, c := range open {
			if c != nil {
				c.Close()
			}
		}
	}()
	work := func(do func(i int) error) error {
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			first error
		)
		next := make(chan int)
		for range 32 {
			wg.Go(func() {
				for i := range next {
					if err := do(i); err != nil {
						mu.Lock()
						if first == nil {
							first = fmt.Errorf("connection %d: %w", i, err)
						}
						mu.Unlock()
					}
				}
			})
		}
		for i := range conns {
			next <- i
		}
		close(next)
		wg.Wait()
		return first
	}
	err := work(func(i int) error {
		c, _, err := socksConnect(s.Addr().String(), up.Addr(), "", "")
		if err != nil {
			return err
		}
		c.SetDeadline(deadline)
		open[i] = c
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = work(func(i int) error {
		msg := make([]byte, size)
		rand.Read(msg)
		c := open[i]
		if _, err := c.Write(msg); err != nil {
			return err
		}
		c.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(c)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, msg) {
			return fmt.Errorf("echoed %d bytes, not the %d sent", len(got), len(msg))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

func TestListenSOCKS5Errors(t *testing.T) {
	if _, err := ListenSOCKS5(SOCKS5Config{BindAddress: "127.0.0.1:-1"}, &hostDialer{}); err == nil {
		t.Error("bad bind address accepted")
	}
	if _, err := ListenSOCKS5(SOCKS5Config{BindAddress: "127.0.0.1:0", Username: strings.Repeat("u", 256)}, &hostDialer{}); err == nil {
		t.Error("256-byte username accepted")
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err    error
		socks  byte
		status int
	}{
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, repConnRefused, 502},
		{&net.OpError{Op: "connect", Err: errors.New("connection was refused")}, repConnRefused, 502},
		{&net.OpError{Op: "dial", Err: syscall.EHOSTUNREACH}, repHostUnreachable, 502},
		{errors.New("no route to host"), repHostUnreachable, 502},
		{&net.OpError{Op: "dial", Err: syscall.ENETUNREACH}, repNetUnreachable, 502},
		{errors.New("network is unreachable"), repNetUnreachable, 502},
		{&net.DNSError{Err: "no such host", Name: "x", IsNotFound: true}, repHostUnreachable, 502},
		{&net.OpError{Op: "dial", Err: &net.DNSError{Err: "server misbehaving", Name: "x"}}, repHostUnreachable, 502},
		{&net.DNSError{Err: "i/o timeout", Name: "x", IsTimeout: true}, repTTLExpired, 504},
		{context.DeadlineExceeded, repTTLExpired, 504},
		{&net.OpError{Op: "dial", Err: syscall.ETIMEDOUT}, repTTLExpired, 504},
		{errors.New("operation timed out"), repTTLExpired, 504},
		{context.Canceled, repGeneralFailure, 502},
		{errors.New("something else"), repGeneralFailure, 502},
	} {
		if got := socksReplyFor(tc.err); got != tc.socks {
			t.Errorf("socksReplyFor(%v) = %#02x; want %#02x", tc.err, got, tc.socks)
		}
		if got := httpStatusFor(tc.err); got != tc.status {
			t.Errorf("httpStatusFor(%v) = %d; want %d", tc.err, got, tc.status)
		}
	}
}

func TestParseAddr(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		n    int
		err  error
	}{
		{"\x01\x0a\x00\x00\x01\x00\x50rest", "10.0.0.1:80", 7, nil},
		{"\x04" + string(netip.MustParseAddr("fd00::1").AsSlice()) + "\x01\xbb", "[fd00::1]:443", 19, nil},
		{"\x04" + string(netip.MustParseAddr("::ffff:10.0.0.1").AsSlice()) + "\x00\x35", "10.0.0.1:53", 19, nil},
		{"\x03\x0bexample.com\x00\x50", "example.com:80", 15, nil},
		{"\x03\x08fd00::99\x00\x50", "[fd00::99]:80", 12, nil},
		{"\x03\x00\x00\x50", "", 0, errEmptyName},
		{"\x03\x0bexample]com\x00\x50", "", 0, errBadName},
		{"\x03\x0bexample.com\x00\x50", "example.com:80", 15, nil},
		{"\x03\x0cfe80::1%eth0\x00\x50", "", 0, errBadName},
		{"\x03\x09a b.c.com\x00\x50", "", 0, errBadName},
		{"\x03\x0ab\xc3\xbccher.de\x00\x50", "b\u00fccher.de:80", 14, nil},
		{"\x02\x00", "", 0, errAddrType},
		{"", "", 0, errShortAddr},
		{"\x01\x0a\x00", "", 0, errShortAddr},
		{"\x03", "", 0, errShortAddr},
		{"\x03\x05abc", "", 0, errShortAddr},
	} {
		a, n, err := parseAddr([]byte(tc.in))
		if err != tc.err || (err == nil && (a.String() != tc.want || n != tc.n)) {
			t.Errorf("parseAddr(%q) = %v, %d, %v; want %v, %d, %v", tc.in, a, n, err, tc.want, tc.n, tc.err)
		}
	}
}
