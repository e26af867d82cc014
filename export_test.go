package sidecar

// BreakSocketForTest closes the node's WireGuard UDP socket under the
// running device, as a socket that went bad would be: sends fail and the
// receive routines end, while the device believes it is up.
func BreakSocketForTest(n *Node) error { return n.bind.Bind.Close() }
