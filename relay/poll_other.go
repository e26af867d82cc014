//go:build !unix

package relay

import "net"

// hostPoll returns nil: host sockets are read by a goroutine waiting in
// Read on this system.
func hostPoll(net.Conn) pollable { return nil }
