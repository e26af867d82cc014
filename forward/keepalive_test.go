package forward_test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/forward"
	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/sidecartest"
)

// TestForwardEndsWhenPeerGoesAway: a download through a [TCPClientTunnel]
// forward whose far node goes away mid-transfer (closed without a word,
// as by kill -9) ends within twice the keepalive, instead of hanging
// forever and keeping its place (#15). The keepalive is 1 s here; its
// default is 30 s.
func TestForwardEndsWhenPeerGoesAway(t *testing.T) {
	nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{NodeOptions: func(i int, o *sidecar.Options) {
		o.TCPKeepalive = time.Second
	}})
	a, b := nodes[0], nodes[1]
	ln, err := b.Listen("tcp", ":8")
	if err != nil {
		t.Fatal(err)
	}
	stall := make(chan struct{})
	defer close(stall)
	testnet.Serve(t, ln, func(c net.Conn) {
		c.Write(make([]byte, 64<<10)) // the start of a download, then nothing
		<-stall
	})
	f, err := forward.ListenTCP("127.0.0.1:0", "10.99.0.2:8", a, 0, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := net.Dial("tcp", f.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	b.Close() // the far node is gone
	gone := time.Now()
	_, err = io.Copy(io.Discard, c)
	took := time.Since(gone)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the download did not end within 20 s of its peer going away")
	}
	if err == nil {
		t.Errorf("the cut-off download ended like a whole one (EOF); want a reset")
	}
	t.Logf("ended %v after the peer went away (%v)", took.Round(100*time.Millisecond), err)
	if open, _ := f.Conns(); open != 0 {
		// The relay gives its place back as it ends.
		deadline := time.Now().Add(5 * time.Second)
		for open != 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			open, _ = f.Conns()
		}
		if open != 0 {
			t.Errorf("%d connections still counted open", open)
		}
	}
}
