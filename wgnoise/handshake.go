package wgnoise

import (
	"bytes"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"time"
)

// initiationFloodInterval is the least time between two initiations a
// responder accepts from one peer (1/50 s).
const initiationFloodInterval = time.Second / 50

// handshakeState is where a Handshake is in the Noise_IKpsk2 exchange.
type handshakeState uint8

const (
	stateZero               handshakeState = iota // nothing under way
	stateInitiationCreated                        // initiator: initiation sent, waiting
	stateInitiationAccepted                       // responder: initiation adopted
	stateResponseCreated                          // responder: response made, session ready
	stateResponseConsumed                         // initiator: response taken, session ready
)

var (
	errBadMessage     = errors.New("wgnoise: message of wrong type or size")
	errDecrypt        = errors.New("wgnoise: message failed authentication")
	errWrongState     = errors.New("wgnoise: handshake is not in the state this step needs")
	errWrongReceiver  = errors.New("wgnoise: response is not addressed to the pending initiation")
	errWrongPeer      = errors.New("wgnoise: initiation is from another peer than this handshake's")
	errReplay         = errors.New("wgnoise: initiation timestamp not newer than the last accepted (replay)")
	errFlood          = errors.New("wgnoise: initiation too soon after the last accepted (flood)")
	errNoInitiationIn = errors.New("wgnoise: no initiation given")
)

// Handshake is the Noise_IKpsk2 state with one remote peer, either side.
// It is not safe for concurrent use: its owner locks. The zero state
// (after NewHandshake, BeginSession or Clear) has nothing under way; the
// last accepted initiation's timestamp and time survive every reset, as
// the replay and flood checks need them.
type Handshake struct {
	id        *Identity
	peer      PublicKey
	psk       PresharedKey
	ss        [32]byte // DH(our static, peer's static), precomputed
	peerHash0 [32]byte // Hash(initialHash || peer): an initiator's first hash

	state       handshakeState
	chainKey    [32]byte
	hash        [32]byte
	ephemeral   PrivateKey // ours
	remoteEph   PublicKey
	localIndex  uint32
	remoteIndex uint32

	lastTimestamp  [12]byte  // of the last accepted initiation
	lastInitiation time.Time // when the last initiation was accepted
}

// NewHandshake returns the handshake state of id with peer. It fails when
// DH(our static, peer) is all zero (peer is a low-order point).
func NewHandshake(id *Identity, peer PublicKey, psk PresharedKey) (*Handshake, error) {
	ss, err := dh(&id.priv, &peer)
	if err != nil {
		return nil, err
	}
	return &Handshake{id: id, peer: peer, psk: psk, ss: ss, peerHash0: mixHash(initialHash, peer[:])}, nil
}

// SetPresharedKey replaces the preshared key; a handshake under way uses
// the new one from its next step.
func (h *Handshake) SetPresharedKey(psk PresharedKey) { h.psk = psk }

// Clear drops any half-done handshake and its secrets.
func (h *Handshake) Clear() {
	clear(h.chainKey[:])
	clear(h.hash[:])
	clear(h.ephemeral[:])
	clear(h.remoteEph[:])
	h.localIndex, h.remoteIndex = 0, 0
	h.state = stateZero
}

// PendingIndex returns the local index of an initiation that was created
// and not yet answered by a consumed response.
func (h *Handshake) PendingIndex() (uint32, bool) {
	return h.localIndex, h.state == stateInitiationCreated
}

// CreateInitiation starts a handshake as initiator and returns the
// initiation with sender index localIndex and timestamp now; its mac1 and
// mac2 are left zero for Cookies.Stamp. It replaces any handshake under way.
func (h *Handshake) CreateInitiation(localIndex uint32, now time.Time) ([InitiationSize]byte, error) {
	eph, err := newPrivateKey()
	if err != nil {
		return [InitiationSize]byte{}, err
	}
	msg, err := h.initiation(eph, localIndex, now)
	clear(eph[:])
	return msg, err
}

