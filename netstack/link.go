package netstack

import (
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// batchSize is how many packets one Read or Write call moves at most. It
// matches the largest batch wireguard-go's device hands to a tun.Device.
const batchSize = 128

// outQueueLen bounds the packets the stack has written that the WireGuard
// device has not read yet (a large TCP segment counts once; TCP's window
// bounds how many of those are in flight). When it is full, further packets
// are refused with ErrNoBufferSpace and TCP retransmits them; nothing blocks
// the stack.
const outQueueLen = 4096

// link is the seam between gVisor and WireGuard. Towards gVisor it is a
// stack.LinkEndpoint without a link header; towards wireguard-go it is a
// tun.Device. Packets the stack sends are queued (holding a reference) until
// the device reads them in batches, or, in push mode (push.go), until the
// link's drainer hands them to the send function; packets the device
// writes are delivered into the stack synchronously in the writer's
// goroutine.
//
// Concurrency: Read is called by one goroutine (wireguard-go's TUN reader),
// Write by any number (one per peer); WritePackets by any stack goroutine.
// mu guards the outbound queue and the closed flag; the dispatcher is swapped
// only while the NIC is created or removed and is guarded by dmu.
type link struct {
	mtu uint32

	dmu        sync.RWMutex
	dispatcher stack.NetworkDispatcher

	mu     sync.Mutex
	queue  []*stack.PacketBuffer // ring buffer of outQueueLen
	head   int                   // index of the oldest queued packet
	count  int                   // queued packets
	closed bool
	ready  chan struct{} // capacity 1: signalled when the queue becomes non-empty or the link closes

	events chan tun.Event

	// refused, if set before the link is attached, is told of each packet
	// WritePackets refuses because the queue is full (the stack counts
	// them).
	refused func(Drop, *stack.PacketBuffer)
	// screen, if set, sees every batch from the tunnel before delivery
	// (the stack's screenInbound).
	screen func(bufs [][]byte, offset int)

	// The ACK hold (ackhold.go): the flow table, how many of its slots
	// hold an ACK, and the timer that releases them; guarded by mu.
	acks      [ackFlows]ackFlow
	nheld     int
	holdTimer *time.Timer
	// acksDropped counts held ACKs dropped as superseded.
	acksDropped atomic.Uint64

	// pending is a large TCP segment that Read has written out in part,
	// from its pendingNext-th packet on; only Read's goroutine uses them.
	pending     *stack.PacketBuffer
	pendingNext int

	// push, once set, sends packets as they are queued (push.go).
	push atomic.Pointer[pusher]
}

var (
	_ stack.LinkEndpoint = (*link)(nil)
	_ stack.GSOEndpoint  = (*link)(nil)
	_ tun.Device         = device{}
)

func newLink(mtu int) *link {
	l := &link{
		mtu:    uint32(mtu),
		queue:  make([]*stack.PacketBuffer, outQueueLen),
		ready:  make(chan struct{}, 1),
		events: make(chan tun.Event, 1),
	}
	l.events <- tun.EventUp
	return l
}

// --- stack.LinkEndpoint ---

func (l *link) MTU() uint32                             { return l.mtu }
func (l *link) SetMTU(mtu uint32)                       {}
func (l *link) MaxHeaderLength() uint16                 { return 0 }
func (l *link) LinkAddress() tcpip.LinkAddress          { return "" }
func (l *link) SetLinkAddress(tcpip.LinkAddress)        {}
func (l *link) Wait()                                   {}
func (l *link) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }
func (l *link) AddHeader(*stack.PacketBuffer)           {}
func (l *link) ParseHeader(*stack.PacketBuffer) bool    { return true }
func (l *link) SetOnCloseAction(func())                 {}

// Capabilities: packets that reach the stack were authenticated by
// WireGuard's AEAD, so a corrupted checksum cannot come from the wire; the
// stack skips verifying it. Outbound checksums are always computed because
// the peer's stack verifies them.
func (l *link) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityRXChecksumOffload
}

