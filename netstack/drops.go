package netstack

import (
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Drop says why the stack refused a packet; see [Stack.SetDropObserver].
type Drop uint8

const (
	// DropNoListener: no socket and no handler took a TCP segment or UDP
	// datagram; the stack answers with a RST or an ICMP port unreachable.
	DropNoListener Drop = iota + 1
	// DropRefused: the first datagram of a UDP flow whose handler found
	// its target refused ([UDPRequest.Unreachable]); answered with ICMP.
	DropRefused
	// DropQueueFull: the queue from the stack to the tunnel device was
	// full; TCP retransmits, a UDP datagram is lost.
	DropQueueFull

	numDrops
)

// DropObserver is told of the packets the stack refuses. Active is asked
// first, on the packet path, and must be cheap; only when it returns true
// is the packet copied and Dropped called, with a packet the observer may
// keep. Both are called from the stack's goroutines, concurrently.
type DropObserver interface {
	Active() bool
	Dropped(d Drop, packet []byte)
}

// Drops returns how many packets the stack refused for d since it was
// made, whether or not an observer was active.
func (ns *Stack) Drops(d Drop) uint64 {
	if d >= numDrops {
		return 0
	}
	return ns.drops[d].Load()
}

// QueueDrops returns how many packets the stack could not queue for the
// tunnel device because its queue (4096 packets) was full: TCP sends them
// again, UDP datagrams are lost.
func (ns *Stack) QueueDrops() uint64 { return ns.Drops(DropQueueFull) }

// SetDropObserver makes o the stack's drop observer (nil for none). It may
// be called at any time.
func (ns *Stack) SetDropObserver(o DropObserver) {
	if o == nil {
		ns.dropObs.Store(nil)
		return
	}
	ns.dropObs.Store(&o)
}

// observeDrop counts pkt as refused for d and tells the observer, if one
// is set and active.
func (ns *Stack) observeDrop(d Drop, pkt *stack.PacketBuffer) {
	ns.drops[d].Add(1)
	p := ns.dropObs.Load()
	if p == nil || !(*p).Active() {
		return
	}
	view := pkt.ToView()
	b := append([]byte(nil), view.AsSlice()...)
	view.Release()
	(*p).Dropped(d, b)
}
