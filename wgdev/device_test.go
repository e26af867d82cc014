package wgdev

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/wgsidecar/sidecar/internal/leaktest"
	"github.com/wgsidecar/sidecar/udpbind"
	"github.com/wgsidecar/sidecar/wgconf"
	"github.com/wgsidecar/sidecar/wgnoise"
)

// pair makes two nodes by the given constructors, each the other's peer;
// only a knows b's endpoint (b learns a's from the handshake).
func pair(t *testing.T, mkA, mkB func(testing.TB, byte) *node, psk wgnoise.PresharedKey) (a, b *node) {
	t.Helper()
	a, b = mkA(t, 1), mkB(t, 2)
	t.Cleanup(a.close)
	t.Cleanup(b.close)
	a.peerWith(t, b, psk, true)
	b.peerWith(t, a, psk, false)
	return a, b
}

func somePSK(t *testing.T) wgnoise.PresharedKey {
	k := newKey(t)
	return wgnoise.PresharedKey(k)
}

func TestDeviceToDevice(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	for _, tc := range []struct {
		name string
		psk  bool
	}{{"plain", false}, {"psk", true}} {
		t.Run(tc.name, func(t *testing.T) {
			var psk wgnoise.PresharedKey
			if tc.psk {
				psk = somePSK(t)
			}
			a, b := pair(t, newOurs, newOurs, psk)
			exchange(t, a, b, "first") // a's first packet is staged until the handshake is done
			checkStatus(t, a, b, true)
			checkStatus(t, b, a, false)
		})
	}
}

// checkStatus checks nd's IpcGet, parsed as the node parses it, for its
// peer other: a handshake, bytes both ways, other's endpoint on loopback.
func checkStatus(t *testing.T, nd, other *node, endpointPort bool) {
	t.Helper()
	st := nd.status(t)
	ps, ok := st.Peers[wgconf.PublicKey(other.pub)]
	if !ok {
		t.Fatalf("status has no peer %x: %+v", other.pub, st)
	}
	if ps.LastHandshake.IsZero() || time.Since(ps.LastHandshake) > time.Minute {
		t.Errorf("last handshake %v, want just now", ps.LastHandshake)
	}
	if ps.RxBytes == 0 || ps.TxBytes == 0 {
		t.Errorf("rx %d tx %d bytes, want both > 0", ps.RxBytes, ps.TxBytes)
	}
	if !ps.Endpoint.Addr().IsLoopback() || (endpointPort && ps.Endpoint.Port() != other.port) {
		t.Errorf("endpoint %v, want 127.0.0.1:%d", ps.Endpoint, other.port)
	}
	if st.ListenPort != int(nd.port) || nd.port == 0 {
		t.Errorf("listen port %d, want %d", st.ListenPort, nd.port)
	}
}

// TestInterop runs our device against wireguard-go's, each side
// initiating, with and without a preshared key.
func TestInterop(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	for _, tc := range []struct {
		name     string
		mkA, mkB func(testing.TB, byte) *node
		psk      bool
	}{
		{"we initiate", newOurs, newTheirs, false},
		{"they initiate", newTheirs, newOurs, false},
		{"we initiate psk", newOurs, newTheirs, true},
		{"they initiate psk", newTheirs, newOurs, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var psk wgnoise.PresharedKey
			if tc.psk {
				psk = somePSK(t)
			}
			a, b := pair(t, tc.mkA, tc.mkB, psk)
			exchange(t, a, b, tc.name)
			checkStatus(t, a, b, true)
			checkStatus(t, b, a, false)
		})
	}
}

// TestPSKMismatch: with different preshared keys no session comes up.
func TestPSKMismatch(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	a, b := newOurs(t, 1), newTheirs(t, 2)
	defer a.close()
	defer b.close()
	a.peerWith(t, b, somePSK(t), true)
	b.peerWith(t, a, somePSK(t), false)
	a.send(t, udpPacket(a.addr, b.addr, []byte("x")))
	select {
	case p := <-b.wtun.Inbound:
		t.Fatalf("delivered %x despite different preshared keys", p)
	case <-time.After(1500 * time.Millisecond):
	}
	if ps := a.status(t).Peers[wgconf.PublicKey(b.pub)]; !ps.LastHandshake.IsZero() {
		t.Errorf("handshake at %v despite different preshared keys", ps.LastHandshake)
	}
}

