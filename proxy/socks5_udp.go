package proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wgsidecar/sidecar/monitor"
)

const (
	// udpHeaderMax is the longest SOCKS5 UDP header the proxy writes:
	// RSV RSV FRAG, then an IPv6 address and port.
	udpHeaderMax = 3 + maxSOCKSIPAddrLen
	// udpBufSize holds the largest UDP datagram.
	udpBufSize = 1 << 16
	// nameTTL is how long an association reuses a name it resolved.
	nameTTL = time.Minute
	// maxNames bounds an association's name cache.
	maxNames = 64
)

// association is one UDP ASSOCIATE: a relay socket on the host facing the
// client and a UDP socket in the tunnel, alive as long as the control
// connection.
type association struct {
	p    *socks5
	ctrl net.Conn
	cc   *net.UDPConn   // faces the client
	tun  net.PacketConn // faces the tunnel

	// Datagrams are taken only from the control connection's client IP
	// and, when the request named one, from that port.
	allowIP   netip.Addr
	allowPort uint16
	// client is where replies go: the first sender let in. Later
	// datagrams must come from it too.
	client atomic.Pointer[netip.AddrPort]

	names map[string]resolvedName // fromClient's alone

	// Payload bytes relayed, for the association's connection record.
	toTunnel, toClient atomic.Uint64
}

type resolvedName struct {
	addr    netip.Addr
	expires time.Time
}

// associate answers UDP ASSOCIATE: it opens the two sockets, tells the
// client where to send, and relays datagrams until the control connection
// ends. want is the address the client said it would send from.
func (p *socks5) associate(ctrl net.Conn, want socksAddr) {
	clientAddr := addrPortOf(ctrl.RemoteAddr())
	localAddr := addrPortOf(ctrl.LocalAddr())
	// The relay socket binds where the client reached the proxy: the
	// proxy's own bind IP, or the interface the client used when the
	// proxy listens on all of them. Never on every interface.
	cc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(localAddr.Addr(), 0)))
	if err != nil {
		p.s.log.Warn("socks5 udp associate: relay socket", "err", err)
		writeReply(ctrl, repGeneralFailure, netip.AddrPort{})
		return
	}
	if !p.s.conns.Hold(cc) {
		return
	}
	defer p.s.conns.Unhold(cc)
	defer cc.Close()
	tun, err := p.s.d.ListenPacket("udp", ":0")
	if err != nil {
		p.s.log.Warn("socks5 udp associate: tunnel socket", "err", err)
		writeReply(ctrl, socksReplyFor(err), netip.AddrPort{})
		return
	}
	if !p.s.conns.Hold(tun) {
		return
	}
	defer p.s.conns.Unhold(tun)
	defer tun.Close()
	if err := writeReply(ctrl, repSucceeded, addrPortOf(cc.LocalAddr())); err != nil {
		return
	}
	ctrl.SetDeadline(time.Time{})

	a := &association{
		p:         p,
		ctrl:      ctrl,
		cc:        cc,
		tun:       tun,
		allowIP:   clientAddr.Addr(),
		allowPort: want.port,
		names:     make(map[string]resolvedName),
	}
	p.s.log.Debug("socks5 udp associate", "client", clientAddr.String(), "relay", cc.LocalAddr().String(), "tunnel", tun.LocalAddr().String())
	start := time.Now()
	rec := monitor.ConnRecord{Kind: "socks5-udp", From: ctrl.RemoteAddr().String(), To: "*", Verdict: "open"}
	p.s.mon.TraceConn(monitor.FromApp, rec)
	defer func() {
		rec.Verdict, rec.BytesIn, rec.BytesOut, rec.Duration = "ok", a.toClient.Load(), a.toTunnel.Load(), time.Since(start)
		p.s.mon.Conn(rec)
	}()
	var wg sync.WaitGroup
	wg.Go(a.fromClient)
	wg.Go(a.fromTunnel)
	// The association ends with the control connection (RFC 1928 §7),
	// or when either socket fails. Whatever the client sends on the
	// control connection meanwhile is ignored.
	var b [64]byte
	for {
		if _, err := ctrl.Read(b[:]); err != nil {
			break
		}
	}
	a.end()
	wg.Wait()
}

