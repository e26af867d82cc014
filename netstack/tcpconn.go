package netstack

import (
	"errors"
	"io"
	"os"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/waiter"
)

// TCPConn is a TCP connection of the stack: a gonet.TCPConn that can also
// be waited on without reading and read without waiting, so that a relay
// keeps no goroutine of a grown stack parked in Read while the connection
// is idle (see package relay).
type TCPConn struct {
	*gonet.TCPConn
	ep tcpip.Endpoint
	wq *waiter.Queue
}

func newTCPConn(wq *waiter.Queue, ep tcpip.Endpoint) *TCPConn {
	return &TCPConn{TCPConn: gonet.NewTCPConn(wq, ep), ep: ep, wq: wq}
}

// readyEvents are the events after which a read does not wait: bytes
// arrived, the peer ended its stream, or the connection failed or closed.
const readyEvents = waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr

// WaitReadable returns once a read would not wait: there are bytes to
// read, the stream has ended, or the connection has failed or been
// closed; or, when deadline is not zero, at deadline with
// os.ErrDeadlineExceeded. (The conn's own read deadline is not used.)
func (c *TCPConn) WaitReadable(deadline time.Time) error {
	entry, ch := waiter.NewChannelEntry(readyEvents)
	c.wq.EventRegister(&entry)
	defer c.wq.EventUnregister(&entry)
	if c.ep.Readiness(readyEvents) != 0 {
		return nil
	}
	if deadline.IsZero() {
		<-ch
		return nil
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-t.C:
		return os.ErrDeadlineExceeded
	}
}

// OnReadable calls f once, on a new goroutine, when a read would not wait
// (as WaitReadable says), with no goroutine waiting meanwhile: the stack's
// notification starts it, or OnReadable itself when a read would not wait
// now. An idle connection's relay waits this way for nothing but a few
// hundred bytes of heap.
func (c *TCPConn) OnReadable(f func()) {
	var fired atomic.Bool
	e := new(waiter.Entry)
	*e = waiter.NewFunctionEntry(readyEvents, func(waiter.EventMask) {
		// The queue's lock is held here: unregister elsewhere.
		if fired.CompareAndSwap(false, true) {
			go func() {
				c.wq.EventUnregister(e)
				f()
			}()
		}
	})
	c.wq.EventRegister(e)
	if c.ep.Readiness(readyEvents) != 0 && fired.CompareAndSwap(false, true) {
		c.wq.EventUnregister(e)
		go f()
	}
}

// ReadNow reads what has arrived without waiting: 0 and no error when
// nothing has, io.EOF at the end of the stream.
func (c *TCPConn) ReadNow(b []byte) (int, error) {
	w := tcpip.SliceWriter(b)
	res, terr := c.ep.Read(&w, tcpip.ReadOptions{})
	switch terr.(type) {
	case nil:
		return res.Count, nil
	case *tcpip.ErrWouldBlock:
		return 0, nil
	case *tcpip.ErrClosedForReceive:
		return 0, io.EOF
	}
	return 0, errors.New("netstack: read: " + terr.String())
}
