package wgdev

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// The protocol's durations (WireGuard paper §6). Variables so that tests
// can shorten them; nothing else changes them.
var (
	rekeyAfterTime     = 120 * time.Second
	rejectAfterTime    = 180 * time.Second
	rekeyAttemptTime   = 90 * time.Second
	rekeyTimeout       = 5 * time.Second
	rekeyTimeoutJitter = 334 * time.Millisecond // retries wait up to this much longer
	keepaliveTimeout   = 10 * time.Second
	underLoadAfter     = time.Second // how long the device stays under load
)

// timer is one protocol timer of a peer: a time.AfterFunc that can be
// armed, disarmed, and switched off so that it never runs again and no
// callback is still running.
type timer struct {
	mu      sync.Mutex
	cond    sync.Cond
	t       *time.Timer
	fn      func()
	pending bool
	when    time.Time // when a pending timer is due
	on      bool
	running int
}

func newTimer(fn func()) *timer {
	tm := &timer{fn: fn}
	tm.cond.L = &tm.mu
	tm.t = time.AfterFunc(time.Hour, tm.fire)
	tm.t.Stop()
	return tm
}

// fire is the runtime timer's callback. The runtime may have started it
// for an earlier arming just before mod re-armed the timer: then the timer
// is pending but not yet due, and this call does nothing (the re-armed
// runtime timer calls it again when it is).
func (tm *timer) fire() {
	tm.mu.Lock()
	if !tm.pending || !tm.on || time.Now().Before(tm.when) {
		tm.mu.Unlock()
		return
	}
	tm.pending = false
	tm.running++
	tm.mu.Unlock()
	tm.fn()
	tm.mu.Lock()
	tm.running--
	tm.cond.Broadcast()
	tm.mu.Unlock()
}

// mod arms the timer to run after d (re-arming it if pending).
func (tm *timer) mod(d time.Duration) {
	tm.mu.Lock()
	tm.armLocked(d)
	tm.mu.Unlock()
}

// armLocked arms the timer, if it is on, to be due after d. tm.mu is held.
func (tm *timer) armLocked(d time.Duration) {
	if tm.on {
		tm.pending, tm.when = true, time.Now().Add(d)
		tm.t.Reset(d)
	}
}

// armUnlessPending arms the timer to run after d unless it is pending
// already, which it reports, under one lock.
func (tm *timer) armUnlessPending(d time.Duration) (pending bool) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	if tm.pending {
		return true
	}
	tm.armLocked(d)
	return false
}

// del disarms the timer. One not pending needs no Stop: its callback, if
// the runtime still runs it, finds nothing pending and returns; so the
// packet paths, which call del on every batch, pay only the lock.
func (tm *timer) del() {
	tm.mu.Lock()
	if tm.pending {
		tm.pending = false
		tm.t.Stop()
	}
	tm.mu.Unlock()
}

// enable lets mod arm the timer.
func (tm *timer) enable() {
	tm.mu.Lock()
	tm.on = true
	tm.mu.Unlock()
}

// disable disarms the timer for good (until enable) and waits for a
// running callback to return. Never call it from the timer's callback.
func (tm *timer) disable() {
	tm.mu.Lock()
	tm.on, tm.pending = false, false
	tm.t.Stop()
	for tm.running > 0 {
		tm.cond.Wait()
	}
	tm.mu.Unlock()
}

// peerTimers are a peer's five protocol timers and their state.
type peerTimers struct {
	retransmit   *timer // handshake not answered within rekeyTimeout
	keepalive    *timer // data received, nothing sent for keepaliveTimeout
	newHandshake *timer // data sent, nothing received for keepaliveTimeout+rekeyTimeout
	zeroKeys     *timer // no new session for 3 × rejectAfterTime
	persistent   *timer // the persistent keepalive interval

	attempts             atomic.Uint32 // handshake retries since the first initiation
	needAnotherKeepalive atomic.Bool
	lastMinuteHandshake  atomic.Bool // the receive-side rekey was sent for this session
}

