package udpbind

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
)

// mmsghdr is the kernel's struct mmsghdr: Go pads it to the C layout on
// both 32- and 64-bit platforms.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// oobSize holds the control messages of one datagram: the arrival address
// (IPv6's is the larger) and the GRO segment size, or on sending the
// sticky source and the GSO segment size.
var oobSize = unix.CmsgSpace(unix.SizeofInet6Pktinfo) + unix.CmsgSpace(4)

// maxPayload is the largest UDP payload one (segmented) send may carry.
func maxPayload(is6 bool) int {
	if is6 {
		return 1<<16 - 1 - 8
	}
	return 1<<16 - 1 - 20 - 8
}

// --- receiving ---

// receiver is the state of one ReceiveFunc: the message headers, address
// and control buffers of a batch, reused on every call, and the endpoints
// seen so far. One goroutine at a time uses it.
type receiver struct {
	s     *socket
	hs    [batchSize]mmsghdr
	iovs  [batchSize]unix.Iovec
	names [batchSize]unix.RawSockaddrInet6
	oob   []byte // batchSize * oobSize
	eps   interner

	// The arguments and results of the recvmmsg that read runs; a
	// method value bound once so that the RawConn call does not
	// allocate.
	want, got int
	errno     syscall.Errno
	readFn    func(fd uintptr) bool

	// The rest of a coalesced run that did not fit in the caller's
	// buffers (fewer than maxSegments), handed out by the next calls
	// before anything new is read: segments of carrySeg bytes from ep.
	carry    []byte
	carrySeg int
	carryEp  conn.Endpoint
}

func newReceiver(s *socket) *receiver {
	r := &receiver{s: s, oob: make([]byte, batchSize*oobSize)}
	r.readFn = r.read
	return r
}

// read returns false only when nothing is waiting (the poller then waits
// for the socket to become readable).
func (r *receiver) read(fd uintptr) bool {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hs[0])), uintptr(r.want), 0, 0, 0)
		switch errno {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		case 0:
			r.got, r.errno = int(n), 0
		default:
			r.got, r.errno = 0, errno
		}
		return true
	}
}

// receive is the conn.ReceiveFunc. Without GRO it reads datagrams straight
// into bufs. With GRO a read can return a run of coalesced datagrams, so it
// reads into the last few buffers (a run fills at most maxSegments) and
// splits each run into the buffers from the first on; a buffer is only
// written once what it held has been moved out.
func (r *receiver) receive(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	if len(bufs) == 0 {
		return 0, nil
	}
	if len(r.carry) > 0 {
		return r.emitCarry(bufs, sizes, eps), nil
	}
	first, want := 0, min(len(bufs), batchSize)
	if r.s.gro {
		want = max(1, min(len(bufs), batchSize)/maxSegments)
		first = len(bufs) - want
	}
	for i := range want {
		buf := bufs[first+i]
		h := &r.hs[i].hdr
		*h = unix.Msghdr{}
		r.iovs[i].Base = unsafe.SliceData(buf)
		r.iovs[i].SetLen(len(buf))
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Namelen = unix.SizeofSockaddrInet6
		h.Control = &r.oob[i*oobSize]
		h.SetControllen(oobSize)
	}
	r.want = want
	if err := r.s.rc.Read(r.readFn); err != nil {
		return 0, err
	}
	if r.errno != 0 {
		return 0, &net.OpError{Op: "recvmmsg", Net: "udp", Err: r.errno}
	}
	out := 0
	for i := range r.got {
		h := &r.hs[i]
		size := int(h.n)
		if h.hdr.Flags&unix.MSG_TRUNC != 0 || out == len(bufs) {
			continue // larger than a buffer: not WireGuard; or no room
		}
		ep, gsoSize := r.parse(i)
		src := bufs[first+i][:size]
		if gsoSize <= 0 || gsoSize >= size {
			if out != first+i {
				copy(bufs[out], src)
			}
			sizes[out], eps[out] = size, ep
			out++
			continue
		}
		off := 0
		for ; off < size && out < len(bufs); off += gsoSize {
			seg := src[off:min(off+gsoSize, size)]
			sizes[out] = copy(bufs[out], seg)
			eps[out] = ep
			out++
		}
		if off < size { // only when bufs are fewer than a run's segments
			r.carry = append(r.carry[:0], src[off:]...)
			r.carrySeg, r.carryEp = gsoSize, ep
		}
	}
	return out, nil
}

