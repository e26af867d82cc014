package wgdev

import (
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/internal/leaktest"
	"github.com/wgsidecar/sidecar/wgconf"
	"github.com/wgsidecar/sidecar/wgnoise"
)

// setDuration shortens a protocol duration for one test.
func setDuration(t *testing.T, v *time.Duration, d time.Duration) {
	old := *v
	*v = d
	t.Cleanup(func() { *v = old })
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (nd *node) peerStatus(t *testing.T, other *node) (ps struct {
	handshake time.Time
	port      uint16
	rx, tx    uint64
}) {
	t.Helper()
	s := nd.status(t).Peers[wgconf.PublicKey(other.pub)]
	ps.handshake, ps.port, ps.rx, ps.tx = s.LastHandshake, s.Endpoint.Port(), s.RxBytes, s.TxBytes
	return ps
}

// TestRekeyInterop: with Rekey-After-Time shortened, our side starts a new
// handshake with wireguard-go while traffic flows, and traffic carries on
// under the new session.
func TestRekeyInterop(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	setDuration(t, &rekeyAfterTime, time.Second)
	setDuration(t, &rekeyTimeout, 500*time.Millisecond) // one initiation per Rekey-Timeout
	a, b := pair(t, newOurs, newTheirs, wgnoise.PresharedKey{})
	exchange(t, a, b, "before")
	p := a.dev.lookupPeer(b.pub)
	first := p.current.Load()
	time.Sleep(1100 * time.Millisecond)
	a.send(t, udpPacket(a.addr, b.addr, []byte("triggers the rekey")))
	b.recv(t)
	waitFor(t, "a new session", func() bool { return p.current.Load() != first })
	if !first.Initiator || !p.current.Load().Initiator {
		t.Error("sessions not ours as initiator")
	}
	exchange(t, a, b, "after")
}

// TestReinitiateAfterReAdd: wireguard-go, having removed our peer and
// added it again, initiates a new handshake; we accept it.
func TestReinitiateAfterReAdd(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	a, b := pair(t, newTheirs, newOurs, wgnoise.PresharedKey{})
	exchange(t, a, b, "before")
	before := b.peerStatus(t, a).handshake
	a.ipcSet(t, "public_key="+hexKey(b.pub[:])+"\nremove=true\n")
	a.peerWith(t, b, wgnoise.PresharedKey{}, true)
	time.Sleep(10 * time.Millisecond) // last_handshake has nanoseconds; make the change visible
	exchange(t, a, b, "after")
	if after := b.peerStatus(t, a).handshake; !after.After(before) {
		t.Errorf("our last handshake %v, want after %v", after, before)
	}
}

// TestRoaming: one side's bind moves to a new port (ours through
// listen_port, wireguard-go's through its own); the other learns it from
// the mover's next packet.
func TestRoaming(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	for _, tc := range []struct {
		mover               string
		newStayer, newMover func(testing.TB, byte) *node
	}{{"ours", newTheirs, newOurs}, {"wireguard-go's", newOurs, newTheirs}} {
		t.Run(tc.mover, func(t *testing.T) {
			stayer, mover := pair(t, tc.newStayer, tc.newMover, wgnoise.PresharedKey{})
			exchange(t, stayer, mover, "before")
			old := mover.port
			mover.ipcSet(t, "listen_port=0\n")
			mover.port = mover.listenPort(t)
			if mover.port == old {
				t.Fatalf("still on port %d", old)
			}
			exchange(t, mover, stayer, "after") // the mover speaks first
			if got := stayer.peerStatus(t, mover).port; got != mover.port {
				t.Errorf("the other side has the mover's endpoint on port %d, want %d", got, mover.port)
			}
		})
	}
}

// TestPersistentKeepaliveInterop: turning the persistent keepalive on
// starts a handshake at once, with no data, and keepalives follow every
// interval.
func TestPersistentKeepaliveInterop(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	a, b := pair(t, newOurs, newTheirs, wgnoise.PresharedKey{})
	a.ipcSet(t, "public_key="+hexKey(b.pub[:])+"\nupdate_only=true\npersistent_keepalive_interval=1\n")
	waitFor(t, "a handshake", func() bool { return !b.peerStatus(t, a).handshake.IsZero() })
	rx := b.peerStatus(t, a).rx
	time.Sleep(2500 * time.Millisecond)
	if got := b.peerStatus(t, a).rx - rx; got < 2*wgnoise.KeepaliveSize {
		t.Errorf("wireguard-go received %d bytes in 2.5 s, want at least two keepalives", got)
	}
}
