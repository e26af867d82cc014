package relay

import (
	"net"
	"sync"
)

// pollable is a connection the relay can wait on without reading and
// read without waiting: the tunnel's (netstack.TCPConn) and, through
// their raw conns, the host's sockets (hostPoll).
type pollable interface {
	// WaitReadable returns once a read would not wait: bytes have
	// arrived, the stream has ended, or the connection failed or closed.
	WaitReadable() error
	// ReadNow reads what has arrived without waiting: 0 and no error
	// when nothing has, io.EOF at the end of the stream.
	ReadNow(b []byte) (int, error)
}

// pollOf returns c as a pollable, or nil when it cannot be one.
func pollOf(c net.Conn) pollable {
	if p, ok := c.(pollable); ok {
		return p
	}
	return hostPoll(c)
}

// A polled direction of a relay copies src to dst in bursts, each on a
// goroutine of its own: a burst reads what has arrived into a pooled
// buffer and writes it on until nothing is left, then starts a goroutine
// that only waits for more (wait) and ends. The waiting goroutine never
// runs the deep code of a write into the tunnel, so its stack stays at
// the smallest size however long the connection is idle; a goroutine
// whose stack grew once keeps most of it while parked (the runtime halves
// a stack only while less than a quarter of it is in use).
type polled struct {
	dst, src net.Conn
	poll     pollable
	prefix   []byte
	written  int64
	end      func(written int64) // called once, as the direction ends
}

// burst copies what has arrived, then waits again or ends the direction.
func (d *polled) burst() {
	if len(d.prefix) > 0 {
		n, err := d.dst.Write(d.prefix)
		d.written += int64(n)
		d.prefix = nil
		if err != nil {
			d.finish(err, false)
			return
		}
	}
	bp := relayBufs.Get().(*[]byte)
	defer relayBufs.Put(bp)
	buf := *bp
	for {
		n, rerr := d.poll.ReadNow(buf)
		if n > 0 {
			w, err := d.dst.Write(buf[:n])
			d.written += int64(w)
			if err != nil {
				d.finish(err, false)
				return
			}
		}
		switch {
		case rerr != nil:
			d.finish(rerr, true)
			return
		case n == 0:
			go d.wait()
			return
		}
	}
}

// wait waits for src to have something to read, then starts a burst.
func (d *polled) wait() {
	if err := d.poll.WaitReadable(); err != nil {
		d.finish(err, false)
		return
	}
	go d.burst()
}

// finish ends the direction as pipe does: at the end of src (err is
// io.EOF and eof true) it half-closes dst; on an error it closes both.
func (d *polled) finish(err error, eof bool) {
	if eof && isEOF(err) {
		err = halfClose(d.dst)
	}
	if err != nil {
		abort(d.dst)
		abort(d.src)
	}
	d.end(d.written)
}

// relayBufs are the buffers of the relays' bursts and busy reads.
var relayBufs = sync.Pool{New: func() any { b := make([]byte, relayBufSize); return &b }}
