package proxy

import "sync"

// closeWriter is a connection that can shut down its writing side alone:
// *net.TCPConn on the host, gonet.TCPConn in the tunnel.
type closeWriter interface{ CloseWrite() error }

// bodyBufs holds the buffers that stream HTTP bodies.
var bodyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
