package wgdev

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"

	"github.com/wgsidecar/sidecar/devconf"
	"github.com/wgsidecar/sidecar/internal/leaktest"
	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/internal/wggo"
	"github.com/wgsidecar/sidecar/udpbind"
	"github.com/wgsidecar/sidecar/wgconf"
	"github.com/wgsidecar/sidecar/wgnoise"
)

// The tests in this file run our device against Debian's wireguard-go
// binary, a TUN interface carrying the kernel's own TCP/IP stack, as root.
// The world is two network namespaces joined by a veth pair, made and
// removed by each test: our device's UDP socket is opened in nsA (its
// packets come from and go to a channel in this process), wireguard-go
// runs in nsB, configured with wg, and a UDP socket on nsB's kernel stack
// is the application that talks to our side through the tunnel.
const (
	debUnderOurs   = "10.233.0.1" // nsA: our device's socket
	debUnderTheirs = "10.233.0.2" // nsB: wireguard-go
	debPortOurs    = 51901
	debPortTheirs  = 51900
	debAppPort     = 5000 // the UDP socket on nsB's kernel stack
	debOurPort     = 4000 // the port our side's packets come from
)

// debWorld is one test's world; see above.
type debWorld struct {
	ctx       context.Context
	u         testnet.Underlay
	nsA, nsB  *testnet.Netns
	wgIf      string
	pid       int // wireguard-go's
	dir       string
	ours      *node // our device; addr 10.9.0.1, fd00::1
	theirKey  wgnoise.PrivateKey
	theirPub  wgnoise.PublicKey
	theirAddr netip.Addr // 10.9.0.2 on wireguard-go's interface
	their6    netip.Addr // fd00::2
	app       net.PacketConn
	psk       wgnoise.PresharedKey
}

// debOptions says how a world starts.
type debOptions struct {
	psk         bool // both sides share a fresh preshared key
	theirPSK    bool // wireguard-go gets a different one (mismatch)
	oursKnows   bool // our device is told wireguard-go's endpoint
	theirsKnows bool // wireguard-go is told ours
}

// debSkip skips the test unless Debian's wireguard-go can run here.
func debSkip(t *testing.T) {
	t.Helper()
	if why := wggo.Missing(); why != "" {
		t.Skip(why)
	}
}

