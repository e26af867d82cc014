package netstack

import (
	"bytes"
	"errors"
	"net"
	"os"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/waiter"
)

// udpConn is gonet's UDPConn with writes that cannot miss their wake-up.
//
// gonet's WriteTo, when the socket's send buffer is full, registers for
// writable events only after its write has failed, then waits for an event
// before it tries again. If the link sent every queued packet in between
// (push mode sends a whole queue at once), the buffer is already empty, no
// event comes, and the write blocks for good, or until its deadline. The
// UDP benchmark hung on it about once in ten runs on a loaded machine.
// Here the waiter is registered before the write that may fail, so a
// buffer emptied at any moment after it wakes the writer.
//
// Reads, addresses, Close and the read deadline are gonet's; the write
// deadline is this type's alone (gonet's would arm a timer nothing reads).
type udpConn struct {
	*gonet.UDPConn
	ep tcpip.Endpoint
	wq *waiter.Queue
	wd deadline
}

func newUDPConn(wq *waiter.Queue, ep tcpip.Endpoint) *udpConn {
	return &udpConn{UDPConn: gonet.NewUDPConn(wq, ep), ep: ep, wq: wq}
}

// Write implements net.Conn.
func (c *udpConn) Write(b []byte) (int, error) { return c.WriteTo(b, nil) }

// WriteTo implements net.PacketConn. addr must be a *net.UDPAddr, or nil
// on a connected socket.
func (c *udpConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	var opts tcpip.WriteOptions
	if addr != nil {
		ua, ok := addr.(*net.UDPAddr)
		if !ok {
			return 0, c.opError(addr, net.InvalidAddrError("not a *net.UDPAddr"))
		}
		opts.To = &tcpip.FullAddress{Addr: tcpip.AddrFromSlice(ua.IP), Port: uint16(ua.Port)}
	}
	var r bytes.Reader
	var ch chan struct{}
	for {
		if c.wd.expired() {
			return 0, c.opError(addr, os.ErrDeadlineExceeded)
		}
		r.Reset(b)
		n, err := c.ep.Write(&r, opts)
		if _, full := err.(*tcpip.ErrWouldBlock); !full {
			if err != nil {
				return int(n), c.opError(addr, errors.New(err.String()))
			}
			return int(n), nil
		}
		if ch == nil {
			// Registered before the next try: space freed after
			// it notifies ch.
			var e waiter.Entry
			e, ch = waiter.NewChannelEntry(waiter.WritableEvents)
			c.wq.EventRegister(&e)
			defer c.wq.EventUnregister(&e)
			continue
		}
		select {
		case <-ch:
		case <-c.wd.done():
		}
	}
}

func (c *udpConn) opError(addr net.Addr, err error) error {
	if addr == nil {
		addr = c.RemoteAddr()
	}
	return &net.OpError{Op: "write", Net: "udp", Source: c.LocalAddr(), Addr: addr, Err: err}
}

// SetDeadline implements net.Conn.
func (c *udpConn) SetDeadline(t time.Time) error {
	c.wd.set(t)
	return c.UDPConn.SetReadDeadline(t)
}

// SetWriteDeadline implements net.Conn.
func (c *udpConn) SetWriteDeadline(t time.Time) error {
	c.wd.set(t)
	return nil
}

// deadline is a net.Conn deadline that blocked calls can wait on: done's
// channel is closed when the deadline passes and whenever it is changed,
// so a waiter wakes and looks at expired again. The zero value has no
// deadline. Its methods may be called from any goroutine.
type deadline struct {
	mu    sync.Mutex
	at    time.Time // zero: none
	ch    chan struct{}
	timer *time.Timer
}

// set replaces the deadline; the zero time removes it.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	if d.ch != nil {
		closeOnce(d.ch) // wake waiters to look again
	}
	d.at, d.ch = t, make(chan struct{})
	if t.IsZero() {
		return
	}
	ch := d.ch
	d.timer = time.AfterFunc(time.Until(t), func() {
		d.mu.Lock()
		closeOnce(ch)
		d.mu.Unlock()
	})
}

// done returns a channel closed when the deadline passes or changes.
func (d *deadline) done() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ch == nil {
		d.ch = make(chan struct{})
	}
	return d.ch
}

// expired reports whether a deadline is set and has passed.
func (d *deadline) expired() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return !d.at.IsZero() && !time.Now().Before(d.at)
}

// closeOnce closes ch unless it is closed already; the caller holds the
// lock that guards ch.
func closeOnce(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
}
