package wgnoise

import (
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

var (
	errShort      = errors.New("wgnoise: transport message too short or not a transport message")
	errWrongIndex = errors.New("wgnoise: transport message for another keypair")
	errCounter    = errors.New("wgnoise: transport counter at or past RejectAfterMessages")
	errWiped      = errors.New("wgnoise: keypair wiped")
)

// Keypair is the transport keys of one session. It is safe for concurrent
// use: Seal and Open run on many goroutines at once; NextCounter is atomic
// and Accept locks the replay window. Wipe zeroes the keys once no Seal or
// Open is running (they hold a read lock each), after which NextCounter
// reports false, Seal returns 0 and Open fails.
type Keypair struct {
	LocalIndex  uint32    // the index peers address us by (receiver of their messages)
	RemoteIndex uint32    // the index we address the peer by
	Initiator   bool      // we sent the initiation of this session
	Created     time.Time // when the session began

	send struct {
		sync.RWMutex // read by Seal, written by Wipe
		counter      atomic.Uint64
		aead         cipher.AEAD
	}
	recv struct {
		sync.RWMutex // read by Open, written by Wipe
		aead         cipher.AEAD
	}
	replay replayWindow
}

// newKeypair returns a keypair sending with key send and receiving with
// key recv.
func newKeypair(send, recv *[32]byte) *Keypair {
	kp := &Keypair{}
	kp.send.aead, _ = chacha20poly1305.New(send[:])
	kp.recv.aead, _ = chacha20poly1305.New(recv[:])
	return kp
}

// NextCounter returns the counter of the next message to send, or false
// once RejectAfterMessages is reached (or the keypair was wiped): the
// session must not send any more.
func (kp *Keypair) NextCounter() (uint64, bool) {
	// Past the limit the counter only keeps growing (2^64 is out of
	// reach); every caller from then on is refused.
	c := kp.send.counter.Add(1) - 1
	if c >= RejectAfterMessages {
		return 0, false
	}
	return c, true
}

// Seal encrypts in place: buf[TransportHeaderSize:TransportHeaderSize+n]
// holds the plaintext; it is padded with zeros to PaddedLen(n), but not
// beyond mtu when n fits in it (mtu <= 0: no limit), as the protocol asks
// (buf must have room for the padding and TagSize); the header is written
// into buf[:TransportHeaderSize], and the message's length is returned.
// n == 0 makes a keepalive. It returns 0, sealing nothing, when the
// keypair has been wiped.
func (kp *Keypair) Seal(buf []byte, n, mtu int, counter uint64) int {
	padded := PaddedLen(n)
	if mtu > 0 && n <= mtu && padded > mtu {
		padded = mtu
	}
	end := TransportHeaderSize + padded
	clear(buf[TransportHeaderSize+n : end])
	// The nonce is 4 zero bytes and the counter (little endian): build it
	// in the header's receiver and counter fields, so it needs no memory
	// of its own, then write the receiver index over the zeros.
	binary.LittleEndian.PutUint32(buf[0:], TypeTransport)
	binary.LittleEndian.PutUint32(buf[transportReceiver:], 0)
	binary.LittleEndian.PutUint64(buf[transportCounter:], counter)
	kp.send.RLock()
	if kp.send.aead == nil {
		kp.send.RUnlock()
		return 0
	}
	kp.send.aead.Seal(buf[TransportHeaderSize:TransportHeaderSize], buf[transportReceiver:TransportHeaderSize],
		buf[TransportHeaderSize:end], nil)
	kp.send.RUnlock()
	binary.LittleEndian.PutUint32(buf[transportReceiver:], kp.RemoteIndex)
	return end + TagSize
}

// Open authenticates and decrypts the transport message msg in place and
// returns its plaintext (padding included) and counter. It does not touch
// the replay window: call Accept(counter) after Open succeeded. On failure
// msg's payload may have been overwritten.
func (kp *Keypair) Open(msg []byte) (plain []byte, counter uint64, err error) {
	if typ, ok := MessageType(msg); !ok || typ != TypeTransport {
		return nil, 0, errShort
	}
	if binary.LittleEndian.Uint32(msg[transportReceiver:]) != kp.LocalIndex {
		return nil, 0, errWrongIndex
	}
	counter = binary.LittleEndian.Uint64(msg[transportCounter:])
	if counter >= RejectAfterMessages {
		return nil, 0, errCounter
	}
	// The nonce is built in the header as in Seal; the receiver index is
	// put back afterwards.
	binary.LittleEndian.PutUint32(msg[transportReceiver:], 0)
	kp.recv.RLock()
	if kp.recv.aead == nil {
		err = errWiped
	} else {
		plain, err = kp.recv.aead.Open(msg[TransportHeaderSize:TransportHeaderSize],
			msg[transportReceiver:TransportHeaderSize], msg[TransportHeaderSize:], nil)
	}
	kp.recv.RUnlock()
	binary.LittleEndian.PutUint32(msg[transportReceiver:], kp.LocalIndex)
	if err != nil {
		return nil, 0, errDecrypt
	}
	return plain, counter, nil
}

// Accept records counter in the replay window and reports whether it is
// new: not seen before and not too old for the window. Call it only after
// Open authenticated the message.
func (kp *Keypair) Accept(counter uint64) bool {
	return kp.replay.accept(counter)
}

// Wipe zeroes the transport keys and ends the session: NextCounter reports
// false, Seal returns 0 and Open fails from then on. It waits for Seal and
// Open calls under way.
func (kp *Keypair) Wipe() {
	kp.send.Lock()
	kp.send.counter.Store(RejectAfterMessages)
	zeroAEAD(kp.send.aead)
	kp.send.aead = nil
	kp.send.Unlock()
	kp.recv.Lock()
	zeroAEAD(kp.recv.aead)
	kp.recv.aead = nil
	kp.recv.Unlock()
}

// chachaKeyLayout is the layout zeroAEAD relies on: x/crypto's
// ChaCha20-Poly1305 is a pointer to a struct holding only the key.
var chachaKeyLayout = reflect.TypeFor[[chacha20poly1305.KeySize]byte]()

// zeroAEAD overwrites the key inside a ChaCha20-Poly1305 AEAD from
// x/crypto, which offers no way to drop it. It does nothing when the
// value's layout is not the expected one (TestZeroAEAD fails then).
func zeroAEAD(a cipher.AEAD) {
	if a == nil {
		return
	}
	v := reflect.ValueOf(a)
	t := v.Type()
	if t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct ||
		t.Elem().NumField() != 1 || t.Elem().Field(0).Type != chachaKeyLayout {
		return
	}
	key := (*[chacha20poly1305.KeySize]byte)(v.UnsafePointer())
	clear(key[:])
}