func newDebWorld(t *testing.T, o debOptions) *debWorld {
	t.Helper()
	debSkip(t)
	t.Cleanup(leaktest.Check(t)) // runs last: after the device, the sockets and wireguard-go
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	w := &debWorld{
		ctx:       ctx,
		u:         testnet.NewUnderlay(ctx, t, "wgdev", "wdv"),
		wgIf:      fmt.Sprintf("wgdv%d", testnet.ID()),
		dir:       t.TempDir(),
		theirKey:  newKey(t),
		theirAddr: netip.MustParseAddr("10.9.0.2"),
		their6:    netip.MustParseAddr("fd00::2"),
	}
	w.theirPub = w.theirKey.PublicKey()
	if o.psk {
		w.psk = somePSK(t)
	}
	for _, c := range []struct{ ns, dev, addr string }{{w.u.NsA, w.u.VethA, debUnderOurs}, {w.u.NsB, w.u.VethB, debUnderTheirs}} {
		testnet.Run(ctx, t, "ip", "-n", c.ns, "addr", "add", c.addr+"/24", "dev", c.dev)
		testnet.Run(ctx, t, "ip", "-n", c.ns, "link", "set", c.dev, "up")
	}
	w.nsA, w.nsB = testnet.OpenNetns(t, w.u.NsA), testnet.OpenNetns(t, w.u.NsB)

	// Our device, its socket in nsA. Closed after wireguard-go has
	// stopped (cleanups run last first), so nothing answers it late.
	w.ours = &node{key: newKey(t), tun: newChanTUN(), log: &logLines{},
		addr: netip.MustParseAddr("10.9.0.1"), addr6: netip.MustParseAddr("fd00::1")}
	w.ours.pub = w.ours.key.PublicKey()
	w.ours.dev = New(Config{TUN: w.ours.tun, Bind: nsBind{udpbind.New(), w.nsA}, Logger: w.ours.log.logger(t, "ours")})
	t.Cleanup(w.ours.close)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("our device's log:\n%s", w.ours.log.all())
		}
	})
	w.ours.ipcSet(t, fmt.Sprintf("private_key=%s\nlisten_port=%d\n", hexKey(w.ours.key[:]), debPortOurs))
	if err := w.ours.dev.Up(); err != nil {
		t.Fatal(err)
	}
	peer := fmt.Sprintf("public_key=%s\npreshared_key=%s\nallowed_ip=%s/32\nallowed_ip=%s/128\n",
		hexKey(w.theirPub[:]), hexKey(w.psk[:]), w.theirAddr, w.their6)
	if o.oursKnows {
		peer += fmt.Sprintf("endpoint=%s:%d\n", debUnderTheirs, debPortTheirs)
	}
	w.ours.ipcSet(t, peer)

	// wireguard-go in nsB, configured by wg, addresses on its interface.
	w.pid = wggo.Start(t, w.u.NsB, w.wgIf)
	keyFile := w.writeKey(t, "their.key", w.theirKey[:])
	w.wg(t, "set", w.wgIf, "private-key", keyFile, "listen-port", fmt.Sprint(debPortTheirs))
	theirPSK := w.psk
	if o.theirPSK {
		theirPSK = somePSK(t)
	}
	w.addOurPeer(t, theirPSK, o.theirsKnows)
	testnet.Run(ctx, t, "ip", "-n", w.u.NsB, "addr", "add", w.theirAddr.String()+"/24", "dev", w.wgIf)
	testnet.Run(ctx, t, "ip", "-n", w.u.NsB, "-6", "addr", "add", w.their6.String()+"/64", "dev", w.wgIf, "nodad")
	testnet.Run(ctx, t, "ip", "-n", w.u.NsB, "link", "set", w.wgIf, "up")

	// The application on nsB's kernel stack.
	var err error
	w.nsB.Do(func() { w.app, err = net.ListenPacket("udp", fmt.Sprintf(":%d", debAppPort)) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.app.Close() })
	return w
}

// nsBind is a bind whose sockets are opened in a network namespace: the
// device opens it again when it rebinds (a new listen port).
type nsBind struct {
	conn.Bind
	ns *testnet.Netns
}

func (b nsBind) Open(port uint16) (fns []conn.ReceiveFunc, actual uint16, err error) {
	b.ns.Do(func() { fns, actual, err = b.Bind.Open(port) })
	return fns, actual, err
}

