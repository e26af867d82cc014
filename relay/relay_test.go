package relay

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/internal/leaktest"
)

// TestRelayPieces sends data in pieces of many sizes through a relay, so
// that it switches between its small and large buffers, and checks every
// byte arrives in order, both ways.
func TestRelayPieces(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	client, clientEnd := tcpPair(t)
	upstream, upstreamEnd := tcpPair(t)
	done := make(chan struct{})
	var toClient, toUpstream int64
	go func() { toClient, toUpstream = Conns(clientEnd, upstreamEnd, []byte("early ")); close(done) }()

	data := make([]byte, 1<<20)
	rand.Read(data)
	send := func(c net.Conn) {
		rest := data
		for i := 0; len(rest) > 0; i++ {
			n := min(len(rest), []int{1, 100, smallBufSize, smallBufSize + 1, relayBufSize, 3 * relayBufSize, 7000}[i%7])
			c.Write(rest[:n])
			rest = rest[n:]
			if i%5 == 0 {
				time.Sleep(time.Millisecond) // let the reader drain
			}
		}
		c.(*net.TCPConn).CloseWrite()
	}
	var wg sync.WaitGroup
	wg.Go(func() { send(client) })
	wg.Go(func() { send(upstream) })
	var up, down []byte
	wg.Go(func() { up, _ = io.ReadAll(upstream) })
	down, _ = io.ReadAll(client)
	wg.Wait()
	if want := append([]byte("early "), data...); !bytes.Equal(up, want) {
		t.Errorf("upstream got %d bytes, not the %d sent", len(up), len(want))
	}
	if !bytes.Equal(down, data) {
		t.Errorf("client got %d bytes, not the %d sent", len(down), len(data))
	}
	<-done
	if toClient != int64(len(data)) || toUpstream != int64(len(data)+len("early ")) {
		t.Errorf("Conns counted %d bytes to the client and %d upstream; want %d and %d", toClient, toUpstream, len(data), len(data)+len("early "))
	}
	client.Close()
	upstream.Close()
}

// TestRelayWithoutHalfClose relays between conns that cannot half-close:
// the end of one direction closes the other side, and the relay ends.
func TestRelayWithoutHalfClose(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	client, clientEnd := net.Pipe()
	upstreamEnd, upstream := net.Pipe()
	done := make(chan struct{})
	go func() { Conns(clientEnd, upstreamEnd, nil); close(done) }()
	go func() { client.Write([]byte("hello")); client.Close() }()
	got, err := io.ReadAll(upstream)
	if string(got) != "hello" || err != nil {
		t.Errorf("upstream got %q, %v", got, err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("relay still running after one side closed")
	}
	upstream.Close()
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}
