package wgdev

import (
	"crypto/rand"
	"encoding/binary"
	"sync"

	"github.com/wgsidecar/sidecar/wgnoise"
)

// indexEntry is what a local index stands for: a peer's pending handshake
// (kp nil) or one of its keypairs.
type indexEntry struct {
	peer *peer
	kp   *wgnoise.Keypair
}

// indexTable maps the local indices the device handed out (the receiver
// index of every message sent to it) to their peer and keypair. Safe for
// concurrent use; its lock is a leaf.
type indexTable struct {
	mu sync.RWMutex
	m  map[uint32]indexEntry
}

func (t *indexTable) init() { t.m = map[uint32]indexEntry{} }

// newHandshake reserves a fresh random index for a handshake of p.
func (t *indexTable) newHandshake(p *peer) uint32 {
	var b [4]byte
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		_, _ = rand.Read(b[:])
		idx := binary.LittleEndian.Uint32(b[:])
		if _, taken := t.m[idx]; !taken {
			t.m[idx] = indexEntry{peer: p}
			return idx
		}
	}
}

// setKeypair makes idx stand for kp (the session its handshake derived).
func (t *indexTable) setKeypair(idx uint32, p *peer, kp *wgnoise.Keypair) {
	t.mu.Lock()
	t.m[idx] = indexEntry{peer: p, kp: kp}
	t.mu.Unlock()
}

func (t *indexTable) lookup(idx uint32) (indexEntry, bool) {
	t.mu.RLock()
	e, ok := t.m[idx]
	t.mu.RUnlock()
	return e, ok
}

// remove drops idx if it still stands for kp (nil: a pending handshake).
func (t *indexTable) remove(idx uint32, kp *wgnoise.Keypair) {
	t.mu.Lock()
	if e, ok := t.m[idx]; ok && e.kp == kp {
		delete(t.m, idx)
	}
	t.mu.Unlock()
}
