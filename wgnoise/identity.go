package wgnoise

// Identity is the local static key pair with what is derived from it once:
// the keys of mac1 and of cookie replies addressed to us, and the hash a
// handshake towards us starts from. It is immutable and safe to share.
type Identity struct {
	priv      PrivateKey
	pub       PublicKey
	mac1Key   [32]byte // Hash(labelMAC1 || pub): checks mac1 of messages to us
	cookieKey [32]byte // Hash(labelCookie || pub): encrypts our cookie replies
	hash0     [32]byte // Hash(initialHash || pub): a responder's first hash
}

// NewIdentity returns the identity of priv (clamped on use).
func NewIdentity(priv PrivateKey) *Identity {
	priv.clamp()
	id := &Identity{priv: priv, pub: priv.PublicKey()}
	id.mac1Key = labelKey(labelMAC1, &id.pub)
	id.cookieKey = labelKey(labelCookie, &id.pub)
	id.hash0 = mixHash(initialHash, id.pub[:])
	return id
}

// Public returns the identity's public key.
func (id *Identity) Public() PublicKey { return id.pub }
