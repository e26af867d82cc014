package wgnoise

import (
	"crypto/rand"
	"crypto/subtle"
	"errors"

	"golang.org/x/crypto/curve25519"
)

// Key sizes and the types of WireGuard's three kinds of key.
type (
	// PrivateKey is a Curve25519 private key (clamped when used).
	PrivateKey [32]byte
	// PublicKey is a Curve25519 public key.
	PublicKey [32]byte
	// PresharedKey is the optional symmetric key mixed into the
	// handshake (the "psk" of Noise_IKpsk2); all zero means none.
	PresharedKey [32]byte
)

// errZeroDH is returned when a Diffie-Hellman result is all zero (a
// low-order point): the handshake must not go on with it.
var errZeroDH = errors.New("wgnoise: Diffie-Hellman result is all zero (invalid public key)")

// PublicKey returns the public key of k: X25519 of the clamped scalar and
// the base point.
func (k *PrivateKey) PublicKey() PublicKey {
	var pub PublicKey
	c := *k
	c.clamp()
	curve25519.ScalarBaseMult((*[32]byte)(&pub), (*[32]byte)(&c))
	clear(c[:])
	return pub
}

// clamp applies Curve25519's clamping to k in place.
func (k *PrivateKey) clamp() {
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
}

// newPrivateKey returns a fresh clamped private key from crypto/rand.
func newPrivateKey() (PrivateKey, error) {
	var k PrivateKey
	if _, err := rand.Read(k[:]); err != nil {
		return PrivateKey{}, err
	}
	k.clamp()
	return k, nil
}

// dh returns X25519(priv, pub), or errZeroDH when the result is all zero.
func dh(priv *PrivateKey, pub *PublicKey) ([32]byte, error) {
	var out [32]byte
	c := *priv
	c.clamp()
	curve25519.ScalarMult(&out, (*[32]byte)(&c), (*[32]byte)(pub))
	clear(c[:])
	var zero [32]byte
	if subtle.ConstantTimeCompare(out[:], zero[:]) == 1 {
		return out, errZeroDH
	}
	return out, nil
}
