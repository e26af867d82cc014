package wgnoise

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/internal/leaktest"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/conn/bindtest"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// The tunnel addresses of the interop tests: wireguard-go's device is
// wgAddr, our hand-driven end ourAddr (inside the peer's allowed IPs).
var (
	wgAddr  = netip.MustParseAddr("10.9.0.1")
	ourAddr = netip.MustParseAddr("10.9.0.2")
)

// wgPeer is wireguard-go's device (the library, in process) on one end of
// a channel bind, and our hand-driven end of it: no sockets.
type wgPeer struct {
	t    *testing.T
	dev  *device.Device
	tun  *tuntest.ChannelTUN
	pub  PublicKey     // wireguard-go's
	bind conn.Bind     // ours
	to   conn.Endpoint // where our sends reach the device
	rx   chan []byte   // messages the device sent us
	us   *party        // our identity, handshake, cookies, guard
}

// newWGPeer starts wireguard-go's device knowing us as its one peer with
// psk, and opens our end of the channel bind.
func newWGPeer(t *testing.T, psk PresharedKey) *wgPeer {
	t.Helper()
	t.Cleanup(leaktest.Check(t))
	wgPriv := mustKey(t)
	p := &wgPeer{t: t, tun: tuntest.NewChannelTUN(), pub: wgPriv.PublicKey(), rx: make(chan []byte, 64)}
	binds := bindtest.NewChannelBinds()
	p.bind, p.to = binds[1], bindtest.ChannelEndpoint(2)
	p.us = &party{id: NewIdentity(mustKey(t))}
	var err error
	if p.us.hs, err = NewHandshake(p.us.id, p.pub, psk); err != nil {
		t.Fatal(err)
	}
	p.us.cookies, p.us.guard = NewCookies(p.pub), NewGuard(p.us.id)

	logger := &device.Logger{Verbosef: device.DiscardLogf, Errorf: device.DiscardLogf}
	p.dev = device.NewDevice(p.tun.TUN(), binds[0], logger)
	ourPub := p.us.id.Public()
	uapi := fmt.Sprintf("private_key=%s\npublic_key=%s\npreshared_key=%s\nendpoint=127.0.0.1:1\nallowed_ip=%s/32\n",
		hex.EncodeToString(wgPriv[:]), hex.EncodeToString(ourPub[:]), hex.EncodeToString(psk[:]), ourAddr)
	if err := p.dev.IpcSet(uapi); err != nil {
		t.Fatal(err)
	}
	if err := p.dev.Up(); err != nil {
		t.Fatal(err)
	}
	fns, _, err := p.bind.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}, len(fns))
	for _, fn := range fns {
		go p.receive(fn, done)
	}
	t.Cleanup(func() {
		p.dev.Close()
		p.bind.Close()
		for range fns {
			<-done
		}
	})
	return p
}

// receive copies what fn receives into p.rx until the bind closes.
func (p *wgPeer) receive(fn conn.ReceiveFunc, done chan<- struct{}) {
	defer func() { done <- struct{}{} }()
	bufs, sizes, eps := [][]byte{make([]byte, 2048)}, make([]int, 1), make([]conn.Endpoint, 1)
	for {
		n, err := fn(bufs, sizes, eps)
		if err != nil {
			return
		}
		for i := range n {
			p.rx <- bytes.Clone(bufs[i][:sizes[i]])
		}
	}
}

// send hands msg to the device.
func (p *wgPeer) send(msg []byte) {
	p.t.Helper()
	if err := p.bind.Send([][]byte{msg}, p.to); err != nil {
		p.t.Fatal(err)
	}
}