// emitCarry hands out the carried segments, as many as bufs hold.
func (r *receiver) emitCarry(bufs [][]byte, sizes []int, eps []conn.Endpoint) int {
	out, off := 0, 0
	for ; off < len(r.carry) && out < len(bufs); off += r.carrySeg {
		sizes[out] = copy(bufs[out], r.carry[off:min(off+r.carrySeg, len(r.carry))])
		eps[out] = r.carryEp
		out++
	}
	r.carry = r.carry[:copy(r.carry, r.carry[off:])]
	return out
}

// parse reads datagram i's sender, arrival address and GRO segment size.
func (r *receiver) parse(i int) (*Endpoint, int) {
	var k endpointKey
	name := &r.names[i]
	switch name.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(name))
		k.dst = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:]))
	case unix.AF_INET6:
		k.dst = netip.AddrPortFrom(netip.AddrFrom16(name.Addr).Unmap(), binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&name.Port))[:]))
	}
	gsoSize := 0
	oob := r.oob[i*oobSize : i*oobSize+int(r.hs[i].hdr.Controllen)]
	for len(oob) >= unix.CmsgLen(0) {
		c := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(c.Len)
		if l < unix.CmsgLen(0) || l > len(oob) {
			break
		}
		data := oob[unix.CmsgLen(0):l]
		switch {
		case c.Level == unix.IPPROTO_IP && c.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			info := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
			k.src, k.ifindex = netip.AddrFrom4(info.Spec_dst), info.Ifindex
		case c.Level == unix.IPPROTO_IPV6 && c.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			info := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
			k.src, k.ifindex = netip.AddrFrom16(info.Addr), int32(info.Ifindex)
		case c.Level == unix.IPPROTO_UDP && c.Type == unix.UDP_GRO && len(data) >= 4:
			gsoSize = int(*(*int32)(unsafe.Pointer(&data[0]))) // the kernel writes an int
		}
		sp := unix.CmsgSpace(l - unix.CmsgLen(0))
		if sp >= len(oob) {
			break
		}
		oob = oob[sp:]
	}
	return r.eps.get(k), gsoSize
}

// --- sending ---

// sender is the state of one Send call: message headers, I/O vectors and
// control buffers for a batch, and the destination address. Senders are
// pooled by the Bind.
type sender struct {
	hs   [batchSize]mmsghdr
	iovs [batchSize]unix.Iovec
	oob  []byte // batchSize * oobSize
	name unix.RawSockaddrInet6

	// The arguments and results of the sendmmsg that write runs.
	msgs, sent int
	errno      syscall.Errno
	writeFn    func(fd uintptr) bool
}

func newSender() *sender {
	t := &sender{oob: make([]byte, batchSize*oobSize)}
	t.writeFn = t.write
	return t
}

// write sends until every message is gone or an error; it returns false
// only when the socket's buffer is full (the poller then waits for room).
func (t *sender) write(fd uintptr) bool {
	for t.sent < t.msgs {
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&t.hs[t.sent])), uintptr(t.msgs-t.sent), 0, 0, 0)
		switch errno {
		case 0:
			t.sent += int(n)
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			t.errno = errno
			return true
		}
	}
	return true
}

// send sends bufs to e through s. When the kernel refuses a segmented send
// (EIO: no checksum offload on the route's device), segmentation is turned
// off for the socket and the batch goes again unsegmented; when it refuses
// the sticky source (EINVAL: the address is gone), the endpoint forgets it
// and the batch goes again.
func (t *sender) send(s *socket, bufs [][]byte, e *Endpoint) error {
	if len(bufs) == 0 {
		return nil
	}
	if !t.setName(e.dst, s.is6) {
		return &net.OpError{Op: "sendmmsg", Net: "udp", Err: unix.EAFNOSUPPORT}
	}
	for {
		gso := s.gso.Load()
		src, ifindex := e.SrcIP(), e.ifindex
		err := t.sendOnce(s, bufs, gso, src, ifindex)
		switch {
		case err == nil:
			return nil
		case gso && errors.Is(err, unix.EIO):
			s.gso.Store(false)
		case src.IsValid() && errors.Is(err, unix.EINVAL):
			e.ClearSrc()
		default:
			return err
		}
	}
}

