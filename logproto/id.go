package logproto

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
)

// A PrivateID names a log stream and authorises writing to it: whoever
// knows it can append to the stream. It is 32 random bytes, written as 64
// hexadecimal digits in the upload URL and nowhere else.
//
// String, GoString and LogValue redact it, so that printing or logging a
// PrivateID (or a Config holding one) does not leak it; Hex returns the
// secret itself, for saving it.
type PrivateID [32]byte

// A PublicID names a log stream to readers without granting write access:
// it is the SHA-256 of the private ID's 32 bytes. The collector files
// entries under it.
type PublicID [32]byte

// NewPrivateID returns a new random private ID.
func NewPrivateID() (PrivateID, error) {
	var id PrivateID
	if _, err := rand.Read(id[:]); err != nil {
		return PrivateID{}, fmt.Errorf("logproto: new private ID: %w", err)
	}
	return id, nil
}

// ParsePrivateID parses 64 hexadecimal digits (either case).
func ParsePrivateID(s string) (PrivateID, error) {
	var id PrivateID
	if err := parseHex32(id[:], s); err != nil {
		return PrivateID{}, fmt.Errorf("logproto: private ID: %w", err)
	}
	return id, nil
}

// ParsePublicID parses 64 hexadecimal digits (either case).
func ParsePublicID(s string) (PublicID, error) {
	var id PublicID
	if err := parseHex32(id[:], s); err != nil {
		return PublicID{}, fmt.Errorf("logproto: public ID: %w", err)
	}
	return id, nil
}

func parseHex32(dst []byte, s string) error {
	if len(s) != 64 {
		return fmt.Errorf("want 64 hex digits, got %d characters", len(s))
	}
	if _, err := hex.Decode(dst, []byte(s)); err != nil {
		return fmt.Errorf("want 64 hex digits: %w", err)
	}
	return nil
}

// Public returns the stream's public ID, the SHA-256 of the private ID.
func (id PrivateID) Public() PublicID { return sha256.Sum256(id[:]) }

// IsZero reports whether id is the zero value (no ID set).
func (id PrivateID) IsZero() bool { return id == PrivateID{} }

// Hex returns the secret as 64 lower-case hexadecimal digits. Never log it.
func (id PrivateID) Hex() string { return hex.EncodeToString(id[:]) }

// String returns a redacted placeholder, never the secret.
func (id PrivateID) String() string { return "PrivateID(redacted)" }

// GoString returns a redacted placeholder, never the secret.
func (id PrivateID) GoString() string { return "logproto.PrivateID(redacted)" }

// LogValue redacts the ID in slog records.
func (id PrivateID) LogValue() slog.Value { return slog.StringValue(id.String()) }

// String returns the ID as 64 lower-case hexadecimal digits.
func (id PublicID) String() string { return hex.EncodeToString(id[:]) }
