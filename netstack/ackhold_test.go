package netstack

import (
	"io"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// The tests run in synctest bubbles, where the hold timer fires only when
// the test waits: on a loaded machine real time could release a held ACK
// between two steps.

// outbound makes an outbound packet buffer of s, with its headers set as
// the stack sets them; sack replaces its timestamp option by a SACK block.
func outbound(s segSpec, sack bool) *stack.PacketBuffer {
	b := tcpPacket(s)
	ipLen, proto := header.IPv4MinimumSize, ipv4.ProtocolNumber
	if s.v6 {
		ipLen, proto = header.IPv6MinimumSize, ipv6.ProtocolNumber
	}
	if sack {
		copy(b[ipLen+header.TCPMinimumSize:], []byte{header.TCPOptionNOP, header.TCPOptionNOP, header.TCPOptionSACK, 10, 0, 0, 1, 0, 0, 0, 2, 0})
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
	pkt.NetworkProtocolNumber = proto
	pkt.NetworkHeader().Consume(ipLen)
	pkt.TransportProtocolNumber = header.TCPProtocolNumber
	pkt.TransportHeader().Consume(int(header.TCP(b[ipLen:]).DataOffset()))
	return pkt
}

// send writes pkts to l as the stack does and releases the caller's
// references, as the stack does after WritePackets.
func send(t *testing.T, l *link, pkts ...*stack.PacketBuffer) {
	t.Helper()
	var list stack.PacketBufferList
	for _, p := range pkts {
		list.PushBack(p)
	}
	if n, err := l.WritePackets(list); n != len(pkts) || err != nil {
		t.Fatalf("WritePackets = %d, %v; want %d", n, err, len(pkts))
	}
	list.DecRef()
}

// queued returns the acknowledgment numbers and payload sizes of the
// packets queued on l, without reading them.
func queued(l *link) (acks []uint32, sizes []int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.count {
		p := l.queue[(l.head+i)%len(l.queue)]
		acks = append(acks, header.TCP(p.TransportHeader().Slice()).AckNumber())
		sizes = append(sizes, p.Data().Size())
	}
	return acks, sizes
}

// conversation starts a flow on l that has sent data (the request), so its
// next advancing pure ACK is held.
func conversation(t *testing.T, l *link, v6 bool) {
	send(t, l, outbound(segSpec{v6: v6, seq: 1000, ack: 100, payload: 64}, false))
}

func TestAckHoldDropsAckAnAnswerSupersedes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		for _, v6 := range []bool{false, true} {
			l := newLink(DefaultMTU)
			conversation(t, l, v6)
			send(t, l, outbound(segSpec{v6: v6, seq: 1064, ack: 164}, false)) // pure ACK: held
			if acks, _ := queued(l); len(acks) != 1 {
				t.Fatalf("v6=%v: %d packets queued after the pure ACK; want 1 (the ACK held)", v6, len(acks))
			}
			send(t, l, outbound(segSpec{v6: v6, seq: 1064, ack: 164, payload: 64}, false)) // the answer
			acks, sizes := queued(l)
			if len(acks) != 2 || sizes[1] != 64 {
				t.Fatalf("v6=%v: queued sizes %v; want the request and the answer only", v6, sizes)
			}
			if got := l.acksDropped.Load(); got != 1 {
				t.Errorf("v6=%v: acksDropped = %d; want 1", v6, got)
			}
			l.closeDevice()
		}
	})
}

func TestAckHoldReleasesAfterHoldTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLink(DefaultMTU)
		defer l.closeDevice()
		conversation(t, l, false)
		send(t, l, outbound(segSpec{seq: 1064, ack: 164}, false))
		time.Sleep(ackHold / 2)
		if acks, _ := queued(l); len(acks) != 1 {
			t.Fatalf("%d packets queued halfway through the hold; want 1", len(acks))
		}
		time.Sleep(ackHold)
		synctest.Wait()
		if acks, sizes := queued(l); len(acks) != 2 || acks[1] != 164 || sizes[1] != 0 {
			t.Fatalf("after the hold: acks %v sizes %v; want the held ACK (164) queued", acks, sizes)
		}
	})
}

func TestAckHoldHandshake(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The dialing side: SYN, then the ACK of the SYN-ACK is held and the
		// first request, carrying the same acknowledgment, replaces it.
		l := newLink(DefaultMTU)
		send(t, l, outbound(segSpec{seq: 999, flags: header.TCPFlagSyn}, false))
		send(t, l, outbound(segSpec{seq: 1000, ack: 5001}, false))
		if acks, _ := queued(l); len(acks) != 1 {
			t.Fatalf("%d packets queued after SYN and handshake ACK; want 1 (the ACK held)", len(acks))
		}
		send(t, l, outbound(segSpec{seq: 1000, ack: 5001, payload: 64}, false))
		if _, sizes := queued(l); len(sizes) != 2 || sizes[1] != 64 {
			t.Fatalf("queued sizes %v; want SYN and request", sizes)
		}
		l.closeDevice()

		// The accepting side: after its SYN-ACK, the ACK of the request is
		// held and the answer replaces it.
		l = newLink(DefaultMTU)
		defer l.closeDevice()
		send(t, l, outbound(segSpec{seq: 5000, ack: 1000, flags: header.TCPFlagSyn | header.TCPFlagAck}, false))
		send(t, l, outbound(segSpec{seq: 5001, ack: 1064}, false))
		send(t, l, outbound(segSpec{seq: 5001, ack: 1064, payload: 64}, false))
		if _, sizes := queued(l); len(sizes) != 2 || sizes[1] != 64 {
			t.Fatalf("queued sizes %v; want SYN-ACK and answer", sizes)
		}
		if got := l.acksDropped.Load(); got != 1 {
			t.Errorf("acksDropped = %d; want 1", got)
		}
	})
}

func TestAckHoldKeepsFlowOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLink(DefaultMTU)
		defer l.closeDevice()
		conversation(t, l, false)
		send(t, l, outbound(segSpec{seq: 1064, ack: 164, window: 8000}, false))
		// The answer advertises a smaller window: the held ACK still says
		// something, so it goes out first.
		send(t, l, outbound(segSpec{seq: 1064, ack: 164, window: 4000, payload: 64}, false))
		acks, sizes := queued(l)
		if len(acks) != 3 || sizes[1] != 0 || sizes[2] != 64 {
			t.Fatalf("queued sizes %v; want request, held ACK, answer", sizes)
		}
		if l.acksDropped.Load() != 0 {
			t.Errorf("an ACK with a larger window was dropped")
		}
	})
}

func TestAckHoldPassesWhatMustNotWait(t *testing.T) {
	cases := []struct {
		name  string
		first segSpec // the flow's previous packet; zero: none
		ack   segSpec
		sack  bool
	}{
		{"first packet of a flow", segSpec{}, segSpec{seq: 1, ack: 164}, false},
		{"after an ACK (one-way transfer)", segSpec{seq: 1, ack: 100}, segSpec{seq: 1, ack: 164}, false},
		{"SACK block", segSpec{seq: 1000, ack: 100, payload: 64}, segSpec{seq: 1064, ack: 164}, true},
		{"duplicate or window update", segSpec{seq: 1000, ack: 100, payload: 64}, segSpec{seq: 1064, ack: 100, window: 9000}, false},
		{"FIN", segSpec{seq: 1000, ack: 100, payload: 64}, segSpec{seq: 1064, ack: 164, flags: header.TCPFlagAck | header.TCPFlagFin}, false},
		{"RST", segSpec{seq: 1000, ack: 100, payload: 64}, segSpec{seq: 1064, ack: 164, flags: header.TCPFlagAck | header.TCPFlagRst}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := newLink(DefaultMTU)
				defer l.closeDevice()
				want := 1
				if c.first != (segSpec{}) {
					send(t, l, outbound(c.first, false))
					want = 2
				}
				send(t, l, outbound(c.ack, c.sack))
				if acks, _ := queued(l); len(acks) != want {
					t.Fatalf("%d packets queued; want %d (the ACK not held)", len(acks), want)
				}
			})
		})
	}
}

func TestAckHoldOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		defer func(d time.Duration) { ackHold = d }(ackHold)
		ackHold = 0
		l := newLink(DefaultMTU)
		defer l.closeDevice()
		conversation(t, l, false)
		send(t, l, outbound(segSpec{seq: 1064, ack: 164}, false))
		if acks, _ := queued(l); len(acks) != 2 {
			t.Fatalf("%d packets queued with holding off; want 2", len(acks))
		}
	})
}

func TestAckHoldCloseReleasesHeld(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLink(DefaultMTU)
		conversation(t, l, false)
		ack := outbound(segSpec{seq: 1064, ack: 164}, false)
		ack.IncRef() // the test's own reference, to watch the link's
		send(t, l, ack)
		if got := ack.ReadRefs(); got != 2 {
			t.Fatalf("held ACK has %d references; want 2 (the test's and the link's)", got)
		}
		l.closeDevice()
		if got := ack.ReadRefs(); got != 1 {
			t.Fatalf("after close the ACK has %d references; want 1 (the link released its own)", got)
		}
		ack.DecRef()
	})
}

// TestAckHoldBetweenStacks runs request/response exchanges between two
// real stacks (wire): the ACK each side's stack makes for a message is
// replaced by its answer, so some held ACKs are dropped. (How many depends
// on scheduling: an answer later than ackHold lets the ACK go.)
func TestAckHoldBetweenStacks(t *testing.T) {
	t.Run("read", func(t *testing.T) { testAckHoldBetween(t, newWire(t, []netip.Addr{v4a}, []netip.Addr{v4b})) })
	t.Run("push", func(t *testing.T) { testAckHoldBetween(t, newPushWire(t, []netip.Addr{v4a}, []netip.Addr{v4b})) })
}

func testAckHoldBetween(t *testing.T, w *wire) {
	defer w.close()
	ln, err := w.b.ListenTCP(netip.AddrPortFrom(netip.Addr{}, 7))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	c, err := w.a.DialContext(t.Context(), "tcp", "10.1.0.2:7")
	if err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, 64)
	const exchanges = 200
	for range exchanges {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, msg); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	ln.Close()
	dropped := w.a.link.acksDropped.Load() + w.b.link.acksDropped.Load()
	w.mu.Lock()
	sent := w.packets[0] + w.packets[1]
	w.mu.Unlock()
	t.Logf("%d exchanges: %d packets crossed, %d ACKs dropped", exchanges, sent, dropped)
	if dropped == 0 {
		t.Fatalf("no ACK was dropped in %d exchanges (%d packets crossed)", exchanges, sent)
	}
}
