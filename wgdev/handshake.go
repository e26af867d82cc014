package wgdev

import (
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/wgsidecar/sidecar/wgnoise"
)

// handshakeMsg is a handshake message waiting for the handshake goroutine,
// copied out of the receive buffer.
type handshakeMsg struct {
	buf [wgnoise.InitiationSize]byte
	n   int
	typ uint32
	ep  conn.Endpoint
}

// enqueueHandshake hands msg to the handshake goroutine, dropping it when
// the queue is full.
func (d *Device) enqueueHandshake(typ uint32, msg []byte, ep conn.Endpoint) {
	m := handshakeMsg{typ: typ, ep: ep, n: len(msg)}
	copy(m.buf[:], msg)
	select {
	case d.hsQueue <- m:
	default:
	}
	if len(d.hsQueue) >= cap(d.hsQueue)/8 {
		d.underLoadUntil.Store(time.Now().Add(underLoadAfter).UnixNano())
	}
}

// handshakeLoop is the handshake goroutine.
func (d *Device) handshakeLoop() {
	defer close(d.hsDone)
	for {
		select {
		case <-d.hsStop:
			return
		case m := <-d.hsQueue:
			d.handleHandshake(&m)
		}
	}
}

func (d *Device) handleHandshake(m *handshakeMsg) {
	msg := m.buf[:m.n]
	keys := d.keys.Load()
	if keys == nil {
		return
	}
	now := time.Now()
	if m.typ == wgnoise.TypeCookieReply {
		d.handleCookieReply(msg, now)
		return
	}
	if !keys.guard.CheckMAC1(msg) {
		d.log.Verbosef("Received packet with invalid mac1")
		return
	}
	if d.isUnderLoad(now) {
		// mac2 covers the sender's address and port, in any encoding
		// that stays the same for a source: the endpoint's, as
		// wireguard-go does.
		src := m.ep.DstToBytes()
		if !keys.guard.CheckMAC2(msg, src, now) {
			d.sendCookieReply(keys, msg, src, m.ep, now)
			return
		}
		if !d.limit.allow(m.ep.DstIP(), now) {
			return // a source that proved its address, but sends too many
		}
	}
	switch m.typ {
	case wgnoise.TypeInitiation:
		d.handleInitiation(keys, msg, m.ep, now)
	case wgnoise.TypeResponse:
		d.handleResponse(msg, m.ep, now)
	}
}

func (d *Device) sendCookieReply(keys *localKeys, msg, src []byte, ep conn.Endpoint, now time.Time) {
	d.log.Verbosef("Sending cookie response for denied handshake message for %v", ep.DstToString())
	reply, err := keys.guard.CookieReply(msg, src, now)
	if err != nil {
		d.log.Errorf("Failed to create cookie reply: %v", err)
		return
	}
	_ = d.bind.Send([][]byte{reply[:]}, ep)
}

func (d *Device) handleCookieReply(msg []byte, now time.Time) {
	e, ok := d.indices.lookup(wgnoise.ReceiverIndex(msg))
	if !ok || !e.peer.running.Load() {
		return
	}
	p := e.peer
	p.hsMu.Lock()
	err := p.cookies.ConsumeReply(msg, now)
	p.hsMu.Unlock()
	if err != nil {
		d.log.Verbosef("Could not decrypt invalid cookie response")
	}
}

// handleInitiation answers an initiation from a known peer.
func (d *Device) handleInitiation(keys *localKeys, msg []byte, ep conn.Endpoint, now time.Time) {
	in, err := wgnoise.ConsumeInitiation(keys.identity, msg)
	var p *peer
	if err == nil {
		p = d.lookupPeer(in.Peer)
	}
	if p == nil || !p.running.Load() {
		d.log.Verbosef("Received invalid initiation message from %s", ep.DstToString())
		return
	}
	resp, kp, ok := p.respond(in, now)
	if !ok {
		d.log.Verbosef("Received invalid initiation message from %s", ep.DstToString())
		return
	}
	p.timersTraversal()
	p.timersAnyReceived()
	p.setEndpoint(ep)
	p.rxBytes.Add(uint64(len(msg)))
	d.log.Verbosef("%s - Received handshake initiation", p)
	d.indices.setKeypair(kp.LocalIndex, p, kp)
	p.installResponder(kp)
	p.timersSessionDerived()
	p.timersTraversal()
	p.timersAnySent()
	p.sendHandshakeMessage(resp[:], "response")
}

