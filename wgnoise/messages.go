package wgnoise

import "encoding/binary"

// Message types, sizes and limits of WireGuard's wire format.
const (
	TypeInitiation  = 1
	TypeResponse    = 2
	TypeCookieReply = 3
	TypeTransport   = 4

	InitiationSize  = 148 // type, sender, ephemeral, static+tag, timestamp+tag, mac1, mac2
	ResponseSize    = 92  // type, sender, receiver, ephemeral, empty+tag, mac1, mac2
	CookieReplySize = 64  // type, receiver, nonce, cookie+tag

	// TransportHeaderSize is a transport message's header: type (4
	// bytes, little endian), receiver index (4), counter (8).
	TransportHeaderSize = 16
	// TagSize is the Poly1305 tag's size.
	TagSize = 16
	// KeepaliveSize is the size of a transport message with no payload.
	KeepaliveSize = TransportHeaderSize + TagSize

	// RejectAfterMessages is the first send counter a keypair never
	// uses, and the first receive counter it refuses.
	RejectAfterMessages = (1<<64 - 1) - (1 << 13)
	// RekeyAfterMessages is the send counter after which the initiator
	// starts a new handshake.
	RekeyAfterMessages = 1 << 60
)

// Field offsets inside the messages.
const (
	macSize = 16

	initSender    = 4
	initEphemeral = 8
	initStatic    = 40 // 32 bytes encrypted + tag
	initTimestamp = 88 // 12 bytes encrypted + tag
	initMAC1      = 116

	respSender    = 4
	respReceiver  = 8
	respEphemeral = 12
	respEmpty     = 44 // tag only
	respMAC1      = 60

	cookieReceiver = 4
	cookieNonce    = 8
	cookieSealed   = 32 // 16 bytes encrypted + tag

	transportReceiver = 4
	transportCounter  = 8
)

// MessageType returns the type of msg; ok is false when the type is
// unknown or msg's length breaks the type's size rule (the handshake
// messages have one fixed size each, a transport message is at least a
// keepalive).
func MessageType(msg []byte) (typ uint32, ok bool) {
	if len(msg) < 4 {
		return 0, false
	}
	typ = binary.LittleEndian.Uint32(msg)
	switch typ {
	case TypeInitiation:
		ok = len(msg) == InitiationSize
	case TypeResponse:
		ok = len(msg) == ResponseSize
	case TypeCookieReply:
		ok = len(msg) == CookieReplySize
	case TypeTransport:
		ok = len(msg) >= KeepaliveSize
	}
	return typ, ok
}

// ReceiverIndex returns the receiver index of a response, cookie reply or
// transport message: the index the receiving side chose for itself. It
// returns 0 for anything else (an initiation has no receiver); call it
// after MessageType said ok.
func ReceiverIndex(msg []byte) uint32 {
	typ, ok := MessageType(msg)
	if !ok {
		return 0
	}
	switch typ {
	case TypeResponse:
		return binary.LittleEndian.Uint32(msg[respReceiver:])
	case TypeCookieReply:
		return binary.LittleEndian.Uint32(msg[cookieReceiver:])
	case TypeTransport:
		return binary.LittleEndian.Uint32(msg[transportReceiver:])
	}
	return 0
}

// PaddedLen returns n rounded up to a multiple of 16, the length a
// transport message's plaintext is padded to.
func PaddedLen(n int) int {
	return (n + 15) &^ 15
}
