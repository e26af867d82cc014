package relay

import (
	"errors"
	"net"
	"os"
	"sync"
	"time"
)

// pollable is a connection the relay can wait on without reading and
// read without waiting: the tunnel's (netstack.TCPConn) and, through
// their raw conns, the host's sockets (hostPoll).
type pollable interface {
	// WaitReadable returns once a read would not wait: bytes have
	// arrived, the stream has ended, or the connection failed or closed;
	// or, with a deadline that is not zero, at the deadline with
	// os.ErrDeadlineExceeded.
	WaitReadable(deadline time.Time) error
	// ReadNow reads what has arrived without waiting: 0 and no error
	// when nothing has, io.EOF at the end of the stream.
	ReadNow(b []byte) (int, error)
}

// notifier is a pollable that can start a function once a read would not
// wait, with no goroutine waiting meanwhile (netstack.TCPConn).
type notifier interface {
	OnReadable(f func())
}

// pollOf returns c as a pollable, or nil when it cannot be one.
func pollOf(c net.Conn) pollable {
	if p, ok := c.(pollable); ok {
		return p
	}
	return hostPoll(c)
}

// A polled direction of a relay copies src to dst in bursts: a burst
// reads what has arrived (into a pooled buffer) and writes it on; drained,
// it waits for more on its own goroutine for lingerIdle, and if nothing
// comes, starts a goroutine that only waits (wait) and ends. That one
// never runs the deep code of a write into the tunnel, so its stack stays
// at the smallest size however long the connection is idle (a tunnel
// connection needs not even that: the stack starts the next burst), where a
// goroutine whose stack grew once keeps most of it while parked (the
// runtime halves a stack only while less than a quarter of it is in use);
// when input comes, it starts a burst on a new goroutine and ends. A
// connection busy without a pause of lingerIdle keeps one goroutine per
// direction, as a plain copy would.
type polled struct {
	dst, src net.Conn
	poll     pollable
	prefix   []byte
	written  int64
	end      func(written int64) // called once, as the direction ends
}

// lingerIdle is how long a burst's goroutine waits for more before it
// hands the waiting to a new, small one: long enough that a connection
// exchanging messages quickly starts no goroutines, short enough that an
// idle one soon holds only small stacks.
const lingerIdle = 250 * time.Millisecond

// burst copies what arrives until src has been quiet for lingerIdle, then
// waits on a new goroutine, or ends the direction.
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
	var bp *[]byte
	defer func() {
		if bp != nil {
			relayBufs.Put(bp)
		}
	}()
	for {
		if bp == nil {
			bp = relayBufs.Get().(*[]byte)
		}
		n, rerr := d.poll.ReadNow(*bp)
		if n > 0 {
			w, err := d.dst.Write((*bp)[:n])
			d.written += int64(w)
			if err != nil {
				d.finish(err, false)
				return
			}
		}
		if rerr != nil {
			d.finish(rerr, true)
			return
		}
		if n > 0 {
			continue
		}
		// Drained: wait a while without the buffer.
		relayBufs.Put(bp)
		bp = nil
		err := d.poll.WaitReadable(time.Now().Add(lingerIdle))
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if n, ok := d.poll.(notifier); ok {
				n.OnReadable(d.burst)
			} else {
				go d.wait()
			}
			return
		}
		if err != nil {
			d.finish(err, false)
			return
		}
	}
}

// wait waits for src to have something to read, then starts a burst.
func (d *polled) wait() {
	if err := d.poll.WaitReadable(time.Time{}); err != nil {
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
