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
	"sync"
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

var relayBufs = sync.Pool{New: func() any { b := make([]byte, relayBufSize); return &b }}

// Conns copies client to upstream and upstream to client until both
// directions have ended, then closes both. prefix is sent upstream ahead
// of what it reads from client (bytes the client sent early, which the
// caller already read). The end of one direction's stream is passed on as
// a half-close, so a client that shuts down writing still receives the
// whole answer; an error in either direction closes both at once, a host
// TCP connection with a reset. It
// returns the bytes written to each side (toUpstream includes prefix).
func Conns(client, upstream net.Conn, prefix []byte) (toClient, toUpstream int64) {
	var wg sync.WaitGroup
	wg.Go(func() { toClient = pipe(client, upstream, nil) })
	toUpstream = pipe(upstream, client, prefix)
	wg.Wait()
	client.Close()
	upstream.Close()
	return toClient, toUpstream
}

// pipe copies src to dst after prefix. At the end of src it half-closes
// dst; on an error it closes both, which ends the other direction too.
func pipe(dst, src net.Conn, prefix []byte) (written int64) {
	written, err := copyStream(dst, src, prefix)
	if err == nil {
		cw, ok := dst.(closeWriter)
		if ok {
			err = cw.CloseWrite()
		} else {
			// dst cannot say "no more" on its own: closing it is
			// the only way to tell the other end.
			dst.Close()
		}
	}
	if err != nil {
		abort(dst)
		abort(src)
	}
	return written
}

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
