// Package relay owns what every proxy and forward shares: copying bytes
// both ways between two connections (passing a half-close on and holding
// little memory while a connection is idle), the Dialer through which they
// reach the tunnel, and the Limiter that counts their connections against
// a maximum and ends them all on Close. It knows nothing of where the
// connections come from or of the protocols spoken over them.
package relay

import (
	"io"
	"net"
	"sync/atomic"
)

// closeWriter is a connection that can shut down its writing side alone:
// *net.TCPConn on the host, gonet.TCPConn in the tunnel.
type closeWriter interface{ CloseWrite() error }

// A relay direction reads into a small buffer of its own while traffic
// is light and borrows a large pooled one while reads keep filling what
// they are given, so an idle connection holds little memory and a busy
// one moves data in large pieces.
const (
	smallBufSize = 512
	relayBufSize = 32 << 10
)

// Go copies client to upstream and upstream to client until both
// directions have ended, then closes both. prefix is sent upstream ahead
// of what it reads from client (bytes the client sent early, which the
// caller already read). The end of one direction's stream is passed on as
// a half-close, so a client that shuts down writing still receives the
// whole answer; an error in either direction closes both at once, a host
// TCP connection with a reset.
//
// It does not hold the caller's goroutine: the directions run on
// goroutines that l counts, and when both have ended Go closes both conns
// and calls done with the bytes written to each side, before l's count of
// them ends. It reports
// false, having closed both conns and not calling done, once l is closed.
//
// A direction whose source can be polled (a host socket, a tunnel
// connection of package netstack) holds, while idle, one goroutine that
// has only ever waited, so of the smallest stack (see polled); any other
// source is read by a goroutine waiting in Read.
func Go(l *Limiter, client, upstream net.Conn, prefix []byte, done func(toClient, toUpstream int64)) bool {
	if !l.Enter() {
		client.Close()
		upstream.Close()
		return false
	}
	if !l.Enter() {
		l.Done()
		client.Close()
		upstream.Close()
		return false
	}
	var (
		left                 atomic.Int32
		toClient, toUpstream int64
	)
	left.Store(2)
	ended := func() {
		if left.Add(-1) == 0 {
			client.Close()
			upstream.Close()
			done(toClient, toUpstream)
		}
	}
	start(client, upstream, nil, func(n int64) {
		defer l.Done()
		toClient = n
		ended()
	})
	start(upstream, client, prefix, func(n int64) {
		defer l.Done()
		toUpstream = n
		ended()
	})
	return true
}

// start copies prefix and then src to dst on goroutines of its own, as
// pipe does, and calls end with the bytes written once done.
func start(dst, src net.Conn, prefix []byte, end func(written int64)) {
	if p := pollOf(src); p != nil {
		d := &polled{dst: dst, src: src, poll: p, prefix: prefix, end: end}
		go d.burst()
		return
	}
	go func() { end(pipe(dst, src, prefix)) }()
}

// pipe copies src to dst after prefix. At the end of src it half-closes
// dst; on an error it closes both, which ends the other direction too.
func pipe(dst, src net.Conn, prefix []byte) (written int64) {
	written, err := copyStream(dst, src, prefix)
	if err == nil {
		err = halfClose(dst)
	}
	if err != nil {
		abort(dst)
		abort(src)
	}
	return written
}

// halfClose tells dst's peer that no more is coming: a half-close where
// dst can send one alone, else by closing dst.
func halfClose(dst net.Conn) error {
	if cw, ok := dst.(closeWriter); ok {
		return cw.CloseWrite()
	}
	// dst cannot say "no more" on its own: closing it is the only way
	// to tell the other end.
	dst.Close()
	return nil
}

// isEOF reports whether err is the end of a stream.
func isEOF(err error) bool { return err == io.EOF }

// abort closes c so that its peer sees the connection fail (a TCP reset
// where c can send one), not end: a client whose upstream broke off must
// not take what it got for the whole answer.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// copyStream copies prefix and then src to dst until src ends (nil) or
// fails. It reads into its own buffers: the conns' ReadFrom and WriteTo
// would allocate one per call when the other side is not of their kind.
// It returns the bytes written.
func copyStream(dst, src net.Conn, prefix []byte) (written int64, err error) {
	if len(prefix) > 0 {
		n, err := dst.Write(prefix)
		written += int64(n)
		if err != nil {
			return written, err
		}
	}
	small := make([]byte, smallBufSize)
	var big *[]byte
	defer func() {
		if big != nil {
			relayBufs.Put(big)
		}
	}()
	for {
		buf := small
		if big != nil {
			buf = *big
		}
		n, rerr := src.Read(buf)
		if n > 0 {
			w, err := dst.Write(buf[:n])
			written += int64(w)
			if err != nil {
				return written, err
			}
		}
		switch {
		case big == nil && n == len(small):
			// More is probably waiting: borrow the large buffer.
			big = relayBufs.Get().(*[]byte)
		case big != nil && n < len(*big):
			// Drained for now: give it back before the next read,
			// which may wait a long time.
			relayBufs.Put(big)
			big = nil
		}
		if rerr == io.EOF {
			return written, nil
		}
		if rerr != nil {
			return written, rerr
		}
	}
}
