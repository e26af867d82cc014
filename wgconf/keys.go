package wgconf

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// KeyLen is the length in bytes of every WireGuard key.
const KeyLen = 32

// redacted is what a secret prints as, whatever the verb.
const redacted = "(redacted)"

// PrivateKey is a Curve25519 private key. It is a secret: every fmt verb,
// String, GoString and MarshalText print "(redacted)". Writers that must
// emit the key call Base64 or Hex explicitly.
type PrivateKey [KeyLen]byte

// PublicKey is a Curve25519 public key. It prints as base64, the form wg(8)
// uses.
type PublicKey [KeyLen]byte

// PresharedKey is a WireGuard pre-shared symmetric key. Like PrivateKey it is
// a secret and never prints.
type PresharedKey [KeyLen]byte

// errKeyFormat never mentions the offending text: it may be a secret.
var errKeyFormat = errors.New("not a valid key: want 32 bytes in base64 (44 characters ending in '=')")

// GeneratePrivateKey returns a new random private key, clamped as
// Curve25519 requires (and as `wg genkey` does).
func GeneratePrivateKey() (PrivateKey, error) {
	var k PrivateKey
	if _, err := io.ReadFull(rand.Reader, k[:]); err != nil {
		return PrivateKey{}, fmt.Errorf("wgconf: generating private key: %w", err)
	}
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	return k, nil
}

// ParsePrivateKey decodes a base64 private key. The error never contains s.
func ParsePrivateKey(s string) (PrivateKey, error) {
	var k PrivateKey
	err := decodeKey(k[:], s)
	return k, err
}

// ParsePublicKey decodes a base64 public key.
func ParsePublicKey(s string) (PublicKey, error) {
	var k PublicKey
	err := decodeKey(k[:], s)
	return k, err
}

// ParsePresharedKey decodes a base64 pre-shared key. The error never
// contains s.
func ParsePresharedKey(s string) (PresharedKey, error) {
	var k PresharedKey
	err := decodeKey(k[:], s)
	return k, err
}

func decodeKey(dst []byte, s string) error {
	// A 32-byte key is exactly 44 base64 characters; checking the length
	// first also keeps the decoder from accepting embedded newlines.
	if len(s) != base64.StdEncoding.EncodedLen(KeyLen) {
		return errKeyFormat
	}
	var buf [KeyLen + 1]byte // 44 characters without padding decode to 33 bytes
	n, err := base64.StdEncoding.Strict().Decode(buf[:], []byte(s))
	if err != nil || n != KeyLen {
		clear(buf[:])
		return errKeyFormat
	}
	copy(dst, buf[:KeyLen])
	clear(buf[:])
	return nil
}

// IsZero reports whether k is all zeros (no key).
func (k PrivateKey) IsZero() bool { return k == PrivateKey{} }

// Public returns the public key belonging to k.
func (k PrivateKey) Public() PublicKey {
	// X25519 clamps the scalar itself, so any 32 bytes are a usable key.
	priv, err := ecdh.X25519().NewPrivateKey(k[:])
	if err != nil {
		// Unreachable: NewPrivateKey only checks the length.
		panic("wgconf: " + err.Error())
	}
	var pub PublicKey
	copy(pub[:], priv.PublicKey().Bytes())
	return pub
}

// Base64 returns the key in the form wg(8) reads. Only writers of
// configuration should call it.
func (k PrivateKey) Base64() string { return base64.StdEncoding.EncodeToString(k[:]) }

// Hex returns the key in lower-case hex, the form of the WireGuard UAPI.
func (k PrivateKey) Hex() string { return hex.EncodeToString(k[:]) }

// DecodeHex decodes a key in the UAPI's hex form into dst, which it must
// fill exactly. The error never quotes s, which may be a secret.
func DecodeHex(dst []byte, s string) error {
	if len(s) != 2*len(dst) {
		return fmt.Errorf("key of %d hex digits, want %d", len(s), 2*len(dst))
	}
	if _, err := hex.Decode(dst, []byte(s)); err != nil {
		return errors.New("key is not hex")
	}
	return nil
}

// String returns "(redacted)".
func (k PrivateKey) String() string { return redacted }

// GoString returns "(redacted)".
func (k PrivateKey) GoString() string { return redacted }

// Format prints "(redacted)" for every verb, so that no %x or %d shows the
// key either.
func (k PrivateKey) Format(f fmt.State, verb rune) { io.WriteString(f, redacted) }

// MarshalText returns "(redacted)", so that a key inside JSON or a
// structured log line stays secret.
func (k PrivateKey) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// IsZero reports whether k is all zeros (no key).
func (k PublicKey) IsZero() bool { return k == PublicKey{} }

// String returns the key in base64.
func (k PublicKey) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// Hex returns the key in lower-case hex, the form of the WireGuard UAPI.
func (k PublicKey) Hex() string { return hex.EncodeToString(k[:]) }

// MarshalText returns the key in base64.
func (k PublicKey) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText decodes a base64 key.
func (k *PublicKey) UnmarshalText(text []byte) error {
	pk, err := ParsePublicKey(string(text))
	if err != nil {
		return err
	}
	*k = pk
	return nil
}

// IsZero reports whether k is all zeros, which WireGuard reads as "no
// pre-shared key".
func (k PresharedKey) IsZero() bool { return k == PresharedKey{} }

// Base64 returns the key in the form wg(8) reads. Only writers of
// configuration should call it.
func (k PresharedKey) Base64() string { return base64.StdEncoding.EncodeToString(k[:]) }

// Hex returns the key in lower-case hex, the form of the WireGuard UAPI.
func (k PresharedKey) Hex() string { return hex.EncodeToString(k[:]) }

// String returns "(redacted)".
func (k PresharedKey) String() string { return redacted }

// GoString returns "(redacted)".
func (k PresharedKey) GoString() string { return redacted }

// Format prints "(redacted)" for every verb.
func (k PresharedKey) Format(f fmt.State, verb rune) { io.WriteString(f, redacted) }

// MarshalText returns "(redacted)".
func (k PresharedKey) MarshalText() ([]byte, error) { return []byte(redacted), nil }