// TestSourceNotAllowed: a packet whose source is outside the sender's
// allowed IPs is dropped and logged with the line the monitor matches.
func TestSourceNotAllowed(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	a, b := pair(t, newOurs, newTheirs, wgnoise.PresharedKey{})
	exchange(t, a, b, "up")
	// b's wireguard-go only needs a route to a; the source 10.9.0.99 is
	// not among b's allowed IPs at a.
	b.send(t, udpPacket(netipMust("10.9.0.99"), a.addr, []byte("spoofed")))
	b.send(t, udpPacket(netipMust("fd00::99"), a.addr6, []byte("spoofed6")))
	b.send(t, udpPacket(b.addr, a.addr, []byte("fine")))
	if got := a.recv(t); string(got[28:]) != "fine" {
		t.Fatalf("delivered %q, want only the allowed packet", got[28:])
	}
	for _, f := range []string{"IPv4 packet with disallowed source address from %v", "IPv6 packet with disallowed source address from %v"} {
		if !a.log.has(f) {
			t.Errorf("no log line %q:\n%s", f, a.log.all())
		}
	}
}

// TestUnknownInitiator: an initiation from a key that is no peer is
// refused with the line the monitor matches.
func TestUnknownInitiator(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	a, b := newOurs(t, 1), newTheirs(t, 2)
	defer a.close()
	defer b.close()
	b.peerWith(t, a, wgnoise.PresharedKey{}, true) // a does not know b
	b.send(t, udpPacket(b.addr, a.addr, []byte("x")))
	deadline := time.Now().Add(5 * time.Second)
	for !a.log.has("Received invalid initiation message from %s") {
		if time.Now().After(deadline) {
			t.Fatalf("no refusal logged:\n%s", a.log.all())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSendAfterClose(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	a := newOurs(t, 1)
	a.close()
	if err := a.dev.Send([][]byte{make([]byte, 64)}, SendOffset); err != ErrClosed {
		t.Errorf("Send after Close: %v, want ErrClosed", err)
	}
	if err := a.dev.Up(); err != ErrClosed {
		t.Errorf("Up after Close: %v, want ErrClosed", err)
	}
}

// TestReadTUN: with ReadTUN the device reads its outbound packets from a
// TUN that cannot push them (wireguard-go's channel TUN here) and sends
// them; Close ends the reading goroutine.
func TestReadTUN(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	theirs := newTheirs(t, 2)
	defer theirs.close()
	ours := &node{key: newKey(t), wtun: tuntest.NewChannelTUN(), log: &logLines{}}
	ours.pub = ours.key.PublicKey()
	ours.addr, ours.addr6 = netip.AddrFrom4([4]byte{10, 9, 0, 1}), netip.MustParseAddr("fd00::1")
	ours.dev = New(Config{TUN: ours.wtun.TUN(), Bind: udpbind.New(), Logger: ours.log.logger(t, "ours"), ReadTUN: true})
	defer ours.dev.Close()
	ours.ipcSet(t, "private_key="+hexKey(ours.key[:])+"\nlisten_port=0\n")
	if err := ours.dev.Up(); err != nil {
		t.Fatal(err)
	}
	ours.port = ours.listenPort(t)
	ours.peerWith(t, theirs, wgnoise.PresharedKey{}, true)
	theirs.peerWith(t, ours, wgnoise.PresharedKey{}, false)
	for i := range 3 {
		want := udpPacket(ours.addr, theirs.addr, []byte(fmt.Sprintf("read from the TUN %d", i)))
		ours.wtun.Outbound <- want
		if got := theirs.recv(t); !bytes.Equal(got, want) {
			t.Fatalf("wireguard-go got %x, want %x", got, want)
		}
	}
}
