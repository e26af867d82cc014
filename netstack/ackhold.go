package netstack

import (
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Outbound ACK holding. gVisor's TCP has no delayed ACK: it acknowledges at
// the end of every batch of segments it processes, so a request answered at
// once costs four packets (request, pure ACK, response, pure ACK), each
// encrypted and sent with its own system call. The link therefore holds a
// pure ACK back for at most ackHold; if the same flow sends anything
// acknowledging as much with at least as large a window before then (the
// response, or a later ACK), the held ACK says nothing new and is dropped;
// otherwise it goes out when the time is up, or just before the flow's next
// packet, so a flow's packets never overtake each other.
//
// Held is only what a receiver can safely get late and what an answer is
// likely to supersede: an ACK with the ACK flag alone, no payload, no option
// but timestamps (no SACK blocks, which report loss), whose acknowledgment
// number advances past the last one the flow sent (so never a duplicate ACK
// or a window update that reopens a closed window, both of which carry an
// old number), on a flow whose previous packet carried data or a SYN (a
// conversation, or a handshake: the dialer's ACK of the SYN-ACK is replaced
// by its first request, which acknowledges the same; a server that speaks
// first then accepts up to ackHold later). The receiving end of a one-way
// transfer, which sends nothing but ACKs, is never held: its ACKs clock the
// sender. A flow is known by a small direct-mapped table; a flow that loses
// its slot to another is sent as unknown (its first ACK is never held).
//
// Go's timers fire within about a millisecond when the whole process is
// idle (the runtime's poller sleeps in milliseconds), so an ACK that nothing
// supersedes can wait up to that long on an idle node; under load they fire
// on time. Linux's own delayed ACK waits 40 ms.

// ackHold is how long a pure ACK may be held; zero turns holding off.
var ackHold = 50 * time.Microsecond

// ackFlows is the number of slots of the flow table (a power of two).
const ackFlows = 256

// ackFlow is one slot of the flow table. All fields are guarded by link.mu.
type ackFlow struct {
	key  [36]byte // source and destination address, then ports; zero: free
	klen uint8
	ack  uint32              // highest acknowledgment number the flow sent
	sent bool                // ack is set (the flow has sent an ACK)
	data bool                // the flow's last packet carried a payload or SYN
	held *stack.PacketBuffer // the pure ACK held back, or nil
	hwnd uint16              // held's raw window field
}

// tcpAck is what the hold decision needs from an outbound TCP packet.
type tcpAck struct {
	key  [36]byte
	klen uint8
	ack  uint32
	wnd  uint16
	pure bool // holdable: ACK alone, no payload, timestamps at most
	data bool // carries a payload or SYN: an answer is expected
	has  bool // carries an acknowledgment (not a bare SYN)
}

// parseAck reads pkt's flow and acknowledgment; ok is false for anything
// but a TCP packet with the ACK or SYN flag whose headers the stack has
// set.
func parseAck(pkt *stack.PacketBuffer) (a tcpAck, ok bool) {
	if pkt.TransportProtocolNumber != header.TCPProtocolNumber {
		return a, false
	}
	nh := pkt.NetworkHeader().Slice()
	th := header.TCP(pkt.TransportHeader().Slice())
	if len(th) < header.TCPMinimumSize || len(th) < int(th.DataOffset()) {
		return a, false
	}
	flags := th.Flags()
	a.has = flags.Contains(header.TCPFlagAck)
	if !a.has && !flags.Contains(header.TCPFlagSyn) {
		return a, false
	}
	switch {
	case len(nh) >= header.IPv4MinimumSize && nh[0]>>4 == 4:
		a.klen = uint8(copy(a.key[:], nh[12:20]))
	case len(nh) >= header.IPv6MinimumSize && nh[0]>>4 == 6:
		a.klen = uint8(copy(a.key[:], nh[8:40]))
	default:
		return a, false
	}
	a.klen += uint8(copy(a.key[a.klen:], th[:4]))
	a.ack = th.AckNumber()
	a.wnd = th.WindowSize()
	a.data = pkt.Data().Size() > 0 || flags.Contains(header.TCPFlagSyn)
	a.pure = flags == header.TCPFlagAck && !a.data && onlyTimestamps(th[header.TCPMinimumSize:th.DataOffset()])
	return a, true
}

// onlyTimestamps reports whether TCP options opts hold nothing but padding
// and a timestamp.
func onlyTimestamps(opts []byte) bool {
	for i := 0; i < len(opts); {
		switch opts[i] {
		case header.TCPOptionEOL:
			return true
		case header.TCPOptionNOP:
			i++
		case header.TCPOptionTS:
			if i+1 >= len(opts) || opts[i+1] != header.TCPOptionTSLength {
				return false
			}
			i += header.TCPOptionTSLength
		default:
			return false
		}
	}
	return true
}

// slot returns the flow table's slot for key (FNV-1a over its bytes).
func slot(key []byte) int {
	h := uint32(2166136261)
	for _, b := range key {
		h = (h ^ uint32(b)) * 16777619
	}
	return int(h & (ackFlows - 1))
}

// seqAfter reports whether sequence number a is after b, modulo 2^32.
func seqAfter(a, b uint32) bool { return int32(a-b) > 0 }

// holdLocked decides the fate of one outbound packet: it returns the
// packets to queue in order (a held ACK that must go first, and pkt unless
// it is now held), and how many held ACKs it dropped as superseded. l.mu
// must be held.
func (l *link) holdLocked(pkt *stack.PacketBuffer) (first, then *stack.PacketBuffer, dropped int) {
	a, ok := parseAck(pkt)
	if !ok {
		return nil, pkt, 0
	}
	f := &l.acks[slot(a.key[:a.klen])]
	known := f.klen == a.klen && f.key == a.key
	if f.held != nil {
		if known && a.has && !seqAfter(f.ack, a.ack) && a.wnd >= f.hwnd {
			f.held.DecRef()
			dropped = 1
		} else {
			first = f.held
		}
		f.held = nil
		if l.nheld--; l.nheld == 0 {
			l.holdTimer.Stop() // nothing left to release
		}
	}
	advances := known && a.has && (!f.sent || seqAfter(a.ack, f.ack))
	answered := known && f.data
	if !known {
		f.key, f.klen, f.sent = a.key, a.klen, false
	}
	if a.has && (!f.sent || advances) {
		f.ack, f.sent = a.ack, true
	}
	f.data = a.data
	if !a.pure || !advances || !answered || ackHold <= 0 || l.closed {
		return first, pkt, dropped
	}
	f.held, f.hwnd = pkt.IncRef(), a.wnd
	l.nheld++
	if l.nheld == 1 {
		if l.holdTimer == nil {
			l.holdTimer = time.AfterFunc(ackHold, l.releaseHeld)
		} else {
			l.holdTimer.Reset(ackHold)
		}
	}
	return first, nil, dropped
}

// releaseHeld queues every held ACK (the hold timer's function).
func (l *link) releaseHeld() {
	l.mu.Lock()
	wasEmpty := l.count == 0
	for i := range l.acks {
		f := &l.acks[i]
		if f.held == nil {
			continue
		}
		if !l.closed && l.count < len(l.queue) {
			l.pushLocked(f.held)
		} else {
			f.held.DecRef()
		}
		f.held = nil
	}
	l.nheld = 0
	queued := l.count > 0
	l.mu.Unlock()
	l.afterQueue(wasEmpty, queued, true)
}
