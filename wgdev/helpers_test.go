package wgdev

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/wgsidecar/sidecar/devconf"
	"github.com/wgsidecar/sidecar/udpbind"
	"github.com/wgsidecar/sidecar/wgconf"
	"github.com/wgsidecar/sidecar/wgnoise"
)

// chanTUN is the tun.Device stand-in of our side: Write copies each packet
// into a buffered channel.
type chanTUN struct {
	in     chan []byte
	once   sync.Once
	closed chan struct{}
	// slow, if set, is how long (ns) each Write of a batch of at least
	// 8 packets takes (TestDeliveryOrder).
	slow atomic.Int64
	// gate, if set, holds each Write of a batch of at least 8 packets
	// until it is closed (TestReceiveAheadOfDelivery).
	gate atomic.Pointer[chan struct{}]
}

func newChanTUN() *chanTUN {
	return &chanTUN{in: make(chan []byte, 4096), closed: make(chan struct{})}
}

func (c *chanTUN) File() *os.File                         { return nil }
func (c *chanTUN) Read([][]byte, []int, int) (int, error) { <-c.closed; return 0, os.ErrClosed }
func (c *chanTUN) Write(bufs [][]byte, offset int) (int, error) {
	if d := time.Duration(c.slow.Load()); len(bufs) >= 8 && d > 0 {
		time.Sleep(d)
	}
	if g := c.gate.Load(); g != nil && len(bufs) >= 8 {
		<-*g
	}
	for _, b := range bufs {
		select {
		case c.in <- append([]byte(nil), b[offset:]...):
		default: // a full channel drops, like a full queue
		}
	}
	return len(bufs), nil
}
func (c *chanTUN) MTU() (int, error)        { return 1420, nil }
func (c *chanTUN) Name() (string, error)    { return "chantun", nil }
func (c *chanTUN) Events() <-chan tun.Event { return nil }
func (c *chanTUN) Close() error             { c.once.Do(func() { close(c.closed) }); return nil }
func (c *chanTUN) BatchSize() int           { return 128 }

// recv waits for the next delivered packet.
func (c *chanTUN) recv(t testing.TB) []byte {
	t.Helper()
	select {
	case p := <-c.in:
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("no packet delivered within 10 s")
		return nil
	}
}

// logLines records the device's verbose log, format and line.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logger(t testing.TB, name string) *device.Logger {
	f := func(format string, args ...any) {
		l.mu.Lock()
		l.lines = append(l.lines, format+"\t"+fmt.Sprintf(format, args...))
		l.mu.Unlock()
	}
	return &device.Logger{Verbosef: f, Errorf: f}
}

// has reports whether a line with this format was logged.
func (l *logLines) has(format string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		if strings.HasPrefix(s, format+"\t") {
			return true
		}
	}
	return false
}

func (l *logLines) all() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func newKey(t testing.TB) wgnoise.PrivateKey {
	t.Helper()
	k, err := wgconf.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return wgnoise.PrivateKey(k)
}

func hexKey(k []byte) string { return hex.EncodeToString(k) }

// node is one side of a test: our device or wireguard-go's.
type node struct {
	key   wgnoise.PrivateKey
	pub   wgnoise.PublicKey
	addr  netip.Addr // its tunnel address (IPv4)
	addr6 netip.Addr
	port  uint16

	dev  *Device        // ours
	tun  *chanTUN       // ours
	log  *logLines      // ours
	wg   *device.Device // wireguard-go's
	wtun *tuntest.ChannelTUN
}

// newOurs makes one of our devices, up on a free port of the project's bind.
func newOurs(t testing.TB, n byte) *node {
	t.Helper()
	nd := &node{key: newKey(t), tun: newChanTUN(), log: &logLines{}}
	nd.pub = nd.key.PublicKey()
	nd.addr = netip.AddrFrom4([4]byte{10, 9, 0, n})
	nd.addr6 = netip.MustParseAddr(fmt.Sprintf("fd00::%d", n))
	nd.dev = New(Config{TUN: nd.tun, Bind: udpbind.New(), Logger: nd.log.logger(t, "ours")})
	if err := nd.dev.IpcSet("private_key=" + hexKey(nd.key[:]) + "\nlisten_port=0\n"); err != nil {
		t.Fatal(err)
	}
	if err := nd.dev.Up(); err != nil {
		t.Fatal(err)
	}
	nd.port = nd.listenPort(t)
	return nd
}