func (w *debWorld) writeKey(t *testing.T, name string, key []byte) string {
	t.Helper()
	path := filepath.Join(w.dir, name)
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// addOurPeer makes our device wireguard-go's peer, with psk, reached at
// our underlay address when endpoint is set.
func (w *debWorld) addOurPeer(t *testing.T, psk wgnoise.PresharedKey, endpoint bool) {
	t.Helper()
	args := []string{"set", w.wgIf, "peer", base64.StdEncoding.EncodeToString(w.ours.pub[:]),
		"preshared-key", w.writeKey(t, "psk", psk[:]),
		"allowed-ips", w.ours.addr.String() + "/32," + w.ours.addr6.String() + "/128"}
	if endpoint {
		args = append(args, "endpoint", fmt.Sprintf("%s:%d", debUnderOurs, debPortOurs))
	}
	w.wg(t, args...)
}

// wg runs wireguard-tools' wg in nsB and returns its output.
func (w *debWorld) wg(t *testing.T, args ...string) string {
	t.Helper()
	out, err := testnet.Output(w.ctx, 10*time.Second, "ip", append([]string{"netns", "exec", w.u.NsB, "wg"}, args...)...)
	if err != nil {
		t.Fatalf("wg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// show is `wg show <if> what` for our peer: the fields after its key.
func (w *debWorld) show(t *testing.T, what string) []string {
	t.Helper()
	out := w.wg(t, "show", w.wgIf, what)
	f := strings.Fields(out)
	if len(f) < 2 || f[0] != base64.StdEncoding.EncodeToString(w.ours.pub[:]) {
		t.Fatalf("wg show %s %s = %q; want our peer's line", w.wgIf, what, out)
	}
	return f[1:]
}

// theirHandshake is wireguard-go's latest handshake with us, in seconds.
func (w *debWorld) theirHandshake(t *testing.T) string { return w.show(t, "latest-handshakes")[0] }

// peer is our device's peer wireguard-go.
func (w *debWorld) peer() *peer { return w.ours.dev.lookupPeer(w.theirPub) }

// addrs are the tunnel addresses of our side and theirs, IPv4 or IPv6.
func (w *debWorld) addrs(six bool) (ours, theirs netip.Addr) {
	if six {
		return w.ours.addr6, w.their6
	}
	return w.ours.addr, w.theirAddr
}

// ourSend sends a UDP datagram from our side to the application.
func (w *debWorld) ourSend(t *testing.T, six bool, payload string) {
	t.Helper()
	src, dst := w.addrs(six)
	w.ours.send(t, checkedUDP(netip.AddrPortFrom(src, debOurPort), netip.AddrPortFrom(dst, debAppPort), []byte(payload)))
}

// appRecv waits up to d for the application's next datagram.
func (w *debWorld) appRecv(t *testing.T, d time.Duration) (string, netip.AddrPort) {
	t.Helper()
	buf := make([]byte, 2048)
	_ = w.app.SetReadDeadline(time.Now().Add(d))
	n, from, err := w.app.ReadFrom(buf)
	if err != nil {
		t.Fatalf("the application on the kernel side received nothing: %v", err)
	}
	ap := from.(*net.UDPAddr).AddrPort()
	return string(buf[:n]), netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// appSend sends a datagram from the application to our side.
func (w *debWorld) appSend(t *testing.T, six bool, payload string) {
	t.Helper()
	ours, _ := w.addrs(six)
	if _, err := w.app.WriteTo([]byte(payload), net.UDPAddrFromAddrPort(netip.AddrPortFrom(ours, debOurPort))); err != nil {
		t.Fatalf("application send: %v", err)
	}
}

// ourRecv waits up to d for the next packet delivered to our TUN, and
// checks it is a datagram from the application.
func (w *debWorld) ourRecv(t *testing.T, six bool, d time.Duration) string {
	t.Helper()
	var pkt []byte
	select {
	case pkt = <-w.ours.tun.in:
	case <-time.After(d):
		t.Fatalf("no packet delivered to our side within %v", d)
	}
	src, dst, payload, ok := parseUDP(pkt)
	ours, theirs := w.addrs(six)
	if !ok || src != netip.AddrPortFrom(theirs, debAppPort) || dst != netip.AddrPortFrom(ours, debOurPort) {
		t.Fatalf("delivered %x; want a datagram %v:%d -> %v:%d", pkt, theirs, debAppPort, ours, debOurPort)
	}
	return string(payload)
}

// exchange checks a datagram each way, IPv4 and IPv6, our side speaking
// first when oursFirst.
func (w *debWorld) exchange(t *testing.T, tag string, oursFirst bool) {
	t.Helper()
	for _, six := range []bool{false, true} {
		ours, theirs := w.addrs(six)
		toTheirs := fmt.Sprintf("%s %v->%v", tag, ours, theirs)
		toOurs := fmt.Sprintf("%s %v->%v", tag, theirs, ours)
		recvTheirs := func() {
			if got, from := w.appRecv(t, 10*time.Second); got != toTheirs || from != netip.AddrPortFrom(ours, debOurPort) {
				t.Fatalf("application received %q from %v; want %q from %v:%d", got, from, toTheirs, ours, debOurPort)
			}
		}
		recvOurs := func() {
			if got := w.ourRecv(t, six, 10*time.Second); got != toOurs {
				t.Fatalf("our side received %q; want %q", got, toOurs)
			}
		}
		if oursFirst {
			w.ourSend(t, six, toTheirs)
			recvTheirs()
			w.appSend(t, six, toOurs)
			recvOurs()
		} else {
			w.appSend(t, six, toOurs)
			recvOurs()
			w.ourSend(t, six, toTheirs)
			recvTheirs()
		}
	}
}

// checkedUDP is an IPv4 or IPv6 UDP packet with the checksums the kernel
// checks.
func checkedUDP(src, dst netip.AddrPort, payload []byte) []byte {
	udp := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], payload)
	s, d := src.Addr().AsSlice(), dst.Addr().AsSlice()
	// The pseudo-header: addresses, protocol, UDP length.
	sum := onesSum(onesSum(onesSum(0, s), d), []byte{0, 17, byte(len(udp) >> 8), byte(len(udp))})
	ck := ^fold(onesSum(sum, udp))
	if ck == 0 {
		ck = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:], ck)
	if src.Addr().Is4() {
		h := make([]byte, 20, 20+len(udp))
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(udp)))
		h[8], h[9] = 64, 17
		copy(h[12:], s)
		copy(h[16:], d)
		binary.BigEndian.PutUint16(h[10:], ^fold(onesSum(0, h)))
		return append(h, udp...)
	}
	h := make([]byte, 40, 40+len(udp))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(udp)))
	h[6], h[7] = 17, 64
	copy(h[8:], s)
	copy(h[24:], d)
	return append(h, udp...)
}