func (p *peer) initTimers() {
	p.timers.retransmit = newTimer(p.expiredRetransmit)
	p.timers.keepalive = newTimer(p.expiredKeepalive)
	p.timers.newHandshake = newTimer(p.expiredNewHandshake)
	p.timers.zeroKeys = newTimer(p.expiredZeroKeys)
	p.timers.persistent = newTimer(p.expiredPersistent)
}

func (p *peer) allTimers() []*timer {
	t := &p.timers
	return []*timer{t.retransmit, t.keepalive, t.newHandshake, t.zeroKeys, t.persistent}
}

func jitter() time.Duration {
	return time.Duration(rand.Int64N(int64(rekeyTimeoutJitter)))
}

// maxAttempts is how many times an initiation is retried before giving
// up: Rekey-Attempt-Time in steps of Rekey-Timeout.
func maxAttempts() uint32 { return uint32(rekeyAttemptTime / rekeyTimeout) }

func (p *peer) expiredRetransmit() {
	if p.timers.attempts.Load() >= maxAttempts() {
		p.d.log.Verbosef("%s - Handshake did not complete after %d attempts, giving up", p, maxAttempts()+1)
		p.timers.keepalive.del()
		p.flushStaged()
		p.timers.zeroKeys.armUnlessPending(3 * rejectAfterTime)
		return
	}
	p.timers.attempts.Add(1)
	p.d.log.Verbosef("%s - Handshake did not complete after %d seconds, retrying (try %d)", p, int(rekeyTimeout.Seconds()), p.timers.attempts.Load()+1)
	p.clearEndpointSrc()
	p.sendInitiation(true)
}

func (p *peer) expiredKeepalive() {
	p.sendKeepalive()
	if p.timers.needAnotherKeepalive.Swap(false) {
		p.timers.keepalive.mod(keepaliveTimeout)
	}
}

func (p *peer) expiredNewHandshake() {
	p.d.log.Verbosef("%s - Retrying handshake because we stopped hearing back after %d seconds", p, int((keepaliveTimeout + rekeyTimeout).Seconds()))
	p.clearEndpointSrc()
	p.sendInitiation(false)
}

func (p *peer) expiredZeroKeys() {
	p.d.log.Verbosef("%s - Removing all keys, since we haven't received a new one in %d seconds", p, int((3 * rejectAfterTime).Seconds()))
	p.zeroAll()
}

func (p *peer) expiredPersistent() {
	if p.keepaliveInterval.Load() > 0 {
		p.sendKeepalive()
	}
}

// timersDataSent: an authenticated data packet was sent.
func (p *peer) timersDataSent() {
	p.timers.newHandshake.armUnlessPending(keepaliveTimeout + rekeyTimeout + jitter())
}

// timersDataReceived: an authenticated data packet was received.
func (p *peer) timersDataReceived() {
	if p.timers.keepalive.armUnlessPending(keepaliveTimeout) {
		p.timers.needAnotherKeepalive.Store(true)
	}
}

// timersAnySent: any authenticated packet (data, keepalive, handshake) was sent.
func (p *peer) timersAnySent() { p.timers.keepalive.del() }

// timersAnyReceived: any authenticated packet was received.
func (p *peer) timersAnyReceived() { p.timers.newHandshake.del() }

// timersInitiated: an initiation was sent.
func (p *peer) timersInitiated() { p.timers.retransmit.mod(rekeyTimeout + jitter()) }

// timersHandshakeComplete: a response was consumed or the responder's
// session confirmed by the first data packet.
func (p *peer) timersHandshakeComplete() {
	p.timers.retransmit.del()
	p.timers.attempts.Store(0)
	p.timers.lastMinuteHandshake.Store(false)
	p.lastHandshake.Store(time.Now().UnixNano())
}

// timersSessionDerived: a new session's keys were derived.
func (p *peer) timersSessionDerived() { p.timers.zeroKeys.mod(3 * rejectAfterTime) }

// timersTraversal: an authenticated packet is about to be sent or was
// received; the persistent keepalive counts from it.
func (p *peer) timersTraversal() {
	if ka := p.keepaliveInterval.Load(); ka > 0 {
		p.timers.persistent.mod(time.Duration(ka) * time.Second)
	}
}
