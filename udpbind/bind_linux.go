package udpbind

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
)

const (
	// batchSize is the most datagrams one call moves, as wireguard-go's
	// own bind does.
	batchSize = conn.IdealBatchSize
	// maxSegments is the kernel's limit on datagrams in one GSO send, and
	// on datagrams GRO coalesces into one read.
	maxSegments = 64
	// socketBuffer is the send and receive buffer asked of the kernel
	// (beyond net.core.*mem_max only with CAP_NET_ADMIN).
	socketBuffer = 7 << 20
)

// Bind is the Linux conn.Bind. The zero value is not usable; call New.
type Bind struct {
	mu     sync.Mutex             // serialises Open, Close and SetMark
	v4, v6 atomic.Pointer[socket] // nil when closed or the family is unavailable
	open   atomic.Bool            // between Open and Close
	mark   uint32

	senders sync.Pool // *sender
}

var _ conn.Bind = (*Bind)(nil)

// New returns a closed bind; wireguard-go opens it.
func New() conn.Bind {
	b := &Bind{}
	b.senders.New = func() any { return newSender() }
	return b
}

// socket is one open UDP socket of a family. gso and gro say whether the
// kernel segments sends and coalesces receives for it; gso is turned off
// when the kernel refuses a segmented send.
type socket struct {
	conn *net.UDPConn
	rc   syscall.RawConn
	is6  bool
	gro  bool
	gso  atomic.Bool
}

func (b *Bind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	return NewEndpoint(ap), nil
}

func (b *Bind) BatchSize() int { return batchSize }

// Open binds an IPv4 and an IPv6 socket to the same port (a free one when
// port is 0). A family the host lacks is skipped.
func (b *Bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.v4.Load() != nil || b.v6.Load() != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	var v4, v6 *socket
	var actual uint16
	for tries := 0; ; tries++ {
		var err error
		v4, actual, err = b.listen("udp4", port)
		if err != nil && !errors.Is(err, syscall.EAFNOSUPPORT) {
			return nil, 0, err
		}
		if v4 == nil {
			actual = port // no IPv4: IPv6 takes the port asked for
		}
		var actual6 uint16
		v6, actual6, err = b.listen("udp6", actual)
		if err == nil {
			actual = actual6
		}
		if err == nil || errors.Is(err, syscall.EAFNOSUPPORT) {
			break
		}
		if v4 != nil {
			v4.conn.Close()
		}
		// A free IPv4 port can be taken for IPv6: try another one.
		if port != 0 || !errors.Is(err, syscall.EADDRINUSE) || tries >= 100 {
			return nil, 0, err
		}
	}
	var fns []conn.ReceiveFunc
	for _, s := range []*socket{v4, v6} {
		if s != nil {
			fns = append(fns, newReceiver(s).receive)
		}
	}
	if len(fns) == 0 {
		return nil, 0, syscall.EAFNOSUPPORT
	}
	b.v4.Store(v4)
	b.v6.Store(v6)
	b.open.Store(true)
	return fns, actual, nil
}

// listen opens one socket of network ("udp4" or "udp6") on port with the
// options the data path needs. A nil socket and no error cannot happen; a
// family the host lacks returns an error wrapping EAFNOSUPPORT.
func (b *Bind) listen(network string, port uint16) (*socket, uint16, error) {
	s := &socket{is6: network == "udp6"}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = s.setOptions(int(fd), b.mark)
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(context.Background(), network, fmt.Sprintf(":%d", port))
	if err != nil {
		return nil, 0, err
	}
	s.conn = pc.(*net.UDPConn)
	if s.rc, err = s.conn.SyscallConn(); err != nil {
		s.conn.Close()
		return nil, 0, err
	}
	return s, uint16(s.conn.LocalAddr().(*net.UDPAddr).Port), nil
}

// setOptions runs before the socket is bound: buffer sizes (best effort),
// the arrival address of each datagram (for sticky sources), GRO when the
// kernel has it, and the firewall mark. It notes whether GSO is there.
func (s *socket) setOptions(fd int, mark uint32) error {
	for _, o := range [][2]int{
		{unix.SO_RCVBUF, socketBuffer}, {unix.SO_SNDBUF, socketBuffer},
		{unix.SO_RCVBUFFORCE, socketBuffer}, {unix.SO_SNDBUFFORCE, socketBuffer},
	} {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[0], o[1])
	}
	var err error
	if s.is6 {
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
	} else {
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
	}
	if err != nil {
		return fmt.Errorf("udpbind: packet info: %w", err)
	}
	if mark != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(mark)); err != nil {
			return fmt.Errorf("udpbind: firewall mark: %w", err)
		}
	}
	_, err = unix.GetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT)
	s.gso.Store(err == nil)
	s.gro = unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
	return nil
}

// Close closes the sockets; the receive functions then return net.ErrClosed.
func (b *Bind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.open.Store(false) // first: a Send racing Close reports it closed
	var errs []error
	for _, s := range []*socket{b.v4.Swap(nil), b.v6.Swap(nil)} {
		if s != nil {
			errs = append(errs, s.conn.Close())
		}
	}
	return errors.Join(errs...)
}

// SetMark sets the firewall mark of the open sockets and of later ones.
func (b *Bind) SetMark(mark uint32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.mark = mark
	for _, s := range []*socket{b.v4.Load(), b.v6.Load()} {
		if s == nil {
			continue
		}
		var serr error
		err := s.rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		})
		if err = errors.Join(err, serr); err != nil {
			return fmt.Errorf("udpbind: firewall mark: %w", err)
		}
	}
	return nil
}

// Send sends bufs, one datagram each, to ep. Runs of datagrams of one size
// go to the kernel as single segmented sends when it can segment them.
func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(*Endpoint)
	if !ok {
		return fmt.Errorf("udpbind: endpoint of type %T", ep)
	}
	s := b.v4.Load()
	if e.dst.Addr().Is6() {
		s = b.v6.Load()
	}
	if s == nil {
		if !b.open.Load() {
			return net.ErrClosed
		}
		return syscall.EAFNOSUPPORT // the host has no socket of this family
	}
	t := b.senders.Get().(*sender)
	defer b.senders.Put(t)
	return t.send(s, bufs, e)
}
