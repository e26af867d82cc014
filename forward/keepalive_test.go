package forward_test

import (
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/forward"
	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/sidecartest"
	"github.com/wgsidecar/sidecar/wgconf"
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
	stall := make(chan struct{})
	defer close(stall)
	f, c := startDownload(t, a, b, func(c net.Conn) {
		c.Write(make([]byte, 64<<10)) // the start of a download, then nothing
		<-stall
	})
	b.Close() // the far node is gone
	gone := time.Now()
	_, err := io.Copy(io.Discard, c)
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

// TestForwardEndsWhenPeerRestarts: the far node of a download through a
// [TCPClientTunnel] forward goes away mid-transfer without a word (as by
// kill -9) and comes back 2 s later on the same key and port, knowing
// nothing of the connection (#15 item 2). The in-flight download must
// end, with an error, within twice the keepalive (5 s here; 30 s by
// default): the restarted node, which announces itself with a handshake
// as a started node does, answers the first keepalive probe with a
// reset. New connections through the forward work again.
func TestForwardEndsWhenPeerRestarts(t *testing.T) {
	const keepalive = 5 * time.Second
	opts := func(i int, o *sidecar.Options) { o.TCPKeepalive = keepalive }
	nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{NodeOptions: opts})
	a, b := nodes[0], nodes[1]
	download := func(c net.Conn) {
		c.Write(make([]byte, 64<<10)) // the start of a download, then nothing
		io.Copy(io.Discard, c)
	}
	f, c := startDownload(t, a, b, download)

	// The far node dies, and is started again 2 s later with the same
	// configuration: its key, its port, node 0 as its peer.
	cfg := *b.Config()
	cfg.Interface.ListenPort = b.ListenPort()
	cfg.Peers = []wgconf.Peer{{
		PublicKey:  a.PublicKey(),
		AllowedIPs: []netip.Prefix{netip.PrefixFrom(sidecartest.Addr4(0), 32)},
		Endpoint:   net.JoinHostPort("127.0.0.1", strconv.Itoa(a.ListenPort())),
	}}
	b.Close()
	gone := time.Now()
	time.Sleep(2 * time.Second)
	o := sidecar.Options{Logger: quiet()}
	opts(1, &o)
	b2, err := sidecar.Start(&cfg, o)
	if err != nil {
		t.Fatalf("restarting the far node: %v", err)
	}
	defer b2.Close()
	ln2, err := b2.Listen("tcp", ":8")
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	testnet.Serve(t, ln2, testnet.EchoSmall)

	_, err = io.Copy(io.Discard, c)
	took := time.Since(gone)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the download did not end within 20 s of its far node going away")
	}
	if err == nil {
		t.Errorf("the cut-off download ended like a whole one (EOF); want a reset")
	}
	t.Logf("ended %v after the far node went away (%v)", took.Round(100*time.Millisecond), err)
	if took > 2*keepalive+5*time.Second { // the bound, with room for a loaded machine
		t.Errorf("the download ended %v after the far node went away; want within twice the keepalive (%v)", took, 2*keepalive)
	}
	// A new connection reaches the restarted node.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := testnet.Exchange(f.Addr().String())
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new connection through the forward 10 s after the restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The cut-off connection gave its place back.
	for open, _ := f.Conns(); open != 0; open, _ = f.Conns() {
		if time.Now().After(deadline.Add(5 * time.Second)) {
			t.Fatalf("%d connections still counted open", open)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startDownload serves handle on b's tunnel port 8, opens a
// [TCPClientTunnel]-style forward from a host port on a to it, connects
// through it and reads the download's first 64 KiB. The forward and the
// connection close at the end of the test; reads time out after 20 s.
func startDownload(t *testing.T, a, b *sidecar.Node, handle func(net.Conn)) (*forward.TCPForward, net.Conn) {
	t.Helper()
	ln, err := b.Listen("tcp", ":8")
	if err != nil {
		t.Fatal(err)
	}
	testnet.Serve(t, ln, handle)
	f, err := forward.ListenTCP("127.0.0.1:0", "10.99.0.2:8", a, 0, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	c, err := net.Dial("tcp", f.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	return f, c
}
