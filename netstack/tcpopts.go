package netstack

import (
	"context"
	"errors"
	"net"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// TCPTimeWait is how long a closed TCP connection of the stack stays in
// TIME_WAIT, keeping its port and about 10 kB, instead of gVisor's 60 s:
// at a few thousand connections a second, 60 s held hundreds of MB and ran
// the dialing side out of ports. A port in TIME_WAIT may also be reused by
// a new connection at once (TCPTimeWaitReuseGlobal, as Linux's
// tcp_tw_reuse), which is safe with TCP timestamps and random initial
// sequence numbers.
const TCPTimeWait = time.Second

// DefaultKeepalive is Options.Keepalive when zero.
const DefaultKeepalive = 30 * time.Second

// keepaliveProbes is how many unanswered probes end a connection.
const keepaliveProbes = 3

// tuneTimeWait sets the stack's TIME_WAIT length and reuse.
func tuneTimeWait(s interface {
	SetTransportProtocolOption(tcpip.TransportProtocolNumber, tcpip.SettableTransportProtocolOption) tcpip.Error
}) tcpip.Error {
	tw := tcpip.TCPTimeWaitTimeoutOption(TCPTimeWait)
	if terr := s.SetTransportProtocolOption(tcp.ProtocolNumber, &tw); terr != nil {
		return terr
	}
	reuse := tcpip.TCPTimeWaitReuseGlobal
	return s.SetTransportProtocolOption(tcp.ProtocolNumber, &reuse)
}

// setKeepalive turns TCP keepalive on for ep as the stack is configured:
// after keepalive of silence, a probe every keepalive/3; the third probe
// unanswered ends the connection, and so does data unacknowledged for as
// long (TCP_USER_TIMEOUT), so a connection to a peer that went away ends
// within 2×keepalive whether it was reading or writing. Off when
// keepalive <= 0.
func setKeepalive(ep tcpip.Endpoint, keepalive time.Duration) {
	if keepalive <= 0 {
		return
	}
	interval := keepalive / keepaliveProbes
	idle := tcpip.KeepaliveIdleOption(keepalive)
	iv := tcpip.KeepaliveIntervalOption(interval)
	user := tcpip.TCPUserTimeoutOption(keepalive + keepaliveProbes*interval)
	ep.SetSockOpt(&idle)
	ep.SetSockOpt(&iv)
	ep.SetSockOptInt(tcpip.KeepaliveCountOption, keepaliveProbes)
	ep.SetSockOpt(&user)
	ep.SocketOptions().SetKeepAlive(true)
}

// dialTCP connects to fa as gonet.DialContextTCP does, with the stack's
// keepalive set on the endpoint before it connects.
func (ns *Stack) dialTCP(ctx context.Context, fa tcpip.FullAddress, proto tcpip.NetworkProtocolNumber) (net.Conn, error) {
	var wq waiter.Queue
	ep, terr := ns.s.NewEndpoint(tcp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, errors.New(terr.String())
	}
	setKeepalive(ep, ns.keepalive)
	entry, notify := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	if err := ctx.Err(); err != nil {
		ep.Close()
		return nil, err
	}
	terr = ep.Connect(fa)
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-ctx.Done():
			ep.Close()
			return nil, ctx.Err()
		case <-notify:
		}
		terr = ep.LastError()
	}
	if terr != nil {
		ep.Close()
		return nil, &net.OpError{Op: "connect", Net: "tcp", Addr: &net.TCPAddr{IP: net.IP(fa.Addr.AsSlice()), Port: int(fa.Port)}, Err: errors.New(terr.String())}
	}
	return newTCPConn(&wq, ep), nil
}