// next returns the next message of type typ the device sends, skipping
// keepalives; it fails the test after within.
func (p *wgPeer) next(typ uint32, kp *Keypair, within time.Duration) []byte {
	p.t.Helper()
	deadline := time.After(within)
	for {
		select {
		case msg := <-p.rx:
			got, ok := MessageType(msg)
			if !ok {
				p.t.Fatalf("device sent a malformed message: % x", msg)
			}
			if got == TypeTransport && len(msg) == KeepaliveSize && typ == TypeTransport {
				if kp != nil {
					if _, c, err := kp.Open(msg); err != nil || !kp.Accept(c) {
						p.t.Fatalf("keepalive: %v", err)
					}
				}
				continue
			}
			if got != typ {
				p.t.Fatalf("device sent a message of type %d, want %d", got, typ)
			}
			return msg
		case <-deadline:
			p.t.Fatalf("no message of type %d from the device within %v", typ, within)
			return nil
		}
	}
}

// udp4 returns an IPv4 UDP packet from src to dst carrying payload, with
// valid IPv4 header checksum.
func udp4(src, dst netip.Addr, payload []byte) []byte {
	pkt := make([]byte, 28+len(payload))
	pkt[0] = 0x45
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	pkt[8], pkt[9] = 64, 17
	s, d := src.As4(), dst.As4()
	copy(pkt[12:], s[:])
	copy(pkt[16:], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(pkt[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(pkt[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(pkt[20:], 40000)
	binary.BigEndian.PutUint16(pkt[22:], 9)
	binary.BigEndian.PutUint16(pkt[24:], uint16(8+len(payload)))
	copy(pkt[28:], payload)
	return pkt
}

// sendData seals pkt with kp and checks the device delivers it to its TUN.
func (p *wgPeer) sendData(kp *Keypair, pkt []byte) {
	p.t.Helper()
	p.send(sealed(p.t, kp, pkt))
	select {
	case got := <-p.tun.Inbound:
		if !bytes.Equal(got, pkt) {
			p.t.Fatalf("device delivered % x, want % x", got, pkt)
		}
	case <-time.After(5 * time.Second):
		p.t.Fatal("the packet we sealed never reached wireguard-go's TUN")
	}
}

// recvData opens the next data message from the device with kp and checks
// it holds pkt (plus padding).
func (p *wgPeer) recvData(kp *Keypair, pkt []byte) {
	p.t.Helper()
	msg := p.next(TypeTransport, kp, 5*time.Second)
	plain, c, err := kp.Open(msg)
	if err != nil {
		p.t.Fatalf("Open of wireguard-go's data: %v", err)
	}
	if !kp.Accept(c) {
		p.t.Fatalf("counter %d refused", c)
	}
	if len(plain) < len(pkt) || !bytes.Equal(plain[:len(pkt)], pkt) {
		p.t.Fatalf("wireguard-go sent % x, want % x", plain, pkt)
	}
}

// wgOutbound writes pkt into the device's TUN, as an app sending to us.
func (p *wgPeer) wgOutbound(pkt []byte) {
	p.t.Helper()
	select {
	case p.tun.Outbound <- pkt:
	case <-time.After(5 * time.Second):
		p.t.Fatal("wireguard-go's TUN did not take the packet")
	}
}

// interopPSKs are the two settings each way is run with: none, and one.
var interopPSKs = map[string]PresharedKey{"no psk": {}, "psk": {0: 1, 7: 0x5a, 31: 0xff}}

// TestInteropWeInitiate (cases a and c): we initiate, wireguard-go
// responds; we derive the keys, send it a packet that appears on its TUN,
// and open what it sends back.
func TestInteropWeInitiate(t *testing.T) {
	for name, psk := range interopPSKs {
		t.Run(name, func(t *testing.T) {
			p := newWGPeer(t, psk)
			now := time.Now()
			init, err := p.us.hs.CreateInitiation(0x1234, now)
			if err != nil {
				t.Fatal(err)
			}
			p.us.cookies.Stamp(init[:], now)
			p.send(init[:])
			resp := p.next(TypeResponse, nil, 5*time.Second)
			if !p.us.guard.CheckMAC1(resp) {
				t.Fatal("mac1 of wireguard-go's response refused")
			}
			if ReceiverIndex(resp) != 0x1234 {
				t.Fatalf("response to index %#x, want 0x1234", ReceiverIndex(resp))
			}
			if err := p.us.hs.ConsumeResponse(resp); err != nil {
				t.Fatalf("ConsumeResponse: %v", err)
			}
			kp, err := p.us.hs.BeginSession(now)
			if err != nil {
				t.Fatal(err)
			}
			p.sendData(kp, udp4(ourAddr, wgAddr, []byte("hello from wgnoise")))
			reply := udp4(wgAddr, ourAddr, bytes.Repeat([]byte("wireguard-go answers "), 60))
			p.wgOutbound(reply)
			p.recvData(kp, reply)
		})
	}
}

// TestInteropTheyInitiate (cases b and c): wireguard-go initiates for a
// packet written to its TUN; we consume, respond and open that packet.
func TestInteropTheyInitiate(t *testing.T) {
	for name, psk := range interopPSKs {
		t.Run(name, func(t *testing.T) {
			p := newWGPeer(t, psk)
			pkt := udp4(wgAddr, ourAddr, []byte("staged in wireguard-go until the handshake"))
			p.wgOutbound(pkt)
			kp := p.respond(p.next(TypeInitiation, nil, 5*time.Second))
			p.recvData(kp, pkt)
			p.sendData(kp, udp4(ourAddr, wgAddr, []byte("and back")))
		})
	}
}

// respond answers wireguard-go's initiation msg and returns our keypair.
func (p *wgPeer) respond(msg []byte) *Keypair {
	p.t.Helper()
	if !p.us.guard.CheckMAC1(msg) {
		p.t.Fatal("mac1 of wireguard-go's initiation refused")
	}
	in, err := ConsumeInitiation(p.us.id, msg)
	if err != nil {
		p.t.Fatalf("ConsumeInitiation: %v", err)
	}
	if in.Peer != p.pub {
		p.t.Fatal("initiation names another static key than wireguard-go's")
	}
	now := time.Now()
	if err := p.us.hs.AcceptInitiation(in, now); err != nil {
		p.t.Fatalf("AcceptInitiation: %v", err)
	}
	resp, err := p.us.hs.CreateResponse(0x4321)
	if err != nil {
		p.t.Fatal(err)
	}
	p.us.cookies.Stamp(resp[:], now)
	p.send(resp[:])
	kp, err := p.us.hs.BeginSession(now)
	if err != nil {
		p.t.Fatal(err)
	}
	return kp
}

// TestInteropCookie (case d): we answer wireguard-go's initiation with a
// cookie reply; it takes it, and its next initiation carries a mac2 our
// Guard accepts for the source the cookie was made for (and no other).
// wireguard-go retries after its Rekey-Timeout, so this takes about 5 s.
func TestInteropCookie(t *testing.T) {
	t.Parallel()
	p := newWGPeer(t, PresharedKey{})
	pkt := udp4(wgAddr, ourAddr, []byte("waits for the cookie"))
	p.wgOutbound(pkt)
	first := p.next(TypeInitiation, nil, 5*time.Second)
	if p.us.guard.CheckMAC2(first, src4, time.Now()) {
		t.Fatal("mac2 valid before any cookie was sent")
	}
	reply, err := p.us.guard.CookieReply(first, src4, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p.send(reply[:])
	retry := p.next(TypeInitiation, nil, 10*time.Second)
	if !p.us.guard.CheckMAC1(retry) {
		t.Fatal("mac1 of the retry refused")
	}
	if !p.us.guard.CheckMAC2(retry, src4, time.Now()) {
		t.Fatal("the retry's mac2 refused: wireguard-go did not take our cookie")
	}
	if p.us.guard.CheckMAC2(retry, []byte{127, 0, 0, 3, 0xca, 0x6c}, time.Now()) {
		t.Fatal("the retry's mac2 accepted for another source")
	}
	kp := p.respond(retry)
	p.recvData(kp, pkt)
}