func onesSum(sum uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	return sum
}

func fold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

// parseUDP reads an IPv4 or IPv6 (no extension headers) UDP packet.
func parseUDP(pkt []byte) (src, dst netip.AddrPort, payload []byte, ok bool) {
	var s, d netip.Addr
	var off int
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4 && pkt[9] == 17:
		s, d = netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20]))
		off = int(pkt[0]&15) * 4
	case len(pkt) >= 40 && pkt[0]>>4 == 6 && pkt[6] == 17:
		s, d = netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40]))
		off = 40
	default:
		return src, dst, nil, false
	}
	if len(pkt) < off+8 {
		return src, dst, nil, false
	}
	udp := pkt[off:]
	n := int(binary.BigEndian.Uint16(udp[4:]))
	if n < 8 || n > len(udp) {
		return src, dst, nil, false
	}
	return netip.AddrPortFrom(s, binary.BigEndian.Uint16(udp[0:])), netip.AddrPortFrom(d, binary.BigEndian.Uint16(udp[2:])), udp[8:n], true
}

// ourStatus is our device's IpcGet for its peer wireguard-go, parsed as
// the node parses it.
func (w *debWorld) ourStatus(t *testing.T) devconf.PeerStatus {
	t.Helper()
	st, ok := w.ours.status(t).Peers[wgconf.PublicKey(w.theirPub)]
	if !ok {
		t.Fatal("our IpcGet has no peer wireguard-go")
	}
	return st
}

