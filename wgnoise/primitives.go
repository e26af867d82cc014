package wgnoise

import (
	"crypto/hmac"
	"encoding/binary"
	"hash"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"
)

// The protocol's name strings, mixed into the first hash and the MAC keys.
const (
	construction = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
	identifier   = "WireGuard v1 zx2c4 Jason@zx2c4.com"
	labelMAC1    = "mac1----"
	labelCookie  = "cookie--"
)

// initialChainKey is Hash(construction); initialHash is
// Hash(initialChainKey || identifier). Both start every handshake.
var (
	initialChainKey = blake2s.Sum256([]byte(construction))
	initialHash     = mixHash(initialChainKey, []byte(identifier))
)

// mixHash returns Hash(h || data).
func mixHash(h [32]byte, data []byte) [32]byte {
	d, _ := blake2s.New256(nil)
	d.Write(h[:])
	d.Write(data)
	var out [32]byte
	d.Sum(out[:0])
	return out
}

// labelKey returns Hash(label || pub), the key of mac1 or of cookie
// encryption towards the owner of pub.
func labelKey(label string, pub *PublicKey) [32]byte {
	d, _ := blake2s.New256(nil)
	d.Write([]byte(label))
	d.Write(pub[:])
	var out [32]byte
	d.Sum(out[:0])
	return out
}

// mac returns Keyed-BLAKE2s-128(key, data); key is 16 or 32 bytes.
func mac(key []byte, data []byte) [macSize]byte {
	d, err := blake2s.New128(key)
	if err != nil {
		panic("wgnoise: MAC key of bad length") // keys here are fixed sizes
	}
	d.Write(data)
	var out [macSize]byte
	d.Sum(out[:0])
	return out
}

// newBlake2s256 is the hash HMAC is built on.
func newBlake2s256() hash.Hash {
	d, _ := blake2s.New256(nil)
	return d
}

// hmacSum returns HMAC-BLAKE2s(key, parts...).
func hmacSum(key []byte, parts ...[]byte) [32]byte {
	m := hmac.New(newBlake2s256, key)
	for _, p := range parts {
		m.Write(p)
	}
	var out [32]byte
	m.Sum(out[:0])
	return out
}

// kdf is the paper's HKDF over HMAC-BLAKE2s: it fills outs[0], outs[1],
// ... with τ1, τ2, ... derived from the chaining key ck and input.
func kdf(ck *[32]byte, input []byte, outs ...*[32]byte) {
	prk := hmacSum(ck[:], input)
	var prev [32]byte
	for i, out := range outs {
		if i == 0 {
			prev = hmacSum(prk[:], []byte{1})
		} else {
			prev = hmacSum(prk[:], prev[:], []byte{byte(i + 1)})
		}
		*out = prev
	}
	clear(prk[:])
	clear(prev[:])
}

// zeroNonce is the nonce of every handshake AEAD: each key is used once.
var zeroNonce [chacha20poly1305.NonceSize]byte

// aeadSeal appends ChaCha20-Poly1305(key, 0, plain, ad) to dst.
func aeadSeal(dst []byte, key *[32]byte, plain, ad []byte) []byte {
	a, _ := chacha20poly1305.New(key[:])
	return a.Seal(dst, zeroNonce[:], plain, ad)
}

// aeadOpen decrypts sealed (nonce 0) into dst.
func aeadOpen(dst []byte, key *[32]byte, sealed, ad []byte) ([]byte, error) {
	a, _ := chacha20poly1305.New(key[:])
	return a.Open(dst, zeroNonce[:], sealed, ad)
}

// tai64n returns t as a TAI64N label: seconds since 1970 plus 2^62 + 10
// (big endian), then nanoseconds (big endian). Later times give larger
// labels byte for byte, which is all the responder compares.
func tai64n(t time.Time) [12]byte {
	var out [12]byte
	binary.BigEndian.PutUint64(out[:8], uint64(1<<62+10+t.Unix()))
	binary.BigEndian.PutUint32(out[8:], uint32(t.Nanosecond()))
	return out
}