// setName writes dst as the sockaddr of s's family; false if dst cannot be
// reached through it.
func (t *sender) setName(dst netip.AddrPort, is6 bool) bool {
	t.name = unix.RawSockaddrInet6{}
	port := (*[2]byte)(unsafe.Pointer(&t.name.Port))
	binary.BigEndian.PutUint16(port[:], dst.Port())
	if is6 {
		if !dst.Addr().Is6() {
			return false
		}
		t.name.Family = unix.AF_INET6
		t.name.Addr = dst.Addr().As16()
		if z := dst.Addr().Zone(); z != "" {
			if ifi, err := net.InterfaceByName(z); err == nil {
				t.name.Scope_id = uint32(ifi.Index)
			}
		}
		return true
	}
	if !dst.Addr().Is4() {
		return false
	}
	sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&t.name))
	sa.Family = unix.AF_INET
	sa.Addr = dst.Addr().As4()
	return true
}

// sendOnce builds the messages for bufs and writes them all. With gso, a
// run of datagrams of one size (the last may be shorter) becomes one
// message whose I/O vectors are the datagrams themselves.
func (t *sender) sendOnce(s *socket, bufs [][]byte, gso bool, src netip.Addr, ifindex int32) error {
	msgs := 0
	limit := maxPayload(s.is6)
	for i := 0; i < len(bufs); {
		seg := len(bufs[i])
		j, total := i+1, seg
		if gso {
			for j < len(bufs) && j-i < maxSegments && len(bufs[j]) <= seg && total+len(bufs[j]) <= limit {
				total += len(bufs[j])
				j++
				if len(bufs[j-1]) < seg {
					break // a shorter datagram ends the run
				}
			}
		}
		for k := i; k < j; k++ {
			t.iovs[k].Base = unsafe.SliceData(bufs[k])
			t.iovs[k].SetLen(len(bufs[k]))
		}
		h := &t.hs[msgs].hdr
		*h = unix.Msghdr{}
		h.Name = (*byte)(unsafe.Pointer(&t.name))
		h.Namelen = unix.SizeofSockaddrInet4
		if s.is6 {
			h.Namelen = unix.SizeofSockaddrInet6
		}
		h.Iov = &t.iovs[i]
		h.SetIovlen(j - i)
		oob := t.oob[msgs*oobSize : (msgs+1)*oobSize]
		n := 0
		if src.IsValid() {
			n += putSource(oob, src, ifindex, s.is6)
		}
		if j-i > 1 {
			sp, data := putCmsg(oob[n:], unix.IPPROTO_UDP, unix.UDP_SEGMENT, 2)
			*(*uint16)(unsafe.Pointer(&data[0])) = uint16(seg) // host order, as the kernel reads it
			n += sp
		}
		if n > 0 {
			h.Control = &oob[0]
			h.SetControllen(n)
		}
		msgs++
		i = j
	}
	t.msgs, t.sent, t.errno = msgs, 0, 0
	err := s.rc.Write(t.writeFn)
	if err == nil && t.errno != 0 {
		err = &net.OpError{Op: "sendmmsg", Net: "udp", Err: t.errno}
	}
	return err
}

// putCmsg writes a control message header for datalen bytes of data at the
// start of b and returns the space the message takes and its (zeroed) data.
func putCmsg(b []byte, level, typ int32, datalen int) (int, []byte) {
	sp := unix.CmsgSpace(datalen)
	clear(b[:sp])
	c := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	c.Level, c.Type = level, typ
	c.SetLen(unix.CmsgLen(datalen))
	return sp, b[unix.CmsgLen(0) : unix.CmsgLen(0)+datalen]
}

// putSource writes the packet-info message that makes the kernel send from
// src.
func putSource(b []byte, src netip.Addr, ifindex int32, is6 bool) int {
	if is6 {
		n, data := putCmsg(b, unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, unix.SizeofInet6Pktinfo)
		info := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
		info.Addr = src.As16()
		if src.IsLinkLocalUnicast() {
			info.Ifindex = uint32(ifindex)
		}
		return n
	}
	n, data := putCmsg(b, unix.IPPROTO_IP, unix.IP_PKTINFO, unix.SizeofInet4Pktinfo)
	info := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
	info.Spec_dst = src.As4()
	return n
}