// end closes everything the association uses, which stops both relay
// directions and the wait on the control connection.
func (a *association) end() {
	a.ctrl.Close()
	a.cc.Close()
	a.tun.Close()
}

// fromClient relays the client's datagrams into the tunnel. Each carries
// RSV RSV FRAG ATYP DST.ADDR DST.PORT before its data; fragments
// (FRAG != 0) are dropped, as RFC 1928 allows a server that does not
// reassemble.
func (a *association) fromClient() {
	defer a.end()
	buf := make([]byte, udpBufSize)
	for {
		n, src, err := a.cc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		if !a.accept(src) {
			a.p.s.log.Debug("socks5 udp: datagram from a stranger dropped", "from", src.String())
			continue
		}
		pkt := buf[:n]
		if len(pkt) < 4 || pkt[2] != 0 {
			continue // too short for a header, or a fragment
		}
		dst, hl, err := parseAddr(pkt[3:])
		if err != nil {
			continue
		}
		ip := dst.ip
		if dst.name != "" {
			if ip, err = a.resolve(dst.name); err != nil {
				a.p.s.log.Debug("socks5 udp: lookup failed", "name", dst.name, "err", err)
				continue
			}
		}
		to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, dst.port))
		if _, err := a.tun.WriteTo(pkt[3+hl:], to); err != nil {
			a.p.s.log.Debug("socks5 udp: send failed", "to", to.String(), "err", err)
		} else {
			a.toTunnel.Add(uint64(len(pkt) - 3 - hl))
		}
	}
}

// accept reports whether a datagram from src belongs to the association,
// and makes the first accepted sender the one that replies go to.
func (a *association) accept(src netip.AddrPort) bool {
	if c := a.client.Load(); c != nil {
		return *c == src
	}
	if src.Addr() != a.allowIP || (a.allowPort != 0 && src.Port() != a.allowPort) {
		return false
	}
	return a.client.CompareAndSwap(nil, &src) || *a.client.Load() == src
}

// resolve looks name up through the Dialer, reusing recent answers.
func (a *association) resolve(name string) (netip.Addr, error) {
	now := time.Now()
	if r, ok := a.names[name]; ok && now.Before(r.expires) {
		return r.addr, nil
	}
	ctx, cancel := context.WithTimeout(a.p.s.ctx, lookupTimeout)
	defer cancel()
	addrs, err := a.p.s.d.LookupNetIP(ctx, "ip", name)
	if err != nil {
		return netip.Addr{}, err
	}
	if len(addrs) == 0 {
		return netip.Addr{}, errors.New("no addresses")
	}
	if len(a.names) >= maxNames {
		clear(a.names)
	}
	ip := addrs[0].Unmap()
	a.names[name] = resolvedName{addr: ip, expires: now.Add(nameTTL)}
	return ip, nil
}

// fromTunnel relays datagrams from the tunnel to the client, each behind
// a header that names its sender.
func (a *association) fromTunnel() {
	defer a.end()
	buf := make([]byte, udpHeaderMax+udpBufSize)
	for {
		n, from, err := a.tun.ReadFrom(buf[udpHeaderMax:])
		if err != nil {
			return
		}
		client := a.client.Load()
		if client == nil {
			continue // nobody to give it to yet
		}
		var hdr [udpHeaderMax]byte
		h := appendAddr(append(hdr[:0], 0, 0, 0), addrPortOf(from))
		start := udpHeaderMax - len(h)
		copy(buf[start:], h)
		if _, err := a.cc.WriteToUDPAddrPort(buf[start:udpHeaderMax+n], *client); err != nil {
			a.p.s.log.Debug("socks5 udp: reply to client failed", "err", err)
		} else {
			a.toClient.Add(uint64(n))
		}
	}
}
