//go:build unix

package relay

import (
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// rawPoll polls a host stream socket through its raw conn.
type rawPoll struct {
	c    net.Conn // for its read deadline
	rc   syscall.RawConn
	peek []byte // one byte, for MSG_PEEK
	// err is the socket's error that a peek took (a peek clears it,
	// and a read after it would see only an end), for ReadNow to give.
	err error
}

// hostPoll returns a pollable for a host stream socket (a TCP or Unix
// stream connection, or a wrapper that gives its SyscallConn), or nil.
func hostPoll(c net.Conn) pollable {
	if _, ok := c.(net.PacketConn); ok {
		return nil
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return &rawPoll{c: c, rc: rc, peek: make([]byte, 1)}
}

// WaitReadable peeks at the socket, and waits in the runtime's poller
// while nothing is there to read (peeking, not reading, leaves it for
// ReadNow), until deadline: the conn's read deadline while it waits.
func (p *rawPoll) WaitReadable(deadline time.Time) error {
	if err := p.c.SetReadDeadline(deadline); err != nil {
		return err
	}
	return p.rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), p.peek, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if err == syscall.EAGAIN || err == syscall.EINTR {
			return false
		}
		if err != nil {
			p.err = os.NewSyscallError("read", err)
		}
		return true
	})
}

// ReadNow reads from the non-blocking socket once.
func (p *rawPoll) ReadNow(b []byte) (n int, err error) {
	if p.err != nil {
		err, p.err = p.err, nil
		return 0, err
	}
	cerr := p.rc.Control(func(fd uintptr) {
		for {
			n, err = syscall.Read(int(fd), b)
			if err != syscall.EINTR {
				return
			}
		}
	})
	switch {
	case cerr != nil:
		return 0, cerr
	case err == syscall.EAGAIN:
		return 0, nil
	case err != nil:
		return 0, os.NewSyscallError("read", err)
	case n == 0 && len(b) > 0:
		return 0, io.EOF
	}
	return n, nil
}