// TestDebianHandshake: a handshake initiated by each side, with and
// without a preshared key, then data both ways over IPv4 and IPv6;
// wireguard-tools and our IpcGet agree on what happened.
func TestDebianHandshake(t *testing.T) {
	debSkip(t)
	for _, tc := range []struct {
		name string
		ours bool // our side initiates
		psk  bool
	}{
		{"ours", true, false}, {"theirs", false, false},
		{"ours-psk", true, true}, {"theirs-psk", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newDebWorld(t, debOptions{psk: tc.psk, oursKnows: tc.ours, theirsKnows: !tc.ours})
			w.exchange(t, "first", tc.ours)
			kp := w.peer().current.Load()
			if kp == nil || kp.Initiator != tc.ours {
				t.Errorf("our session %+v; want one with Initiator %v", kp, tc.ours)
			}
			if hs := w.theirHandshake(t); hs == "0" {
				t.Error("wg show latest-handshakes: none")
			}
			if ep := w.show(t, "endpoints")[0]; ep != fmt.Sprintf("%s:%d", debUnderOurs, debPortOurs) {
				t.Errorf("wg show endpoints: %s; want our %s:%d", ep, debUnderOurs, debPortOurs)
			}
			wantPSK := "(none)"
			if tc.psk {
				wantPSK = base64.StdEncoding.EncodeToString(w.psk[:])
			}
			if got := w.show(t, "preshared-keys")[0]; got != wantPSK {
				t.Errorf("wg show preshared-keys does not show the key given (psk %v)", tc.psk)
			}
			if tr := w.show(t, "transfer"); tr[0] == "0" || tr[1] == "0" {
				t.Errorf("wg show transfer: %v; want bytes both ways", tr)
			}
			st := w.ourStatus(t)
			if st.LastHandshake.IsZero() || st.RxBytes == 0 || st.TxBytes == 0 {
				t.Errorf("our IpcGet: handshake %v rx %d tx %d; want a handshake and bytes both ways", st.LastHandshake, st.RxBytes, st.TxBytes)
			}
			if want := netip.AddrPortFrom(netip.MustParseAddr(debUnderTheirs), debPortTheirs); st.Endpoint != want {
				t.Errorf("our endpoint of wireguard-go: %v; want %v", st.Endpoint, want)
			}
		})
	}
}

// TestDebianPSKMismatch: with different preshared keys wireguard-go's
// response fails to authenticate and no session comes up: the key is in
// use, not only stored.
func TestDebianPSKMismatch(t *testing.T) {
	w := newDebWorld(t, debOptions{psk: true, theirPSK: true, oursKnows: true})
	w.ourSend(t, false, "never arrives")
	for deadline := time.Now().Add(10 * time.Second); !w.ours.log.has("Received invalid response message from %s"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no refused response from wireguard-go within 10 s")
		}
	}
	if kp := w.peer().current.Load(); kp != nil {
		t.Error("a session came up with mismatched preshared keys")
	}
	_ = w.app.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _, err := w.app.ReadFrom(make([]byte, 2048)); err == nil {
		t.Errorf("the application received %d bytes over a mismatched key", n)
	}
}

