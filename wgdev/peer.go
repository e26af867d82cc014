package wgdev

import (
	"encoding/base64"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/wgsidecar/sidecar/wgnoise"
)

// stagedMax bounds the packets staged for a peer without a session; the
// oldest are dropped first.
const stagedMax = 128

// peer is one configured remote peer.
type peer struct {
	d    *Device
	key  wgnoise.PublicKey
	name string // "peer(abcd…wxyz)" as wireguard-go logs it

	hsMu           sync.Mutex         // guards hs, cookies, psk, lastInitiation
	hs             *wgnoise.Handshake // nil without a device key (or for a key that cannot handshake)
	cookies        *wgnoise.Cookies
	psk            wgnoise.PresharedKey
	lastInitiation time.Time // of the last initiation or response sent

	kpMu     sync.Mutex // guards previous, and changes to current and next
	previous *wgnoise.Keypair
	current  atomic.Pointer[wgnoise.Keypair]
	next     atomic.Pointer[wgnoise.Keypair] // the responder's, until confirmed

	endpoint atomic.Pointer[endpointRef]

	stageMu sync.Mutex
	staged  []stagedPacket

	allowed []netip.Prefix // under d.mu, in the order added

	txBytes, rxBytes  atomic.Uint64
	lastHandshake     atomic.Int64 // unix nanoseconds of the last completed handshake
	keepaliveInterval atomic.Uint32
	running           atomic.Bool // device up and peer not removed

	timers peerTimers
}

type endpointRef struct{ ep conn.Endpoint }

// stagedPacket is a copy of a packet waiting for a session: the plaintext
// at buf[TransportHeaderSize:][:n], with room for padding and tag; n == 0
// is a keepalive.
type stagedPacket struct {
	buf []byte
	n   int
}

func newPeer(d *Device, key wgnoise.PublicKey) *peer {
	p := &peer{d: d, key: key, cookies: wgnoise.NewCookies(key)}
	b64 := base64.StdEncoding.EncodeToString(key[:])
	p.name = "peer(" + b64[0:4] + "…" + b64[39:43] + ")"
	p.initTimers()
	p.resetHandshake(d.keys.Load())
	return p
}

func (p *peer) String() string { return p.name }

// resetHandshake makes the peer's handshake state anew for the device's
// keys (none: no handshake possible). The sessions are dropped.
func (p *peer) resetHandshake(k *localKeys) {
	p.hsMu.Lock()
	p.clearHandshakeLocked()
	p.hs = nil
	if k != nil {
		hs, err := wgnoise.NewHandshake(k.identity, p.key, p.psk)
		if err != nil {
			p.d.log.Errorf("%s - Unable to handshake with this peer: %v", p, err)
		} else {
			p.hs = hs
		}
	}
	p.hsMu.Unlock()
	p.dropKeypairs()
}

// clearHandshakeLocked forgets a half-done handshake and its index.
func (p *peer) clearHandshakeLocked() {
	if p.hs == nil {
		return
	}
	if idx, ok := p.hs.PendingIndex(); ok {
		p.d.indices.remove(idx, nil)
	}
	p.hs.Clear()
}

func (p *peer) setPresharedKey(psk wgnoise.PresharedKey) {
	p.hsMu.Lock()
	p.psk = psk
	if p.hs != nil {
		p.hs.SetPresharedKey(psk)
	}
	p.hsMu.Unlock()
}

// start runs the peer's timers (the device is up).
func (p *peer) start() {
	if p.running.Swap(true) {
		return
	}
	p.hsMu.Lock()
	p.lastInitiation = time.Now().Add(-2 * rekeyTimeout)
	p.hsMu.Unlock()
	p.timers.attempts.Store(0)
	p.timers.lastMinuteHandshake.Store(false)
	p.timers.needAnotherKeepalive.Store(false)
	for _, t := range p.allTimers() {
		t.enable()
	}
}

// stop stops the timers and forgets sessions and staged packets.
func (p *peer) stop() {
	if !p.running.Swap(false) {
		return
	}
	for _, t := range p.allTimers() {
		t.disable()
	}
	p.zeroAll()
}

// remove stops the peer for good.
func (p *peer) remove() {
	p.stop()
	p.hsMu.Lock()
	p.clearHandshakeLocked()
	p.hsMu.Unlock()
}

// zeroAll drops every session, the half-done handshake and the staged
// packets.
func (p *peer) zeroAll() {
	p.dropKeypairs()
	p.hsMu.Lock()
	p.clearHandshakeLocked()
	p.hsMu.Unlock()
	p.flushStaged()
}

func (p *peer) dropKeypairs() {
	p.kpMu.Lock()
	p.dropKeypair(p.previous)
	p.dropKeypair(p.current.Load())
	p.dropKeypair(p.next.Load())
	p.previous = nil
	p.current.Store(nil)
	p.next.Store(nil)
	p.kpMu.Unlock()
}

// dropKeypair retires kp: its index no longer finds it.
func (p *peer) dropKeypair(kp *wgnoise.Keypair) {
	if kp == nil {
		return
	}
	p.d.indices.remove(kp.LocalIndex, kp)
	kp.Wipe()
}

// installInitiator makes kp, derived from a response we consumed, the
// current session.
func (p *peer) installInitiator(kp *wgnoise.Keypair) {
	p.kpMu.Lock()
	defer p.kpMu.Unlock()
	prev, cur, next := p.previous, p.current.Load(), p.next.Load()
	if next != nil {
		p.next.Store(nil)
		p.previous = next
		p.dropKeypair(cur)
	} else {
		p.previous = cur
	}
	p.dropKeypair(prev)
	p.current.Store(kp)
}

// installResponder makes kp, derived from our response, the next session,
// used once the initiator's first data packet confirms it.
func (p *peer) installResponder(kp *wgnoise.Keypair) {
	p.kpMu.Lock()
	defer p.kpMu.Unlock()
	p.dropKeypair(p.next.Swap(kp))
	p.dropKeypair(p.previous)
	p.previous = nil
}

// confirm promotes kp from next to current, when a packet arrived with
// it; it says whether it did.
func (p *peer) confirm(kp *wgnoise.Keypair) bool {
	if p.next.Load() != kp {
		return false
	}
	p.kpMu.Lock()
	defer p.kpMu.Unlock()
	if p.next.Load() != kp {
		return false
	}
	p.dropKeypair(p.previous)
	p.previous = p.current.Load()
	p.current.Store(kp)
	p.next.Store(nil)
	return true
}

// endpointOf is the peer's endpoint, or nil.
func (p *peer) endpointOf() conn.Endpoint {
	if r := p.endpoint.Load(); r != nil {
		return r.ep
	}
	return nil
}

// setEndpoint roams the peer to ep (from an authenticated packet).
func (p *peer) setEndpoint(ep conn.Endpoint) {
	if ep == nil {
		return
	}
	if r := p.endpoint.Load(); r != nil && r.ep == ep {
		return
	}
	p.endpoint.Store(&endpointRef{ep: ep})
}

// clearEndpointSrc forgets the sticky source, in case it is why the peer
// does not answer.
func (p *peer) clearEndpointSrc() {
	if ep := p.endpointOf(); ep != nil {
		ep.ClearSrc()
	}
}
