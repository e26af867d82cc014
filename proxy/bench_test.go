package proxy

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/internal/testnet"
)

// pingServer answers "ping" with "pong" and closes: one request, one
// response per connection.
func pingServer(b *testing.B) *tcpServer {
	return startTCP(b, "tcp", "127.0.0.1:0", func(c net.Conn) {
		var buf [4]byte
		if _, err := io.ReadFull(c, buf[:]); err != nil {
			return
		}
		c.Write([]byte("pong"))
	})
}

// pingPong sends "ping" on c and reads the answer to its end.
func pingPong(c net.Conn, r io.Reader) error {
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	got, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if string(got) != "pong" {
		return fmt.Errorf("answer %q", got)
	}
	return nil
}

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// BenchmarkSOCKS5ConnectRate measures whole proxied exchanges: connect to
// the proxy, handshake, CONNECT, one request and response, close.
func BenchmarkSOCKS5ConnectRate(b *testing.B) {
	up := pingServer(b)
	s := startSOCKS5(b, SOCKS5Config{Logger: quietLogger()}, &hostDialer{})
	// The greeting and the request in one write, as a client that knows
	// the proxy wants no authentication may send them.
	hello := append([]byte{socksVersion, 1, methodNoAuth, socksVersion, cmdConnect, 0}, encodeAddr(up.Addr())...)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var reply [2 + 10]byte
		for pb.Next() {
			c, err := net.Dial("tcp", s.Addr().String())
			if err != nil {
				b.Error(err)
				return
			}
			if _, err := c.Write(hello); err != nil {
				b.Error(err)
			}
			if _, err := io.ReadFull(c, reply[:]); err != nil || reply[3] != repSucceeded {
				b.Errorf("reply %x, %v", reply, err)
			}
			if err := pingPong(c, c); err != nil {
				b.Error(err)
			}
			c.Close()
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
}

// BenchmarkHTTPConnect measures whole CONNECT tunnels through the HTTP
// proxy: connect, CONNECT, one request and response, close.
func BenchmarkHTTPConnect(b *testing.B) {
	up := pingServer(b)
	s := startHTTP(b, HTTPConfig{Logger: quietLogger()}, &hostDialer{})
	req := []byte("CONNECT " + up.Addr() + " HTTP/1.1\r\nHost: " + up.Addr() + "\r\n\r\n")
	connectReq := &http.Request{Method: http.MethodConnect}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c, err := net.Dial("tcp", s.Addr().String())
			if err != nil {
				b.Error(err)
				return
			}
			c.Write(req)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, connectReq)
			if err != nil || resp.StatusCode != 200 {
				b.Errorf("CONNECT: %v", err)
			} else if err := pingPong(c, br); err != nil {
				b.Error(err)
			}
			c.Close()
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
}

// BenchmarkSOCKS5IdleConnMemory reports the memory an idle relayed
// connection holds: heap and goroutine stacks, measured across opening
// idleConns connections through the proxy. The clients' and upstream's
// own sockets are in the figure too (a few hundred bytes each); the
// upstream holds its connections without a goroutine each.
func BenchmarkSOCKS5IdleConnMemory(b *testing.B) {
	const idleConns = 1000
	var (
		mu   sync.Mutex
		held []net.Conn
	)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var accepting sync.WaitGroup
	accepting.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	})
	defer func() {
		ln.Close()
		accepting.Wait()
		for _, c := range held {
			c.Close()
		}
	}()
	s := startSOCKS5(b, SOCKS5Config{Logger: quietLogger(), MaxConns: 2 * idleConns}, &hostDialer{})

	var perConn, goroutines float64
	for b.Loop() {
		_, before := testnet.HeapAndStacks()
		g0 := runtime.NumGoroutine()
		clients := make([]net.Conn, 0, idleConns)
		for range idleConns {
			c, _, err := socksConnect(s.Addr().String(), ln.Addr().String(), "", "")
			if err != nil {
				b.Fatal(err)
			}
			clients = append(clients, c)
		}
		// Let the relays settle into their reads.
		time.Sleep(100 * time.Millisecond)
		_, after := testnet.HeapAndStacks()
		perConn = float64(after-before) / idleConns
		goroutines = float64(runtime.NumGoroutine()-g0) / idleConns
		// Both ends close, or the relays would wait for the upstream's
		// half of each connection to end.
		for _, c := range clients {
			c.Close()
		}
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		held = held[:0]
		mu.Unlock()
		waitIdle(s)
	}
	b.ReportMetric(perConn, "B/conn")
	b.ReportMetric(goroutines, "goroutines/conn")
}

// waitIdle waits until the server serves no connection.
func waitIdle(s *Server) {
	for {
		if n, _ := s.conns.Counts(); n == 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkSOCKS5Bulk measures one relayed stream's throughput.
func BenchmarkSOCKS5Bulk(b *testing.B) {
	up := startTCP(b, "tcp", "127.0.0.1:0", func(c net.Conn) { io.Copy(io.Discard, c) })
	s := startSOCKS5(b, SOCKS5Config{Logger: quietLogger()}, &hostDialer{})
	c, _, err := socksConnect(s.Addr().String(), up.Addr(), "", "")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	chunk := make([]byte, 128<<10)
	b.SetBytes(int64(len(chunk)))
	for b.Loop() {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
}