// TestDebianRekey: a new session while traffic flows, started by each
// side: ours by Rekey-After-Time (shortened to 2 s), wireguard-go's after
// our peer was removed from it and added again. Not a datagram is lost.
func TestDebianRekey(t *testing.T) {
	debSkip(t)
	t.Run("ours", func(t *testing.T) {
		setDuration(t, &rekeyAfterTime, 2*time.Second)
		setDuration(t, &rekeyTimeout, time.Second) // at most one initiation a second
		w := newDebWorld(t, debOptions{oursKnows: true})
		w.exchange(t, "before", true)
		first := w.peer().current.Load()
		hsBefore := w.theirHandshake(t)
		// 3.5 s of a datagram each way every 50 ms, each checked as it
		// arrives.
		n := 0
		for start := time.Now(); time.Since(start) < 3500*time.Millisecond; time.Sleep(50 * time.Millisecond) {
			n++
			msg := fmt.Sprintf("flow %d", n)
			w.ourSend(t, n%2 == 0, msg)
			if got, _ := w.appRecv(t, 5*time.Second); got != msg {
				t.Fatalf("application received %q; want %q", got, msg)
			}
			w.appSend(t, n%2 == 0, msg)
			if got := w.ourRecv(t, n%2 == 0, 5*time.Second); got != msg {
				t.Fatalf("our side received %q; want %q", got, msg)
			}
		}
		cur := w.peer().current.Load()
		if cur == first || !cur.Initiator {
			t.Fatalf("no new session of ours as initiator after %d datagrams each way", n)
		}
		if hs := w.theirHandshake(t); hs == hsBefore {
			t.Errorf("wireguard-go's latest handshake still %s", hs)
		}
		if !w.ours.log.has("%s - Received handshake response") {
			t.Error("no response logged")
		}
		w.exchange(t, "after", false)
	})
	t.Run("theirs", func(t *testing.T) {
		w := newDebWorld(t, debOptions{theirsKnows: true})
		w.exchange(t, "before", false)
		first := w.peer().current.Load()
		before := w.ourStatus(t).LastHandshake
		w.wg(t, "set", w.wgIf, "peer", base64.StdEncoding.EncodeToString(w.ours.pub[:]), "remove")
		if out := w.wg(t, "show", w.wgIf, "peers"); strings.TrimSpace(out) != "" {
			t.Fatalf("our peer still in wireguard-go: %q", out)
		}
		w.addOurPeer(t, w.psk, true)
		time.Sleep(10 * time.Millisecond) // our last_handshake has nanoseconds; make a change visible
		w.exchange(t, "after", false)     // wireguard-go has no session: it initiates
		cur := w.peer().current.Load()
		if cur == first || cur.Initiator {
			t.Errorf("no new session of ours as responder")
		}
		if after := w.ourStatus(t).LastHandshake; !after.After(before) {
			t.Errorf("our last handshake %v; want after %v", after, before)
		}
		if n := countLines(w.ours.log, "%s - Received handshake initiation"); n != 2 {
			t.Errorf("%d initiations accepted; want 2", n)
		}
	})
}

// TestDebianRoaming: each side moves to a new port; the other learns it
// from the next authenticated packet and answers there.
func TestDebianRoaming(t *testing.T) {
	debSkip(t)
	t.Run("theirs", func(t *testing.T) {
		w := newDebWorld(t, debOptions{oursKnows: true})
		w.exchange(t, "before", true)
		w.wg(t, "set", w.wgIf, "listen-port", "51910")
		w.exchange(t, "after", false) // wireguard-go speaks first, from its new port
		if ep, want := w.ourStatus(t).Endpoint, netip.MustParseAddrPort(debUnderTheirs+":51910"); ep != want {
			t.Errorf("our endpoint of wireguard-go: %v; want %v", ep, want)
		}
	})
	t.Run("ours", func(t *testing.T) {
		w := newDebWorld(t, debOptions{oursKnows: true})
		w.exchange(t, "before", true)
		w.ours.ipcSet(t, "listen_port=51911\n")
		if p := w.ours.listenPort(t); p != 51911 {
			t.Fatalf("our listen port %d; want 51911", p)
		}
		w.exchange(t, "after", true) // we speak first, from our new port
		want := fmt.Sprintf("%s:51911", debUnderOurs)
		if ep := w.show(t, "endpoints")[0]; ep != want {
			t.Errorf("wg show endpoints: %s; want %s", ep, want)
		}
	})
}