// GSOMaxSize and SupportedGSO let gVisor's TCP hand the link segments of up
// to 60 KiB with a partial checksum ("host GSO"); read cuts them into
// MSS-sized packets straight into the device's buffers (segment.go), so
// packets still leave here at the MTU. (gVisor's own GSO built a packet
// buffer per MSS-sized packet first: 12% of a bulk transfer's CPU.)
func (l *link) GSOMaxSize() uint32               { return gsoMaxSize }
func (l *link) SupportedGSO() stack.SupportedGSO { return stack.HostGSOSupported }

func (l *link) Attach(d stack.NetworkDispatcher) {
	l.dmu.Lock()
	l.dispatcher = d
	l.dmu.Unlock()
}

func (l *link) IsAttached() bool {
	l.dmu.RLock()
	defer l.dmu.RUnlock()
	return l.dispatcher != nil
}

// WritePackets queues the stack's outbound packets for Read, holding pure
// ACKs back for a moment (ackhold.go). It never blocks: when the queue is
// full the rest of the list is refused.
func (l *link) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return 0, &tcpip.ErrClosedForSend{}
	}
	wasEmpty := l.count == 0
	n, dropped, tcp := 0, 0, false
	for _, pkt := range pkts.AsSlice() {
		tcp = tcp || pkt.TransportProtocolNumber == header.TCPProtocolNumber
		// Room for pkt and a held ACK that may have to go first.
		if l.count+2 > len(l.queue) {
			break
		}
		first, then, d := l.holdLocked(pkt)
		dropped += d
		if first != nil {
			l.pushLocked(first)
		}
		if then != nil {
			l.pushLocked(then.IncRef())
		}
		n++
	}
	queued := l.count > 0
	l.mu.Unlock()
	if dropped > 0 {
		l.acksDropped.Add(uint64(dropped))
	}
	if n < pkts.Len() && l.refused != nil {
		for _, pkt := range pkts.AsSlice()[n:] {
			l.refused(DropQueueFull, pkt)
		}
	}
	l.afterQueue(wasEmpty, queued, tcp)
	if n == 0 {
		return 0, &tcpip.ErrNoBufferSpace{}
	}
	return n, nil
}

// pushLocked appends pkt, whose reference the queue takes over, to the
// queue, which must have room. l.mu must be held.
func (l *link) pushLocked(pkt *stack.PacketBuffer) {
	l.queue[(l.head+l.count)%len(l.queue)] = pkt
	l.count++
}

// signal wakes Read if it waits.
func (l *link) signal() {
	select {
	case l.ready <- struct{}{}:
	default:
	}
}

// Close is called by the stack when the NIC is removed.
func (l *link) Close() {}

// takeLocked removes and returns the oldest queued packet. l.mu must be held
// and the queue must not be empty.
func (l *link) takeLocked() *stack.PacketBuffer {
	p := l.queue[l.head]
	l.queue[l.head] = nil
	l.head = (l.head + 1) % len(l.queue)
	l.count--
	return p
}

// device is the tun.Device face of a link. (It is a separate type because
// both interfaces have an MTU method, with different signatures.)
type device struct{ l *link }

func (d device) File() *os.File           { return nil }
func (d device) Name() (string, error)    { return "wgsidecar", nil }
func (d device) Events() <-chan tun.Event { return d.l.events }
func (d device) BatchSize() int           { return batchSize }
func (d device) MTU() (int, error)        { return int(d.l.mtu), nil }
func (d device) Close() error             { d.l.closeDevice(); return nil }
func (d device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if p := d.l.push.Load(); p != nil {
		<-p.stop // in push mode the drainer has the packets
		return 0, os.ErrClosed
	}
	return d.l.read(bufs, sizes, offset)
}
func (d device) Write(bufs [][]byte, offset int) (int, error) { return d.l.write(bufs, offset) }

// read moves queued outbound packets into bufs, each starting at offset,
// and releases them to gVisor's pools; a large TCP segment fills several
// buffers, and what does not fit is kept (l.pending) for the next call. It
// blocks until at least one packet is queued or the device is closed.
func (l *link) read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if min(len(bufs), batchSize) == 0 {
		return 0, nil
	}
	for {
		if n := l.readNow(bufs, sizes, offset); n > 0 {
			return n, nil
		}
		l.mu.Lock()
		closed, empty := l.closed, l.count == 0
		l.mu.Unlock()
		if closed {
			return 0, os.ErrClosed
		}
		if empty {
			<-l.ready
		}
	}
}

