package wgnoise

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"sync"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// cookieLifetime is how long a cookie (and the secret it is made from)
// stays valid: the paper's 120 s.
const cookieLifetime = 120 * time.Second

var (
	errNoMAC1Sent = errors.New("wgnoise: cookie reply without a handshake message sent")
	errShortMAC   = errors.New("wgnoise: message too short to carry mac1 and mac2")
)

// Cookies is a sender's MAC state towards one remote peer: the mac1 key
// from the peer's public key, the last cookie received and when, and the
// last mac1 sent (the associated data of a cookie reply). It is not safe
// for concurrent use: its owner locks.
type Cookies struct {
	mac1Key   [32]byte // Hash(labelMAC1 || peer)
	cookieKey [32]byte // Hash(labelCookie || peer): decrypts the peer's cookie replies

	cookie   [macSize]byte
	cookieAt time.Time // zero: no cookie held
	lastMAC1 [macSize]byte
	sentMAC1 bool
}

// NewCookies returns the MAC state towards peer.
func NewCookies(peer PublicKey) *Cookies {
	return &Cookies{mac1Key: labelKey(labelMAC1, &peer), cookieKey: labelKey(labelCookie, &peer)}
}

// Stamp writes mac1 into msg's last 32 bytes but 16, and mac2 into its
// last 16 when a cookie less than cookieLifetime old (at now) is held
// (zeros otherwise). msg is a whole initiation or response.
func (c *Cookies) Stamp(msg []byte, now time.Time) {
	if len(msg) < 2*macSize {
		return
	}
	m1 := len(msg) - 2*macSize
	m2 := len(msg) - macSize
	c.lastMAC1 = mac(c.mac1Key[:], msg[:m1])
	c.sentMAC1 = true
	copy(msg[m1:m2], c.lastMAC1[:])
	if !c.cookieAt.IsZero() && now.Sub(c.cookieAt) < cookieLifetime {
		m := mac(c.cookie[:], msg[:m2])
		copy(msg[m2:], m[:])
	} else {
		clear(msg[m2:])
	}
}

// ConsumeReply decrypts a cookie reply with the last mac1 sent as
// associated data and keeps its cookie, received at now. The caller has
// matched the reply's receiver index to a handshake message it sent.
func (c *Cookies) ConsumeReply(msg []byte, now time.Time) error {
	if typ, ok := MessageType(msg); !ok || typ != TypeCookieReply {
		return errBadMessage
	}
	if !c.sentMAC1 {
		return errNoMAC1Sent
	}
	x, _ := chacha20poly1305.NewX(c.cookieKey[:])
	var cookie [macSize]byte
	if _, err := x.Open(cookie[:0], msg[cookieNonce:cookieSealed], msg[cookieSealed:], c.lastMAC1[:]); err != nil {
		return errDecrypt
	}
	c.cookie, c.cookieAt = cookie, now
	c.sentMAC1 = false // a second reply to the same message is refused
	return nil
}

// Guard is the receiver's MAC checks and cookie replies. It is safe for
// concurrent use; its cookie secret is made when first needed and again
// when older than cookieLifetime, under its lock.
type Guard struct {
	id *Identity

	mu       sync.RWMutex
	secret   [32]byte
	secretAt time.Time // zero: no secret yet
}

// NewGuard returns the guard of messages addressed to id.
func NewGuard(id *Identity) *Guard { return &Guard{id: id} }

// CheckMAC1 reports whether msg (a whole initiation or response) carries a
// valid mac1 for our public key.
func (g *Guard) CheckMAC1(msg []byte) bool {
	if len(msg) < 2*macSize {
		return false
	}
	m1 := len(msg) - 2*macSize
	want := mac(g.id.mac1Key[:], msg[:m1])
	return subtle.ConstantTimeCompare(want[:], msg[m1:m1+macSize]) == 1
}

// CheckMAC2 reports whether msg carries a valid mac2 made with the cookie
// of src (the sender's IP address bytes, then its port in 2 bytes, big
// endian) under the current secret. A secret older than cookieLifetime at
// now is no longer valid.
func (g *Guard) CheckMAC2(msg []byte, src []byte, now time.Time) bool {
	if len(msg) < 2*macSize {
		return false
	}
	g.mu.RLock()
	if g.secretAt.IsZero() || now.Sub(g.secretAt) >= cookieLifetime {
		g.mu.RUnlock()
		return false
	}
	cookie := mac(g.secret[:], src)
	g.mu.RUnlock()
	m2 := len(msg) - macSize
	want := mac(cookie[:], msg[:m2])
	clear(cookie[:])
	return subtle.ConstantTimeCompare(want[:], msg[m2:]) == 1
}

// CookieReply returns the cookie reply to msg (an initiation or response
// from src): the cookie of src, encrypted to the sender with msg's mac1 as
// associated data, addressed to msg's sender index.
func (g *Guard) CookieReply(msg []byte, src []byte, now time.Time) ([CookieReplySize]byte, error) {
	var reply [CookieReplySize]byte
	typ, ok := MessageType(msg)
	if !ok || (typ != TypeInitiation && typ != TypeResponse) {
		return reply, errBadMessage
	}
	cookie, err := g.cookie(src, now)
	if err != nil {
		return reply, err
	}
	defer clear(cookie[:])
	var nonce [chacha20poly1305.NonceSizeX]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return reply, err
	}
	return g.sealReply(msg, &cookie, &nonce), nil
}

// sealReply returns the cookie reply to msg carrying cookie, encrypted
// with nonce.
func (g *Guard) sealReply(msg []byte, cookie *[macSize]byte, nonce *[chacha20poly1305.NonceSizeX]byte) [CookieReplySize]byte {
	var reply [CookieReplySize]byte
	binary.LittleEndian.PutUint32(reply[0:], TypeCookieReply)
	copy(reply[cookieReceiver:cookieNonce], msg[initSender:initSender+4]) // the sender index is at 4 in both
	copy(reply[cookieNonce:cookieSealed], nonce[:])
	m1 := len(msg) - 2*macSize
	x, _ := chacha20poly1305.NewX(g.id.cookieKey[:])
	x.Seal(reply[cookieSealed:cookieSealed], nonce[:], cookie[:], msg[m1:m1+macSize])
	return reply
}

// cookie returns Mac(secret, src), making a new secret first when there is
// none or it is older than cookieLifetime at now.
func (g *Guard) cookie(src []byte, now time.Time) ([macSize]byte, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.secretAt.IsZero() || now.Sub(g.secretAt) >= cookieLifetime {
		if _, err := rand.Read(g.secret[:]); err != nil {
			return [macSize]byte{}, err
		}
		g.secretAt = now
	}
	return mac(g.secret[:], src), nil
}
