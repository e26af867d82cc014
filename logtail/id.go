package logtail

import "github.com/wgsidecar/sidecar/logproto"

// The IDs of a stream are the wire protocol's (package logproto); these
// names keep the client's API whole.

// A PrivateID names a log stream and authorises writing to it; see
// logproto.PrivateID.
type PrivateID = logproto.PrivateID

// A PublicID names a log stream to readers; see logproto.PublicID.
type PublicID = logproto.PublicID

// NewPrivateID returns a new random private ID.
func NewPrivateID() (PrivateID, error) { return logproto.NewPrivateID() }

// ParsePrivateID parses 64 hexadecimal digits (either case).
func ParsePrivateID(s string) (PrivateID, error) { return logproto.ParsePrivateID(s) }
