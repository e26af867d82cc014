package wgdev

import (
	"errors"
	"net"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"

	"github.com/wgsidecar/sidecar/wgnoise"
)

var errNoHandshake = errors.New("no handshake state for this peer")

// rxPeer is what one received batch did for one peer, applied once after
// the batch: the endpoint of its last authenticated message, the bytes,
// whether data (not only keepalives) came.
type rxPeer struct {
	p    *peer
	ep   conn.Endpoint
	rx   uint64
	data bool
}

// rxState is a receive goroutine's working memory, allocated once.
type rxState struct {
	bufs  [][]byte
	sizes []int
	eps   []conn.Endpoint
	out   [][]byte // packets for the TUN, from their header on
	peers []rxPeer
}

func newRxState(n int) *rxState {
	st := &rxState{
		bufs:  make([][]byte, n),
		sizes: make([]int, n),
		eps:   make([]conn.Endpoint, n),
		out:   make([][]byte, 0, n),
	}
	for i := range st.bufs {
		st.bufs[i] = make([]byte, device.MaxMessageSize)
	}
	return st
}

// pipelineMin is the smallest batch whose delivery to the TUN is handed
// to the receive goroutine's deliverer, so that the next batch is received
// and decrypted meanwhile; a smaller one (a request, an answer) is
// delivered at once by the receive goroutine itself, unless deliveries are
// under way (order).
const pipelineMin = 8

// maxRxStates bounds the batches a receive goroutine has received but not
// yet delivered, plus the one it is receiving into. With two (double
// buffering) the receive goroutine waited for the deliverer after every
// batch; a stream of small datagrams, whose delivery into gVisor costs more
// than receiving and opening them, then went at the pace of the slower
// stage with neither busy all the time.
const maxRxStates = 4

// receiveLoop is one receive goroutine: it runs until the bind closes. It
// owns up to maxRxStates rxStates: while the deliverer writes some to the
// TUN, it receives into another. Batches reach the TUN in the order they
// were received.
func (d *Device) receiveLoop(recv conn.ReceiveFunc) {
	defer d.recv.Done()
	batch := max(1, d.bind.BatchSize())
	st := newRxState(batch)
	// Further states (8 MiB of buffers each) are made when a batch is
	// handed off and none is free: a node that only ever sees requests
	// and answers never needs one. A state is the receive goroutine's,
	// in handoff or being delivered, or in free.
	made := 1
	free := make(chan *rxState, maxRxStates)
	handoff := make(chan *rxState, maxRxStates)
	delivered := make(chan struct{})
	go func() {
		defer close(delivered)
		for s := range handoff {
			d.deliver(s)
			free <- s
		}
	}()
	defer func() { close(handoff); <-delivered }()
	failures := 0
	for {
		n, err := recv(st.bufs, st.sizes, st.eps)
		if err != nil {
			if isClosedErr(err) {
				return
			}
			d.log.Verbosef("Failed to receive %s packet: %v", recv.PrettyName(), err)
			var ne net.Error
			if errors.As(err, &ne) && !ne.Timeout() || failures >= 10 {
				return
			}
			failures++
			time.Sleep(time.Second / 3)
			continue
		}
		failures = 0
		d.receiveBatch(st, n)
		// Only this goroutine takes from free, so once every other
		// state is back in it, no delivery is under way.
		if len(st.out) < pipelineMin && len(free) == made-1 {
			d.deliver(st)
			continue
		}
		handoff <- st
		select {
		case st = <-free:
		default:
			if made < maxRxStates {
				made++
				st = newRxState(batch)
			} else {
				st = <-free
			}
		}
	}
}