// TestDebianCookie: cookies under load, both ways.
func TestDebianCookie(t *testing.T) {
	debSkip(t)
	// Ours under load (the test hook), wireguard-go initiating: our
	// cookie reply makes it retry, after its Rekey-Timeout (5 s), with a
	// mac2 we accept.
	t.Run("ours-theirs-initiate", func(t *testing.T) {
		w := newDebWorld(t, debOptions{theirsKnows: true})
		w.ours.dev.forceUnderLoad.Store(true)
		w.appSend(t, false, "under load")
		if got := w.ourRecv(t, false, 15*time.Second); got != "under load" {
			t.Fatalf("our side received %q", got)
		}
		w.ours.dev.forceUnderLoad.Store(false)
		w.exchange(t, "after", true)
		if n := countLines(w.ours.log, "Sending cookie response for denied handshake message for %v"); n < 1 {
			t.Error("no cookie reply sent")
		}
		if n := countLines(w.ours.log, "%s - Received handshake initiation"); n != 1 {
			t.Errorf("%d initiations accepted, want 1 (the one with mac2)", n)
		}
	})
	// Ours under load, ours initiating: wireguard-go's response without
	// mac2 gets a cookie reply; our retry (Rekey-Timeout shortened)
	// gets a response with a mac2 we accept.
	t.Run("ours-we-initiate", func(t *testing.T) {
		setDuration(t, &rekeyTimeout, 500*time.Millisecond)
		w := newDebWorld(t, debOptions{oursKnows: true})
		w.ours.dev.forceUnderLoad.Store(true)
		w.ourSend(t, false, "under load")
		if got, _ := w.appRecv(t, 10*time.Second); got != "under load" {
			t.Fatalf("application received %q", got)
		}
		w.ours.dev.forceUnderLoad.Store(false)
		w.exchange(t, "after", true)
		if n := countLines(w.ours.log, "Sending cookie response for denied handshake message for %v"); n < 1 {
			t.Error("no cookie reply sent")
		}
		if n := countLines(w.ours.log, "%s - Sending handshake initiation"); n < 2 {
			t.Errorf("%d initiations sent; want a retry after the cookie reply", n)
		}
		if n := countLines(w.ours.log, "%s - Received handshake response"); n != 1 {
			t.Errorf("%d responses accepted, want 1 (the one with mac2)", n)
		}
	})
	// wireguard-go under load: a flood of junk initiations (valid mac1,
	// so each costs it a Diffie-Hellman) fills its handshake queue past
	// an eighth; our initiation gets a cookie reply, which we consume,
	// and our retry carries a mac2 that gets in.
	t.Run("theirs", func(t *testing.T) {
		setDuration(t, &rekeyTimeout, 500*time.Millisecond)
		w := newDebWorld(t, debOptions{oursKnows: true})
		// wireguard-go runs a handshake worker per CPU; on one CPU, on a
		// machine of any size, they cannot keep up with the flood.
		pinToOneCPU(t, w.pid)
		fl := startFlood(t, w)
		// wireguard-go answers junk with cookie replies only under load.
		waitFor(t, "wireguard-go under load (a cookie reply to the flood)", func() bool { return fl.replies.Load() > 0 })
		w.ourSend(t, false, "through the flood")
		if got, _ := w.appRecv(t, 20*time.Second); got != "through the flood" {
			t.Fatalf("application received %q", got)
		}
		during := fl.replies.Load()
		time.Sleep(100 * time.Millisecond)
		fl.settle(t)
		fl.stop()
		if fl.replies.Load() <= during {
			t.Error("wireguard-go sent the flood no cookie reply after our handshake: it may not have been under load then")
		}
		t.Logf("flood: %d junk initiations sent, %d cookie replies", fl.sent.Load(), fl.replies.Load())
		if n := countLines(w.ours.log, "%s - Sending handshake initiation"); n < 2 {
			t.Errorf("%d initiations sent; want a retry after the cookie reply", n)
		}
		if w.ours.log.has("Could not decrypt invalid cookie response") {
			t.Error("a cookie reply from wireguard-go was refused")
		}
		if !w.peerHoldsCookie() {
			t.Error("no cookie held from wireguard-go's cookie reply")
		}
		w.exchange(t, "after", true)
	})
}

// peerHoldsCookie says whether our peer holds a fresh cookie: the mac2 it
// would stamp on a message is not zero.
func (w *debWorld) peerHoldsCookie() bool {
	p := w.peer()
	var msg [wgnoise.InitiationSize]byte
	p.hsMu.Lock()
	p.cookies.Stamp(msg[:], time.Now())
	p.hsMu.Unlock()
	for _, b := range msg[wgnoise.InitiationSize-16:] {
		if b != 0 {
			return true
		}
	}
	return false
}