// readNow is read without the wait: it returns 0 when nothing is queued.
// Its caller owns l.pending (Read's goroutine, or the pusher's drainer).
func (l *link) readNow(bufs [][]byte, sizes []int, offset int) int {
	room := min(len(bufs), batchSize)
	out := 0
	if l.pending != nil {
		out = l.emitPending(bufs[:room], sizes, offset)
		if l.pending != nil || out == room {
			return out
		}
	}
	l.mu.Lock()
	// Take packets while their MTU-sized packets fit, and at least one.
	var taken [batchSize]*stack.PacketBuffer
	budget := room - out
	n, need := 0, 0
	for l.count > 0 && n < budget {
		s := segments(l.queue[l.head])
		if n > 0 && need+s > budget {
			break
		}
		taken[n] = l.takeLocked()
		n++
		need += s
	}
	more := l.count > 0
	l.mu.Unlock()
	if more {
		l.signal() // leave the signal set for the next Read
	}

	for i := range n {
		// Only the last packet taken can fail to fit and stay pending.
		l.pending, l.pendingNext = taken[i], 0
		out += l.emitPending(bufs[out:room], sizes[out:], offset)
	}
	return out
}

// emitPending writes l.pending, from packet l.pendingNext on, into bufs
// (at least one) and returns how many packets it wrote. When all are
// written it releases the packet buffer and clears l.pending; otherwise
// l.pendingNext says where to go on. Only Read's goroutine calls it.
func (l *link) emitPending(bufs [][]byte, sizes []int, offset int) int {
	pkt := l.pending
	out := 0
	if !isTCPGSO(pkt) {
		dst := bufs[0][offset:]
		// A packet larger than the device's buffers cannot be sent.
		// The stack only produces packets up to the MTU, so this is a
		// programming error rather than traffic; drop it.
		if pkt.Size() <= len(dst) {
			sizes[0] = copyPacket(dst, pkt)
			out = 1
		}
	} else {
		n := segments(pkt)
		for i := l.pendingNext; i < n; i++ {
			if out == len(bufs) {
				l.pendingNext = i
				return out
			}
			size := writeSegment(bufs[out][offset:], pkt, i, n)
			if size < 0 {
				break // as above: drop the rest
			}
			sizes[out] = size
			out++
		}
	}
	l.pending = nil
	pkt.DecRef()
	return out
}

// write delivers each packet, starting at offset in its buffer, into the
// stack, in the caller's goroutine. Each packet, or each run of in-order
// TCP segments of one flow merged into one (coalesce.go), is copied into a
// pooled gVisor buffer, which the stack releases when it is done with it.
func (l *link) write(bufs [][]byte, offset int) (int, error) {
	l.dmu.RLock()
	d := l.dispatcher
	l.dmu.RUnlock()
	if d == nil {
		return 0, os.ErrClosed
	}
	if l.screen != nil {
		l.screen(bufs, offset)
	}
	if n := deliverBatch(d, bufs, offset); n < len(bufs) {
		return n, syscall.EAFNOSUPPORT
	}
	return len(bufs), nil
}

// closeDevice wakes a blocked Read, drops what is still queued and closes
// the events channel. It is idempotent.
func (l *link) closeDevice() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	for l.count > 0 {
		l.takeLocked().DecRef()
	}
	for i := range l.acks {
		if f := &l.acks[i]; f.held != nil {
			f.held.DecRef()
			f.held = nil
		}
	}
	l.nheld = 0
	if l.holdTimer != nil {
		l.holdTimer.Stop()
	}
	l.mu.Unlock()
	// A segment Read left pending is dropped with the garbage: pending
	// belongs to Read's goroutine.
	l.signal()
	if p := l.push.Load(); p != nil {
		close(p.stop)
	}
	close(l.events)
}

// copyPacket copies the whole of pkt (from its first header on) into dst,
// which must be large enough, without allocating.
func copyPacket(dst []byte, pkt *stack.PacketBuffer) int {
	views, skip := pkt.AsViewList()
	n := 0
	for v := views.Front(); v != nil; v = v.Next() {
		b := v.AsSlice()
		if skip >= len(b) {
			skip -= len(b)
			continue
		}
		n += copy(dst[n:], b[skip:])
		skip = 0
	}
	return n
}
