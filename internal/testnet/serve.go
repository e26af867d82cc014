package testnet

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
)

// Serve runs handle for each connection ln accepts, each in its own
// goroutine, and closes the connection when handle returns. When the test
// ends it closes ln and the connections still open and waits for the
// handlers to return.
func Serve(t testing.TB, ln net.Listener, handle func(net.Conn)) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		done  bool
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if done {
				mu.Unlock()
				c.Close()
				return
			}
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				handle(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		done = true
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// HostServer serves handle (see Serve) on a TCP port of the host's
// loopback and returns its address.
func HostServer(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	Serve(t, ln, handle)
	return ln.Addr().String()
}

// Echo sends back what c sends until it half-closes.
func Echo(c net.Conn) { io.Copy(c, c) }

// EchoSmall is Echo through a 512-byte buffer, for load tests whose
// server is not what they measure: io.Copy takes 32 KiB per connection
// when c is a tunnel connection.
func EchoSmall(c net.Conn) {
	var buf [512]byte
	for {
		n, err := c.Read(buf[:])
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Discard reads what c sends until it half-closes, and answers nothing.
func Discard(c net.Conn) { io.Copy(io.Discard, c) }

// SumReply reads what c sends until it half-closes, then answers
// "sum <hex SHA-256 of all it read>". SendAndSum is its client.
func SumReply(c net.Conn) {
	h := sha256.New()
	io.Copy(h, c)
	fmt.Fprintf(c, "sum %x", h.Sum(nil))
}

// Reply answers each connection with text and closes it, reading nothing.
func Reply(text string) func(net.Conn) {
	return func(c net.Conn) { io.WriteString(c, text) }
}

// Sum is what SumOne read from its connection.
type Sum struct {
	N      int64    // bytes read
	SHA256 [32]byte // of the bytes read
	Err    error    // of Accept or of the read
}

// SumOne accepts one connection on ln and sends on the returned channel
// the length and SHA-256 of all it reads until the sender's end. When the
// test ends it closes ln and the connection and waits for the read to end.
func SumOne(t testing.TB, ln net.Listener) <-chan Sum {
	out := make(chan Sum, 1)
	var (
		wg sync.WaitGroup
		mu sync.Mutex
		cc net.Conn
	)
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			out <- Sum{Err: err}
			return
		}
		mu.Lock()
		cc = c
		mu.Unlock()
		defer c.Close()
		h := sha256.New()
		var s Sum
		s.N, s.Err = io.Copy(h, c)
		s.SHA256 = [32]byte(h.Sum(nil))
		out <- s
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		if cc != nil {
			cc.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return out
}

// ServePackets answers each datagram pc receives with what reply returns
// for it (nothing when nil), until the test ends; then it closes pc and
// waits for the loop to end.
func ServePackets(t testing.TB, pc net.PacketConn, reply func(b []byte, from net.Addr) []byte) {
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if out := reply(buf[:n], from); out != nil {
				pc.WriteTo(out, from)
			}
		}
	})
	t.Cleanup(func() { pc.Close(); wg.Wait() })
}

// HostPacketServer serves reply (see ServePackets) on a UDP port of the
// host's loopback and returns its address.
func HostPacketServer(t testing.TB, reply func(b []byte, from net.Addr) []byte) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ServePackets(t, pc, reply)
	return pc.LocalAddr().String()
}

// EchoDatagram answers a datagram with itself.
func EchoDatagram(b []byte, _ net.Addr) []byte { return b }

// UpperDatagram answers a datagram with itself in upper case.
func UpperDatagram(b []byte, _ net.Addr) []byte { return bytes.ToUpper(b) }

// EchoMessages answers every size-byte message on c with itself, until c
// ends: a request/response server.
func EchoMessages(size int) func(net.Conn) {
	return func(c net.Conn) {
		buf := make([]byte, size)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}
}
