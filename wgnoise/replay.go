package wgnoise

import "sync"

// Replay window geometry: a ring of 64-bit words, one kept clear for the
// word the newest counter moves into, so the window proper is
// (replayWords-1)*64 counters behind the newest one.
const (
	replayWords = 128
	// replayWindowSize is how far behind the newest accepted counter a
	// counter may be and still be accepted (once): 8128.
	replayWindowSize = (replayWords - 1) * 64
)

// replayWindow is a sliding bitmap of received counters (RFC 6479's
// scheme), locked internally.
type replayWindow struct {
	mu   sync.Mutex
	last uint64 // the newest accepted counter
	bits [replayWords]uint64
}

// accept reports whether counter is new and in the window, and records it.
func (w *replayWindow) accept(counter uint64) bool {
	if counter >= RejectAfterMessages {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	word := counter / 64
	if counter > w.last {
		lastWord := w.last / 64
		steps := min(word-lastWord, replayWords)
		for i := uint64(1); i <= steps; i++ {
			w.bits[(lastWord+i)%replayWords] = 0
		}
		w.last = counter
	} else if w.last-counter >= replayWindowSize {
		return false
	}
	slot := &w.bits[word%replayWords]
	bit := uint64(1) << (counter % 64)
	if *slot&bit != 0 {
		return false
	}
	*slot |= bit
	return true
}