// pinToOneCPU confines every thread of process pid (and so those it makes
// later) to one of the CPUs this process may use.
func pinToOneCPU(t *testing.T, pid int) {
	t.Helper()
	var mine, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &mine); err != nil {
		t.Fatal(err)
	}
	for cpu := 0; cpu < 1024; cpu++ {
		if mine.IsSet(cpu) {
			one.Set(cpu)
			break
		}
	}
	if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err != nil || strings.TrimSpace(string(comm)) != "wireguard-go" {
		t.Fatalf("process %d is %q (%v), not wireguard-go", pid, comm, err)
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		tid, err := strconv.Atoi(task.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &one); err != nil {
			t.Fatalf("pinning wireguard-go's thread %d: %v", tid, err)
		}
	}
}

// flood sends junk initiations at wireguard-go from a socket on nsB's
// kernel stack, in bursts, and counts the cookie replies it gets.
type flood struct {
	c        *net.UDPConn
	sent     atomic.Int64
	replies  atomic.Int64
	done     chan struct{}
	quiet    chan struct{} // closed to stop sending, still counting replies
	quietOne sync.Once
	wg       sync.WaitGroup
}

func startFlood(t *testing.T, w *debWorld) *flood {
	t.Helper()
	fl := &flood{done: make(chan struct{}), quiet: make(chan struct{})}
	var err error
	w.nsB.Do(func() {
		fl.c, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(fmt.Sprintf("%s:%d", debUnderTheirs, debPortTheirs))))
	})
	if err != nil {
		t.Fatal(err)
	}
	// Junk of the right size and type, each with a valid mac1: anyone
	// who knows wireguard-go's public key can make one.
	stamp := wgnoise.NewCookies(w.theirPub)
	junk := make([][]byte, 16)
	for i := range junk {
		junk[i] = make([]byte, wgnoise.InitiationSize)
		if _, err := rand.Read(junk[i]); err != nil {
			t.Fatal(err)
		}
		binary.LittleEndian.PutUint32(junk[i], wgnoise.TypeInitiation)
		stamp.Stamp(junk[i], time.Now())
	}
	fl.wg.Add(2)
	go func() {
		defer fl.wg.Done()
		for {
			for i := range 600 {
				if _, err := fl.c.Write(junk[i%len(junk)]); err == nil {
					fl.sent.Add(1)
				}
			}
			select {
			case <-fl.done:
				return
			case <-fl.quiet:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	go func() {
		defer fl.wg.Done()
		buf := make([]byte, 2048)
		for {
			n, err := fl.c.Read(buf)
			if err != nil {
				select {
				case <-fl.done:
					return
				default:
					continue // ICMP errors while wireguard-go rebinds, say
				}
			}
			if typ, ok := wgnoise.MessageType(buf[:n]); ok && typ == wgnoise.TypeCookieReply {
				fl.replies.Add(1)
			}
		}
	}()
	t.Cleanup(fl.stop)
	return fl
}

// settle stops sending junk and waits until wireguard-go has worked off
// what it queued (no cookie reply for 500 ms; at most a minute): on one
// CPU, on a busy machine, that takes seconds, and until then our data
// waits behind the junk.
func (fl *flood) settle(t *testing.T) {
	fl.quietOne.Do(func() { close(fl.quiet) })
	last, deadline := fl.replies.Load(), time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		now := fl.replies.Load()
		if now == last {
			return
		}
		last = now
	}
	t.Log("wireguard-go still answering the flood after a minute")
}

// stop ends the flood (more than once is fine).
func (fl *flood) stop() {
	select {
	case <-fl.done:
		return
	default:
	}
	close(fl.done)
	fl.c.Close()
	fl.wg.Wait()
}