// newTheirs makes a wireguard-go device, up on a free port of its own bind.
func newTheirs(t testing.TB, n byte) *node {
	t.Helper()
	nd := &node{key: newKey(t), wtun: tuntest.NewChannelTUN()}
	nd.pub = nd.key.PublicKey()
	nd.addr = netip.AddrFrom4([4]byte{10, 9, 0, n})
	nd.addr6 = netip.MustParseAddr(fmt.Sprintf("fd00::%d", n))
	logger := device.NewLogger(device.LogLevelSilent, "")
	if testing.Verbose() {
		logger = device.NewLogger(device.LogLevelVerbose, fmt.Sprintf("wg-go %d: ", n))
	}
	nd.wg = device.NewDevice(nd.wtun.TUN(), conn.NewStdNetBind(), logger)
	if err := nd.wg.IpcSet("private_key=" + hexKey(nd.key[:]) + "\nlisten_port=0\n"); err != nil {
		t.Fatal(err)
	}
	if err := nd.wg.Up(); err != nil {
		t.Fatal(err)
	}
	nd.port = nd.listenPort(t)
	return nd
}

func (nd *node) ipcSet(t testing.TB, s string) {
	t.Helper()
	var err error
	if nd.dev != nil {
		err = nd.dev.IpcSet(s)
	} else {
		err = nd.wg.IpcSet(s)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func (nd *node) ipcGet(t testing.TB) string {
	t.Helper()
	var s string
	var err error
	if nd.dev != nil {
		s, err = nd.dev.IpcGet()
	} else {
		s, err = nd.wg.IpcGet()
	}
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (nd *node) status(t testing.TB) devconf.Status {
	t.Helper()
	st, err := devconf.ParseStatus(nd.ipcGet(t))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (nd *node) listenPort(t testing.TB) uint16 {
	return uint16(nd.status(t).ListenPort)
}

// peerWith configures other as nd's peer (allowed: its /32 and /128),
// reached at its port on 127.0.0.1 when endpoint is set.
func (nd *node) peerWith(t testing.TB, other *node, psk wgnoise.PresharedKey, endpoint bool) {
	t.Helper()
	s := fmt.Sprintf("public_key=%s\npreshared_key=%s\nreplace_allowed_ips=true\nallowed_ip=%s/32\nallowed_ip=%s/128\n",
		hexKey(other.pub[:]), hexKey(psk[:]), other.addr, other.addr6)
	if endpoint {
		s += fmt.Sprintf("endpoint=127.0.0.1:%d\n", other.port)
	}
	nd.ipcSet(t, s)
}

func (nd *node) close() {
	if nd.dev != nil {
		nd.dev.Close()
	} else {
		nd.wg.Close()
	}
}

// send sends one packet from nd into the tunnel.
func (nd *node) send(t testing.TB, pkt []byte) {
	t.Helper()
	if nd.dev != nil {
		buf := make([]byte, SendOffset+len(pkt), SendOffset+len(pkt)+SendTail)
		copy(buf[SendOffset:], pkt)
		if err := nd.dev.Send([][]byte{buf}, SendOffset); err != nil {
			t.Fatal(err)
		}
		return
	}
	select {
	case nd.wtun.Outbound <- pkt:
	case <-time.After(10 * time.Second):
		t.Fatal("wireguard-go did not read its TUN")
	}
}

// recv waits for the next packet nd's TUN was handed.
func (nd *node) recv(t testing.TB) []byte {
	t.Helper()
	if nd.dev != nil {
		return nd.tun.recv(t)
	}
	select {
	case p := <-nd.wtun.Inbound:
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("wireguard-go delivered no packet within 10 s")
		return nil
	}
}

// udpPacket is an IPv4 or IPv6 UDP packet from src to dst carrying payload
// (checksums left zero: nothing on the path checks them).
func udpPacket(src, dst netip.Addr, payload []byte) []byte {
	udp := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], 4000)
	binary.BigEndian.PutUint16(udp[2:], 5000)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], payload)
	if src.Is4() {
		h := make([]byte, 20, 20+len(udp))
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(udp)))
		h[8], h[9] = 64, 17
		s, d := src.As4(), dst.As4()
		copy(h[12:], s[:])
		copy(h[16:], d[:])
		return append(h, udp...)
	}
	h := make([]byte, 40, 40+len(udp))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(udp)))
	h[6], h[7] = 17, 64
	s, d := src.As16(), dst.As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return append(h, udp...)
}

// exchange checks that a packet from a reaches b and one from b reaches
// a, over IPv4 and IPv6.
func exchange(t testing.TB, a, b *node, tag string) {
	t.Helper()
	for _, six := range []bool{false, true} {
		for _, dir := range [][2]*node{{a, b}, {b, a}} {
			from, to := dir[0], dir[1]
			src, dst := from.addr, to.addr
			if six {
				src, dst = from.addr6, to.addr6
			}
			want := udpPacket(src, dst, []byte(fmt.Sprintf("%s %s->%s", tag, src, dst)))
			from.send(t, want)
			if got := to.recv(t); string(got) != string(want) {
				t.Fatalf("%s: delivered %x, want %x", tag, got, want)
			}
		}
	}
}

func netipMust(s string) netip.Addr { return netip.MustParseAddr(s) }
