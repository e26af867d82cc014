package sidecar

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/wgsidecar/sidecar/monitor"
)

// Monitor returns the node's live event stream: packets passing from and
// to the peers (the tunnel device). Listening costs the packet path one
// atomic load while nobody listens.
func (n *Node) Monitor() *monitor.Monitor { return &n.mon }

// traceTUN reports every IP packet that crosses the tunnel device to the
// node's monitor: Write carries packets from the peers, Read packets to
// them.
type traceTUN struct {
	tun.Device
	mon *monitor.Monitor
}

func (t traceTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := t.Device.Read(bufs, sizes, offset)
	if t.mon.Active() {
		for i := range n {
			t.mon.Trace(monitor.ToPeer, bufs[i][offset:offset+sizes[i]])
		}
	}
	return n, err
}

func (t traceTUN) Write(bufs [][]byte, offset int) (int, error) {
	if t.mon.Active() {
		for _, b := range bufs {
			t.mon.Trace(monitor.FromPeer, b[offset:])
		}
	}
	return t.Device.Write(bufs, offset)
}

// monitorQueue bounds each control-socket listener's backlog.
const monitorQueue = 4096

// Stream serves the control socket's monitor: one JSON-encoded
// monitor.Event a line. The query may filter by type (kind=trace,drop,
// conn), src, dst and addr (a prefix or an address).
func (a controlAPI) Stream(ctx context.Context, q map[string][]string, emit func([]byte) error) error {
	f, err := monitorFilter(q)
	if err != nil {
		return err
	}
	l := a.n.mon.Listen(monitorQueue, f)
	defer l.Close()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-l.Events():
			if !ok {
				return nil
			}
			line, err := json.Marshal(ev)
			if err != nil {
				return err
			}
			if err := emit(line); err != nil {
				return err
			}
		}
	}
}

// monitorFilter reads a filter from a query string.
func monitorFilter(q map[string][]string) (monitor.Filter, error) {
	var f monitor.Filter
	for _, v := range q["kind"] {
		for _, name := range strings.Split(v, ",") {
			k, ok := map[string]monitor.Kind{"trace": monitor.KindTrace, "drop": monitor.KindDrop, "conn": monitor.KindConn}[name]
			if !ok {
				return f, fmt.Errorf("unknown event type %q (want trace, drop or conn)", name)
			}
			f.Kinds = append(f.Kinds, k)
		}
	}
	for key, dst := range map[string]*netip.Prefix{"src": &f.Src, "dst": &f.Dst, "addr": &f.Addr} {
		if v := q[key]; len(v) > 0 {
			p, err := parsePrefix(v[0])
			if err != nil {
				return f, fmt.Errorf("%s: %w", key, err)
			}
			*dst = p
		}
	}
	return f, nil
}

// parsePrefix takes a prefix or a single address.
func parsePrefix(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
	}
	return netip.ParsePrefix(s)
}
