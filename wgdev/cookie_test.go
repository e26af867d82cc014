package wgdev

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/internal/leaktest"
	"github.com/wgsidecar/sidecar/wgnoise"
)

// TestCookieUnderLoadInterop: our device under load answers wireguard-go's
// initiation without mac2 with a cookie reply; wireguard-go retries with a
// valid mac2 and gets in.
func TestCookieUnderLoadInterop(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	a, b := pair(t, newTheirs, newOurs, wgnoise.PresharedKey{})
	b.dev.forceUnderLoad.Store(true)
	exchange(t, a, b, "under load") // wireguard-go's retry comes after its Rekey-Timeout, 5 s
	if !b.log.has("Sending cookie response for denied handshake message for %v") {
		t.Errorf("no cookie reply sent:\n%s", b.log.all())
	}
	if n := countLines(b.log, "%s - Received handshake initiation"); n != 1 {
		t.Errorf("%d initiations accepted, want 1 (the one with mac2)", n)
	}
}

func countLines(l *logLines, format string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		if len(s) > len(format) && s[:len(format)+1] == format+"\t" {
			n++
		}
	}
	return n
}

// TestUnderLoad: the device is under load while its handshake queue is
// an eighth full, and for underLoadAfter after.
func TestUnderLoad(t *testing.T) {
	d := &Device{hsQueue: make(chan handshakeMsg, handshakeQueueSize)}
	now := time.Now()
	if d.isUnderLoad(now) {
		t.Fatal("under load with an empty queue")
	}
	for range handshakeQueueSize / 8 {
		d.hsQueue <- handshakeMsg{}
	}
	if !d.isUnderLoad(now) {
		t.Fatal("not under load with the queue an eighth full")
	}
	for len(d.hsQueue) > 0 {
		<-d.hsQueue
	}
	if !d.isUnderLoad(now.Add(underLoadAfter - time.Millisecond)) {
		t.Error("not under load just after the queue drained")
	}
	if d.isUnderLoad(now.Add(underLoadAfter + time.Millisecond)) {
		t.Error("still under load after underLoadAfter")
	}
}

// TestBadMAC1Dropped: an initiation with a wrong mac1 gets no answer, not
// even a cookie reply under load.
func TestBadMAC1Dropped(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	b := newOurs(t, 2)
	defer b.close()
	b.dev.forceUnderLoad.Store(true)
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), b.port)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := make([]byte, wgnoise.InitiationSize)
	msg[0] = wgnoise.TypeInitiation
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, err := c.Read(make([]byte, 2048)); err == nil {
		t.Errorf("answered a bad mac1 with %d bytes", n)
	}
	if !b.log.has("Received packet with invalid mac1") {
		t.Errorf("bad mac1 not logged:\n%s", b.log.all())
	}
}
