package wgnoise

import (
	"encoding/binary"
	"time"
)

// CreateResponse answers the initiation adopted by AcceptInitiation with a
// response whose sender index is localIndex; its mac1 and mac2 are left
// zero for Cookies.Stamp. BeginSession then derives the session.
func (h *Handshake) CreateResponse(localIndex uint32) ([ResponseSize]byte, error) {
	eph, err := newPrivateKey()
	if err != nil {
		return [ResponseSize]byte{}, err
	}
	msg, err := h.response(eph, localIndex)
	clear(eph[:])
	return msg, err
}

// response is CreateResponse with the ephemeral key given.
func (h *Handshake) response(eph PrivateKey, localIndex uint32) ([ResponseSize]byte, error) {
	var msg [ResponseSize]byte
	defer clear(eph[:])
	if h.state != stateInitiationAccepted {
		return msg, errWrongState
	}
	ephPub := eph.PublicKey()
	ck, hs := h.chainKey, h.hash
	defer clear(ck[:])
	kdf(&ck, ephPub[:], &ck)
	hs = mixHash(hs, ephPub[:])
	ee, err := dh(&eph, &h.remoteEph)
	if err != nil {
		return msg, err
	}
	kdf(&ck, ee[:], &ck)
	clear(ee[:])
	se, err := dh(&eph, &h.peer)
	if err != nil {
		return msg, err
	}
	kdf(&ck, se[:], &ck)
	clear(se[:])
	var tau, key [32]byte
	kdf(&ck, h.psk[:], &ck, &tau, &key)
	hs = mixHash(hs, tau[:])
	empty := aeadSeal(msg[respEmpty:respEmpty], &key, nil, hs[:])
	hs = mixHash(hs, empty)
	clear(tau[:])
	clear(key[:])

	binary.LittleEndian.PutUint32(msg[0:], TypeResponse)
	binary.LittleEndian.PutUint32(msg[respSender:], localIndex)
	binary.LittleEndian.PutUint32(msg[respReceiver:], h.remoteIndex)
	copy(msg[respEphemeral:], ephPub[:])
	h.chainKey, h.hash = ck, hs
	h.localIndex = localIndex
	h.state = stateResponseCreated
	return msg, nil
}

// ConsumeResponse takes the response to our pending initiation. msg has
// been mac1-checked by the caller; it must be addressed to the pending
// initiation's index. On failure the initiation stays pending.
func (h *Handshake) ConsumeResponse(msg []byte) error {
	if typ, ok := MessageType(msg); !ok || typ != TypeResponse {
		return errBadMessage
	}
	if h.state != stateInitiationCreated {
		return errWrongState
	}
	if binary.LittleEndian.Uint32(msg[respReceiver:]) != h.localIndex {
		return errWrongReceiver
	}
	var remoteEph PublicKey
	copy(remoteEph[:], msg[respEphemeral:respEmpty])
	ck, hs := h.chainKey, h.hash
	defer clear(ck[:])
	kdf(&ck, remoteEph[:], &ck)
	hs = mixHash(hs, remoteEph[:])
	ee, err := dh(&h.ephemeral, &remoteEph)
	if err != nil {
		return err
	}
	kdf(&ck, ee[:], &ck)
	clear(ee[:])
	se, err := dh(&h.id.priv, &remoteEph)
	if err != nil {
		return err
	}
	kdf(&ck, se[:], &ck)
	clear(se[:])
	var tau, key [32]byte
	defer clear(key[:])
	kdf(&ck, h.psk[:], &ck, &tau, &key)
	hs = mixHash(hs, tau[:])
	clear(tau[:])
	sealed := msg[respEmpty:respMAC1]
	if _, err := aeadOpen(nil, &key, sealed, hs[:]); err != nil {
		return errDecrypt
	}
	hs = mixHash(hs, sealed)
	h.chainKey, h.hash = ck, hs
	h.remoteIndex = binary.LittleEndian.Uint32(msg[respSender:])
	h.remoteEph = remoteEph
	h.state = stateResponseConsumed
	return nil
}

// BeginSession derives the transport keys once the handshake is complete
// (after ConsumeResponse as initiator, CreateResponse as responder),
// returns them as a Keypair created at now, wipes the handshake's secrets
// and returns it to the zero state.
func (h *Handshake) BeginSession(now time.Time) (*Keypair, error) {
	var initiator bool
	switch h.state {
	case stateResponseConsumed:
		initiator = true
	case stateResponseCreated:
	default:
		return nil, errWrongState
	}
	var first, second [32]byte
	kdf(&h.chainKey, nil, &first, &second)
	send, recv := &first, &second
	if !initiator {
		send, recv = recv, send
	}
	kp := newKeypair(send, recv)
	clear(first[:])
	clear(second[:])
	kp.LocalIndex, kp.RemoteIndex = h.localIndex, h.remoteIndex
	kp.Initiator, kp.Created = initiator, now
	h.Clear()
	return kp, nil
}
