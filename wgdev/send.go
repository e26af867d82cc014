package wgdev

import (
	"time"

	"golang.zx2c4.com/wireguard/device"

	"github.com/wgsidecar/sidecar/wgnoise"
)

// sendScratch is the per-call working memory of Send, pooled.
type sendScratch struct {
	dst  []*peer  // the peer of each packet, nil if none
	bufs [][]byte // one peer's packets, from their header on
	lens []int    // their plaintext lengths
	msgs [][]byte // the sealed messages
}

// Send encrypts and sends IP packets: bufs[i][offset:] is one packet each,
// offset >= SendOffset, with room behind each for padding and tag (cap >=
// offset + len + SendTail). Each goes to the peer whose
// allowed IPs hold its destination (longest prefix); packets for no peer
// are dropped. A peer without a session gets a copy staged and a
// handshake started. The buffers are the caller's again when Send returns.
// The error is ErrClosed once the device is closed; while it is down,
// packets are dropped.
func (d *Device) Send(bufs [][]byte, offset int) error {
	if d.shut.Load() {
		return ErrClosed
	}
	if !d.up.Load() || len(bufs) == 0 {
		return nil
	}
	s := d.scratch.Get().(*sendScratch)
	defer d.scratch.Put(s)
	d.route(s, bufs, offset)
	// Each packet's entry is set to nil as its peer's group is sent, so
	// the pooled scratch keeps no peer once the loop ends.
	for i, p := range s.dst {
		if p == nil {
			continue
		}
		s.bufs, s.lens = s.bufs[:0], s.lens[:0]
		for j := i; j < len(s.dst); j++ {
			if s.dst[j] == p {
				b := bufs[j]
				s.bufs = append(s.bufs, b[offset-wgnoise.TransportHeaderSize:cap(b)])
				s.lens = append(s.lens, len(b)-offset)
				s.dst[j] = nil
			}
		}
		p.sendPackets(s)
	}
	return nil
}

// route finds each packet's peer by its destination.
func (d *Device) route(s *sendScratch, bufs [][]byte, offset int) {
	rt := d.routes.Load()
	s.dst = s.dst[:0]
	for _, b := range bufs {
		var p *peer
		if dst, ok := dstAddr(b[offset:]); ok {
			p = rt.lookup(dst)
		}
		s.dst = append(s.dst, p)
	}
}

// sendPackets sends s.bufs (plaintext at [TransportHeaderSize:][:lens[i]])
// with the current session, or stages them and starts a handshake.
func (p *peer) sendPackets(s *sendScratch) {
	if !p.running.Load() {
		return
	}
	now := time.Now() // one clock read for the batch's session checks
	kp := p.usableKeypair(now)
	if kp == nil || p.hasStaged() {
		for i, b := range s.bufs {
			p.stage(b[wgnoise.TransportHeaderSize:][:s.lens[i]])
		}
		p.sendStaged()
		return
	}
	p.sealAndSend(kp, s, now)
}

// usableKeypair is the current session if it may still send at now.
func (p *peer) usableKeypair(now time.Time) *wgnoise.Keypair {
	kp := p.current.Load()
	if kp == nil || now.Sub(kp.Created) >= rejectAfterTime {
		return nil
	}
	return kp
}

// sealAndSend encrypts s.bufs in place with kp and sends them. Packets
// beyond the session's last counter are staged for the next one.
func (p *peer) sealAndSend(kp *wgnoise.Keypair, s *sendScratch, now time.Time) {
	s.msgs = s.msgs[:0]
	data, exhausted := false, false
	var n, last uint64
	for i, b := range s.bufs {
		ctr, ok := kp.NextCounter()
		last = max(last, ctr)
		if !ok {
			p.stage(b[wgnoise.TransportHeaderSize:][:s.lens[i]])
			exhausted = true
			continue
		}
		m := kp.Seal(b, s.lens[i], p.d.mtu, ctr)
		if m == 0 {
			continue // wiped under us: the session ended
		}
		s.msgs = append(s.msgs, b[:m])
		n += uint64(m)
		data = data || s.lens[i] > 0
	}
	if len(s.msgs) > 0 {
		p.sendMessages(s.msgs, n, data)
	}
	if exhausted {
		p.sendInitiation(false)
		return
	}
	p.keepFreshSending(kp, last, now)
}

