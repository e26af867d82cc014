package netstack

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/waiter"
)

var pingSeq atomic.Uint32

// Ping sends one ICMP echo request to dst through the tunnel and waits for
// the matching reply or for ctx to end. It returns the round-trip time.
func (ns *Stack) Ping(ctx context.Context, dst netip.Addr) (time.Duration, error) {
	dst = dst.Unmap()
	if !dst.IsValid() {
		return 0, fmt.Errorf("netstack: ping: invalid address")
	}
	fa, netProto := fullAddr(netip.AddrPortFrom(dst, 0))
	transProto := icmp.ProtocolNumber4
	echo, reply := uint8(header.ICMPv4Echo), uint8(header.ICMPv4EchoReply)
	if dst.Is6() {
		transProto = icmp.ProtocolNumber6
		echo, reply = uint8(header.ICMPv6EchoRequest), uint8(header.ICMPv6EchoReply)
	}

	var wq waiter.Queue
	ep, terr := ns.s.NewEndpoint(transProto, netProto, &wq)
	if terr != nil {
		return 0, fmt.Errorf("netstack: ping %v: %v", dst, terr)
	}
	defer ep.Close()
	if terr := ep.Connect(fa); terr != nil {
		return 0, fmt.Errorf("netstack: ping %v: %v", dst, terr)
	}
	entry, readable := waiter.NewChannelEntry(waiter.EventIn)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)

	seq := uint16(pingSeq.Add(1))
	payload := []byte("wgsidecar ping")
	req := make([]byte, 8+len(payload))
	req[0] = echo
	binary.BigEndian.PutUint16(req[6:], seq)
	copy(req[8:], payload)

	start := time.Now()
	if _, terr := ep.Write(bytes.NewReader(req), tcpip.WriteOptions{}); terr != nil {
		return 0, fmt.Errorf("netstack: ping %v: %v", dst, terr)
	}
	buf := make([]byte, 1500)
	for {
		w := tcpip.SliceWriter(buf)
		res, terr := ep.Read(&w, tcpip.ReadOptions{})
		if _, ok := terr.(*tcpip.ErrWouldBlock); ok {
			select {
			case <-readable:
				continue
			case <-ctx.Done():
				return 0, fmt.Errorf("netstack: ping %v: %w", dst, ctx.Err())
			}
		}
		if terr != nil {
			return 0, fmt.Errorf("netstack: ping %v: %v", dst, terr)
		}
		got := buf[:res.Count]
		if len(got) >= 8 && got[0] == reply && binary.BigEndian.Uint16(got[6:]) == seq &&
			bytes.Equal(got[8:], payload) {
			return time.Since(start), nil
		}
	}
}
