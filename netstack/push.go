package netstack

import "sync"

// pusher is the link's push mode (Stack.SetSender): instead of waiting for
// a device to Read them, the stack's outbound packets are cut to the MTU
// and handed to a send function. TCP's are sent by the goroutine that
// wrote them, so a WireGuard implementation can encrypt and send them
// there without a hand-off to another goroutine: gVisor hands TCP's data
// over in large segments, a batch in themselves, and a request's answer
// leaves at once. Other packets (UDP, ICMP) are sent by the pusher's own
// goroutine, woken when they are queued: an application writing datagrams
// one by one then goes on while they are sent, and what queues up
// meanwhile leaves in one batch (one system call) instead of one each.
//
// Concurrency: one goroutine at a time drains the queue (mu, taken with
// TryLock); a writer that finds it taken leaves its packets queued for the
// drainer, which looks at the queue again after it lets go of mu, so none
// is left behind. mu also guards the buffers and the link's pending
// segment.
type pusher struct {
	send   func(bufs [][]byte, offset int) error
	offset int
	kick   chan struct{} // capacity 1: wakes the pusher's goroutine
	stop   chan struct{} // closed when the link closes

	mu    sync.Mutex
	bufs  [batchSize][]byte // each offset + MTU long, with tail bytes of room beyond
	sizes [batchSize]int
	out   [batchSize][]byte // bufs cut to their packets, handed to send
}

func newPusher(send func([][]byte, int) error, offset, tail int, mtu uint32) *pusher {
	p := &pusher{send: send, offset: offset, kick: make(chan struct{}, 1), stop: make(chan struct{})}
	size := offset + int(mtu)
	for i := range p.bufs {
		p.bufs[i] = make([]byte, size, size+tail)
	}
	return p
}

// runPusher is the pusher's goroutine: it drains the queue each time it is
// kicked, until the link closes.
func (l *link) runPusher(p *pusher) {
	for {
		select {
		case <-p.stop:
			return
		case <-p.kick:
			l.drain(p)
		}
	}
}

// drain sends what is queued, in batches, until the queue is empty or
// another goroutine drains it.
func (l *link) drain(p *pusher) {
	for p.mu.TryLock() {
		for {
			n := l.readNow(p.bufs[:], p.sizes[:], p.offset)
			if n == 0 {
				break
			}
			for i := range n {
				p.out[i] = p.bufs[i][:p.offset+p.sizes[i]]
			}
			// A send error means the device is closed; the packets
			// are lost with it, as a closed queue's are.
			_ = p.send(p.out[:n], p.offset)
		}
		p.mu.Unlock()
		l.mu.Lock()
		more := l.count > 0 && !l.closed
		l.mu.Unlock()
		if !more {
			return
		}
	}
}

// afterQueue wakes whoever moves queued packets on: in push mode the
// caller itself when it queued TCP, else the pusher's goroutine; a blocked
// Read otherwise. wasEmpty and queued describe the queue before and after
// the caller added to it.
func (l *link) afterQueue(wasEmpty, queued, tcp bool) {
	if p := l.push.Load(); p != nil {
		switch {
		case !queued:
		case tcp:
			l.drain(p)
		default:
			select {
			case p.kick <- struct{}{}:
			default:
			}
		}
		return
	}
	if wasEmpty && queued {
		l.signal()
	}
}

// SetSender puts the stack in push mode: from then on each outbound TCP
// packet is written by the goroutine that sends it (a stack goroutine, an
// application's Write, the ACK hold's timer), and other packets by the
// stack's own goroutine, in batches of up to 128,
// into bufs[i][offset:] cut to the packet's length, with tail bytes of
// capacity beyond it for the sender's use (WireGuard's padding and tag),
// and the Device's Read returns nothing more: it waits for Close and
// returns os.ErrClosed. send is called by one
// goroutine at a time and must not keep bufs after it returns; it may be
// called while the stack holds its own locks, so it must not call back
// into the stack. Call it once, before traffic flows.
func (ns *Stack) SetSender(send func(bufs [][]byte, offset int) error, offset, tail int) {
	p := newPusher(send, offset, tail, ns.link.mtu)
	ns.link.push.Store(p)
	go ns.link.runPusher(p)
}