// sendMessages sends sealed transport messages (n bytes in all) and runs
// the timers of a send.
func (p *peer) sendMessages(msgs [][]byte, n uint64, data bool) {
	ep := p.endpointOf()
	if ep == nil {
		return
	}
	p.timersTraversal()
	p.timersAnySent()
	// The timer that waits for an answer is armed before the send: the
	// answer can be received (and the timer stopped) before the send
	// returns.
	if data {
		p.timersDataSent()
	}
	if err := p.d.sendTo(msgs, ep); err != nil {
		if !isClosedErr(err) {
			p.d.log.Errorf("%s - Failed to send data packets: %v", p, err)
		}
		return
	}
	p.txBytes.Add(n)
}

// keepFreshSending starts a rekey when the session we initiated is old or
// has sent too many messages.
func (p *peer) keepFreshSending(kp *wgnoise.Keypair, ctr uint64, now time.Time) {
	if ctr > wgnoise.RekeyAfterMessages || (kp.Initiator && now.Sub(kp.Created) > rekeyAfterTime) {
		p.sendInitiation(false)
	}
}

// stage keeps a copy of pkt (empty: a keepalive) for when a session exists.
func (p *peer) stage(pkt []byte) {
	buf := make([]byte, wgnoise.TransportHeaderSize+wgnoise.PaddedLen(len(pkt))+wgnoise.TagSize)
	copy(buf[wgnoise.TransportHeaderSize:], pkt)
	p.stageMu.Lock()
	if len(p.staged) >= stagedMax {
		p.staged = append(p.staged[:0], p.staged[1:]...)
	}
	p.staged = append(p.staged, stagedPacket{buf: buf, n: len(pkt)})
	p.stageMu.Unlock()
}

func (p *peer) hasStaged() bool {
	p.stageMu.Lock()
	defer p.stageMu.Unlock()
	return len(p.staged) > 0
}

func (p *peer) flushStaged() {
	p.stageMu.Lock()
	p.staged = nil
	p.stageMu.Unlock()
}

// sendStaged sends the staged packets if a session can, or else starts a
// handshake.
func (p *peer) sendStaged() {
	if !p.running.Load() || !p.hasStaged() {
		return
	}
	now := time.Now()
	kp := p.usableKeypair(now)
	if kp == nil {
		p.sendInitiation(false)
		return
	}
	p.stageMu.Lock()
	staged := p.staged
	p.staged = nil
	p.stageMu.Unlock()
	s := p.d.scratch.Get().(*sendScratch)
	defer p.d.scratch.Put(s)
	s.bufs, s.lens = s.bufs[:0], s.lens[:0]
	for _, sp := range staged {
		s.bufs = append(s.bufs, sp.buf)
		s.lens = append(s.lens, sp.n)
	}
	p.sealAndSend(kp, s, now)
}

// sendKeepalive sends an empty transport message, unless packets are
// staged (they go instead); without a session it starts a handshake.
func (p *peer) sendKeepalive() {
	if !p.hasStaged() && p.running.Load() {
		p.stage(nil)
		p.d.log.Verbosef("%s - Sending keepalive packet", p)
	}
	p.sendStaged()
}

// readTUN is the ReadTUN goroutine: it reads batches of outbound packets
// from the TUN and sends them, until the TUN fails or is closed.
func (d *Device) readTUN() {
	defer close(d.readDone)
	n := max(1, d.tun.BatchSize())
	mtu, err := d.tun.MTU()
	if err != nil || mtu <= 0 {
		mtu = device.DefaultMTU
	}
	size := SendOffset + mtu
	bufs, out, sizes := make([][]byte, n), make([][]byte, n), make([]int, n)
	for i := range bufs {
		bufs[i] = make([]byte, size, size+SendTail)
	}
	for {
		k, err := d.tun.Read(bufs, sizes, SendOffset)
		for i := range k {
			out[i] = bufs[i][:SendOffset+sizes[i]]
		}
		if k > 0 && d.Send(out[:k], SendOffset) != nil {
			return // closed
		}
		if err != nil {
			if !d.shut.Load() {
				d.log.Errorf("Failed to read packet from TUN device: %v", err)
			}
			return
		}
	}
}