// respond accepts an initiation into the peer's handshake and derives the
// responder's session.
func (p *peer) respond(in *wgnoise.Initiation, now time.Time) ([wgnoise.ResponseSize]byte, *wgnoise.Keypair, bool) {
	var resp [wgnoise.ResponseSize]byte
	p.hsMu.Lock()
	defer p.hsMu.Unlock()
	if p.hs == nil {
		return resp, nil, false
	}
	pending, hadPending := p.hs.PendingIndex()
	if err := p.hs.AcceptInitiation(in, now); err != nil {
		return resp, nil, false
	}
	if hadPending {
		p.d.indices.remove(pending, nil)
	}
	idx := p.d.indices.newHandshake(p)
	resp, err := p.hs.CreateResponse(idx)
	if err != nil {
		p.d.indices.remove(idx, nil)
		p.hs.Clear()
		return resp, nil, false
	}
	p.cookies.Stamp(resp[:], now)
	kp, err := p.hs.BeginSession(now)
	if err != nil {
		p.d.indices.remove(idx, nil)
		return resp, nil, false
	}
	p.lastInitiation = now
	return resp, kp, true
}

// handleResponse completes a handshake we initiated.
func (d *Device) handleResponse(msg []byte, ep conn.Endpoint, now time.Time) {
	e, ok := d.indices.lookup(wgnoise.ReceiverIndex(msg))
	if !ok || e.kp != nil || !e.peer.running.Load() {
		d.log.Verbosef("Received invalid response message from %s", ep.DstToString())
		return
	}
	p := e.peer
	p.hsMu.Lock()
	var kp *wgnoise.Keypair
	err := errNoHandshake
	if p.hs != nil {
		if err = p.hs.ConsumeResponse(msg); err == nil {
			kp, err = p.hs.BeginSession(now)
		}
	}
	p.hsMu.Unlock()
	if err != nil {
		d.log.Verbosef("Received invalid response message from %s", ep.DstToString())
		return
	}
	p.setEndpoint(ep)
	d.log.Verbosef("%s - Received handshake response", p)
	p.rxBytes.Add(uint64(len(msg)))
	p.timersTraversal()
	p.timersAnyReceived()
	d.indices.setKeypair(kp.LocalIndex, p, kp)
	p.installInitiator(kp)
	p.timersSessionDerived()
	p.timersHandshakeComplete()
	p.sendKeepalive()
}

// sendInitiation sends a handshake initiation, at most one per
// rekeyTimeout; retry says whether the retransmit timer asks (otherwise
// the count of attempts starts again).
func (p *peer) sendInitiation(retry bool) {
	if !retry {
		p.timers.attempts.Store(0)
	}
	now := time.Now()
	p.hsMu.Lock()
	if p.hs == nil || !p.running.Load() || now.Sub(p.lastInitiation) < rekeyTimeout {
		p.hsMu.Unlock()
		return
	}
	p.lastInitiation = now
	if old, ok := p.hs.PendingIndex(); ok {
		p.d.indices.remove(old, nil)
	}
	idx := p.d.indices.newHandshake(p)
	msg, err := p.hs.CreateInitiation(idx, now)
	if err == nil {
		p.cookies.Stamp(msg[:], now)
	}
	p.hsMu.Unlock()
	if err != nil {
		p.d.indices.remove(idx, nil)
		p.d.log.Errorf("%s - Failed to create initiation message: %v", p, err)
		return
	}
	p.d.log.Verbosef("%s - Sending handshake initiation", p)
	p.timersTraversal()
	p.timersAnySent()
	// The retry is armed before the send: the response can be consumed
	// (and the retry stopped) before the send returns. A failed send is
	// retried like a lost one.
	p.timersInitiated()
	p.sendHandshakeMessage(msg[:], "initiation")
}

// sendHandshakeMessage sends one handshake message to the peer's endpoint.
func (p *peer) sendHandshakeMessage(msg []byte, what string) {
	ep := p.endpointOf()
	if ep == nil {
		return
	}
	if err := p.d.bind.Send([][]byte{msg}, ep); err != nil {
		if !isClosedErr(err) {
			p.d.log.Errorf("%s - Failed to send handshake %s: %v", p, what, err)
		}
		return
	}
	p.txBytes.Add(uint64(len(msg)))
}
