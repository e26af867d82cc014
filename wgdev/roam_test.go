package wgdev

import (
	"fmt"
	"sync"
	"testing"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/wgsidecar/sidecar/internal/leaktest"
	"github.com/wgsidecar/sidecar/udpbind"
	"github.com/wgsidecar/sidecar/wgnoise"
)

// endpointSpyTUN is a chanTUN that notes, at each delivery, the endpoint
// its device has for its (only) peer.
type endpointSpyTUN struct {
	*chanTUN
	dev  *Device // set before the device is up
	mu   sync.Mutex
	seen string // at the last delivery
}

func (s *endpointSpyTUN) Write(bufs [][]byte, offset int) (int, error) {
	ep := "none"
	if peers := s.dev.peerList(); len(peers) == 1 && peers[0].endpointOf() != nil {
		ep = peers[0].endpointOf().DstToString()
	}
	s.mu.Lock()
	s.seen = ep
	s.mu.Unlock()
	return s.chanTUN.Write(bufs, offset)
}

// TestRoamBeforeDelivery: a peer's endpoint moves to where a packet came
// from before the packet reaches the TUN, as wireguard-go does, so the
// application's immediate reply goes to the peer's new address, not the
// one it just left.
func TestRoamBeforeDelivery(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	spy := &endpointSpyTUN{chanTUN: newChanTUN()}
	mkOurs := func(t testing.TB, n byte) *node {
		nd := newOursOn(t, n, spy.chanTUN, spy)
		spy.dev = nd.dev
		return nd
	}
	a, b := pair(t, mkOurs, newTheirs, wgnoise.PresharedKey{})
	exchange(t, a, b, "before")
	b.ipcSet(t, "listen_port=0\n")
	b.port = b.listenPort(t)
	b.send(t, udpPacket(b.addr, a.addr, []byte("from the new port")))
	a.recv(t)
	spy.mu.Lock()
	seen := spy.seen
	spy.mu.Unlock()
	if want := fmt.Sprintf("127.0.0.1:%d", b.port); seen != want {
		t.Errorf("when the packet was delivered our endpoint of the peer was %s; want its new %s", seen, want)
	}
}

// newOursOn is newOurs with the device writing to dev, a TUN that passes
// its packets on to in, which the node receives from.
func newOursOn(t testing.TB, n byte, in *chanTUN, dev tun.Device) *node {
	t.Helper()
	nd := &node{key: newKey(t), tun: in, log: &logLines{}}
	nd.pub = nd.key.PublicKey()
	nd.addr, nd.addr6 = netipMust(fmt.Sprintf("10.9.0.%d", n)), netipMust(fmt.Sprintf("fd00::%d", n))
	nd.dev = New(Config{TUN: dev, Bind: udpbind.New(), Logger: nd.log.logger(t, "ours")})
	nd.ipcSet(t, "private_key="+hexKey(nd.key[:])+"\nlisten_port=0\n")
	if err := nd.dev.Up(); err != nil {
		t.Fatal(err)
	}
	nd.port = nd.listenPort(t)
	return nd
}
