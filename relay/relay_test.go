package relay

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
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
	go func() { toClient, toUpstream = relayConns(clientEnd, upstreamEnd, []byte("early ")); close(done) }()

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
	go func() { relayConns(clientEnd, upstreamEnd, nil); close(done) }()
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

// TestGoCloseEndsIdleRelays: Limiter.Close ends relays started with Go
// that sit idle (their directions waiting to read, no goroutine in Read)
// and waits for them; done is called once for each.
func TestGoCloseEndsIdleRelays(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	l := NewLimiter(0)
	var ended sync.WaitGroup
	var clients []net.Conn
	for range 5 {
		client, clientEnd := tcpPair(t)
		upstreamEnd, upstream := tcpPair(t)
		l.Hold(clientEnd)
		l.Hold(upstreamEnd)
		ended.Add(1)
		if !Go(l, clientEnd, upstreamEnd, nil, func(int64, int64) { ended.Done() }) {
			t.Fatal("Go refused before Close")
		}
		// One byte each way, then idle.
		client.Write([]byte{'a'})
		if b := readByte(t, upstream); b != 'a' {
			t.Fatalf("upstream got %q", b)
		}
		upstream.Write([]byte{'b'})
		if b := readByte(t, client); b != 'b' {
			t.Fatalf("client got %q", b)
		}
		clients = append(clients, client)
	}
	time.Sleep(lingerIdle + 100*time.Millisecond) // every direction back to waiting, idle
	closed := make(chan struct{})
	go func() { l.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Limiter.Close did not end the idle relays")
	}
	ended.Wait()
	for _, c := range clients {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
			t.Errorf("a client of a closed relay read %d bytes, %v", n, err)
		}
	}
	if Go(l, nopConn(t), nopConn(t), nil, func(int64, int64) { t.Error("done called after Close") }) {
		t.Error("Go started a relay after Close")
	}
}

// TestRelayPassesReset: an upstream that resets its connection makes the
// relay reset the client's, not end it cleanly.
func TestRelayPassesReset(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	client, clientEnd := tcpPair(t)
	upstreamEnd, upstream := tcpPair(t)
	done := make(chan struct{})
	go func() { relayConns(clientEnd, upstreamEnd, nil); close(done) }()
	upstream.Write([]byte("part"))
	if b := readByte(t, client); b != 'p' {
		t.Fatalf("client got %q", b)
	}
	upstream.(*net.TCPConn).SetLinger(0)
	upstream.Close()
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.ReadAll(client)
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("client read to the end with %v; want a reset", err)
	}
	<-done
}

func readByte(t *testing.T, c net.Conn) byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		t.Fatal(err)
	}
	return b[0]
}

// nopConn is one end of a loopback TCP connection, for calls that must
// not use it.
func nopConn(t *testing.T) net.Conn {
	a, _ := tcpPair(t)
	return a
}

// relayConns relays with Go and waits for both directions to end,
// returning the bytes written to each side.
func relayConns(client, upstream net.Conn, prefix []byte) (toClient, toUpstream int64) {
	l := NewLimiter(1)
	Go(l, client, upstream, prefix, func(c, u int64) { toClient, toUpstream = c, u })
	l.Close() // waits for both directions
	return toClient, toUpstream
}