// initiation is CreateInitiation with the ephemeral key given.
func (h *Handshake) initiation(eph PrivateKey, localIndex uint32, now time.Time) ([InitiationSize]byte, error) {
	var msg [InitiationSize]byte
	h.Clear()
	ck, hs := initialChainKey, h.peerHash0
	ephPub := eph.PublicKey()
	kdf(&ck, ephPub[:], &ck)
	hs = mixHash(hs, ephPub[:])
	es, err := dh(&eph, &h.peer)
	if err != nil {
		clear(eph[:])
		return msg, err
	}
	var key [32]byte
	kdf(&ck, es[:], &ck, &key)
	static := aeadSeal(msg[initStatic:initStatic], &key, h.id.pub[:], hs[:])
	hs = mixHash(hs, static)
	kdf(&ck, h.ss[:], &ck, &key)
	ts := tai64n(now)
	stamp := aeadSeal(msg[initTimestamp:initTimestamp], &key, ts[:], hs[:])
	hs = mixHash(hs, stamp)
	clear(key[:])
	clear(es[:])

	binary.LittleEndian.PutUint32(msg[0:], TypeInitiation)
	binary.LittleEndian.PutUint32(msg[initSender:], localIndex)
	copy(msg[initEphemeral:], ephPub[:])
	h.chainKey, h.hash, h.ephemeral = ck, hs, eph
	h.localIndex = localIndex
	h.state = stateInitiationCreated
	clear(ck[:])
	clear(eph[:])
	return msg, nil
}

// Initiation is a decrypted handshake initiation: who sent it and the
// state a response continues from. It is the responder's first step;
// Handshake.AcceptInitiation on the sender's Handshake is the second.
type Initiation struct {
	Sender    uint32    // the initiator's index: the receiver of our response
	Peer      PublicKey // the initiator's static key
	Timestamp [12]byte  // TAI64N

	chainKey  [32]byte
	hash      [32]byte
	ephemeral PublicKey
}

// ConsumeInitiation decrypts an initiation addressed to id. It checks no
// MAC (Guard does) and no replay (AcceptInitiation does); it fails when
// msg is no initiation or does not authenticate.
func ConsumeInitiation(id *Identity, msg []byte) (*Initiation, error) {
	if typ, ok := MessageType(msg); !ok || typ != TypeInitiation {
		return nil, errBadMessage
	}
	in := &Initiation{Sender: binary.LittleEndian.Uint32(msg[initSender:])}
	copy(in.ephemeral[:], msg[initEphemeral:initStatic])
	ck, hs := initialChainKey, id.hash0
	kdf(&ck, in.ephemeral[:], &ck)
	hs = mixHash(hs, in.ephemeral[:])
	es, err := dh(&id.priv, &in.ephemeral)
	if err != nil {
		return nil, err
	}
	var key [32]byte
	defer clear(key[:])
	kdf(&ck, es[:], &ck, &key)
	clear(es[:])
	sealedStatic := msg[initStatic:initTimestamp]
	if _, err := aeadOpen(in.Peer[:0], &key, sealedStatic, hs[:]); err != nil {
		return nil, errDecrypt
	}
	hs = mixHash(hs, sealedStatic)
	ss, err := dh(&id.priv, &in.Peer)
	if err != nil {
		return nil, err
	}
	kdf(&ck, ss[:], &ck, &key)
	clear(ss[:])
	sealedStamp := msg[initTimestamp:initMAC1]
	if _, err := aeadOpen(in.Timestamp[:0], &key, sealedStamp, hs[:]); err != nil {
		return nil, errDecrypt
	}
	in.hash = mixHash(hs, sealedStamp)
	in.chainKey = ck
	clear(ck[:])
	return in, nil
}

// AcceptInitiation adopts in (from ConsumeInitiation) as this peer's
// handshake, as responder. It refuses an initiation from another peer, one
// whose timestamp is not newer than the last accepted one (a replay), and
// one within initiationFloodInterval of the last accepted one (a flood).
// It replaces any handshake under way. in is used up either way: its
// chaining key is zeroed.
func (h *Handshake) AcceptInitiation(in *Initiation, now time.Time) error {
	if in == nil {
		return errNoInitiationIn
	}
	defer clear(in.chainKey[:])
	if subtle.ConstantTimeCompare(in.Peer[:], h.peer[:]) != 1 {
		return errWrongPeer
	}
	if bytes.Compare(in.Timestamp[:], h.lastTimestamp[:]) <= 0 {
		return errReplay
	}
	if !h.lastInitiation.IsZero() && now.Sub(h.lastInitiation) <= initiationFloodInterval {
		return errFlood
	}
	h.Clear()
	h.chainKey, h.hash, h.remoteEph = in.chainKey, in.hash, in.ephemeral
	h.remoteIndex = in.Sender
	h.lastTimestamp = in.Timestamp
	h.lastInitiation = now
	h.state = stateInitiationAccepted
	return nil
}