// receiveBatch handles n received datagrams: transport messages are
// decrypted in place and their packets listed in st.out for deliver,
// handshake messages queued.
func (d *Device) receiveBatch(st *rxState, n int) {
	st.out, st.peers = st.out[:0], st.peers[:0]
	now := time.Now()
	for i := range n {
		msg := st.bufs[i][:st.sizes[i]]
		typ, ok := wgnoise.MessageType(msg)
		switch {
		case !ok:
		case typ == wgnoise.TypeTransport:
			d.receiveTransport(st, msg, st.eps[i], now)
		default:
			d.enqueueHandshake(typ, msg, st.eps[i])
		}
	}
	// The peers' endpoints move before delivery, as wireguard-go's do:
	// an immediate reply goes where the peer now is.
	for i := range st.peers {
		d.afterReceive(&st.peers[i], now)
	}
	clear(st.peers)
}

// deliver writes st's packets to the TUN with one Write.
func (d *Device) deliver(st *rxState) {
	if len(st.out) > 0 && d.tun != nil {
		if _, err := d.tun.Write(st.out, wgnoise.TransportHeaderSize); err != nil && !d.shut.Load() {
			d.log.Errorf("Failed to write packets to TUN device: %v", err)
		}
	}
	clear(st.out) // what lies beyond was cleared when it was last used
	st.out = st.out[:0]
}

// receiveTransport opens one transport message and, if it is a packet the
// peer may send, adds it to st.out.
func (d *Device) receiveTransport(st *rxState, msg []byte, ep conn.Endpoint, now time.Time) {
	e, ok := d.indices.lookup(wgnoise.ReceiverIndex(msg))
	if !ok || e.kp == nil || now.Sub(e.kp.Created) >= rejectAfterTime {
		return
	}
	p, kp := e.peer, e.kp
	plain, ctr, err := kp.Open(msg)
	if err != nil || !kp.Accept(ctr) {
		return
	}
	rp := st.peer(p)
	rp.ep = ep
	rp.rx += uint64(len(msg))
	if p.confirm(kp) {
		p.setEndpoint(ep)
		p.timersHandshakeComplete()
		p.sendStaged()
	}
	if len(plain) == 0 {
		return
	}
	rp.data = true
	pkt, src, bad := inboundPacket(plain)
	switch {
	case bad == "version":
		d.log.Verbosef("Packet with invalid IP version from %v", p)
		return
	case bad != "":
		return
	}
	if d.routes.Load().lookup(src) != p {
		if src.Is4() {
			d.log.Verbosef("IPv4 packet with disallowed source address from %v", p)
		} else {
			d.log.Verbosef("IPv6 packet with disallowed source address from %v", p)
		}
		return
	}
	st.out = append(st.out, msg[:wgnoise.TransportHeaderSize+len(pkt)])
}

// peer is the batch's record for p, made on first use.
func (st *rxState) peer(p *peer) *rxPeer {
	for i := range st.peers {
		if st.peers[i].p == p {
			return &st.peers[i]
		}
	}
	st.peers = append(st.peers, rxPeer{p: p})
	return &st.peers[len(st.peers)-1]
}

// afterReceive applies a batch's effects on one peer: roaming, counters,
// timers, and the receive-side rekey.
func (d *Device) afterReceive(rp *rxPeer, now time.Time) {
	p := rp.p
	p.rxBytes.Add(rp.rx)
	p.setEndpoint(rp.ep)
	p.keepFreshReceiving(now)
	p.timersTraversal()
	p.timersAnyReceived()
	if rp.data {
		p.timersDataReceived()
	}
}

// keepFreshReceiving starts a rekey, once per session, when the session
// we initiated nears its end (Reject-After-Time less Keepalive-Timeout and
// Rekey-Timeout): the last chance before it expires.
func (p *peer) keepFreshReceiving(now time.Time) {
	if p.timers.lastMinuteHandshake.Load() {
		return
	}
	kp := p.current.Load()
	if kp != nil && kp.Initiator && now.Sub(kp.Created) > rejectAfterTime-keepaliveTimeout-rekeyTimeout {
		p.timers.lastMinuteHandshake.Store(true)
		p.sendInitiation(false)
	}
}
