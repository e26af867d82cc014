package monitor

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
)

// StreamQueue bounds the backlog of each Stream's listener.
const StreamQueue = 4096

// Stream listens on m and hands each event matching the query's filter
// (see ParseFilter) to emit as one JSON object, until ctx ends, emit fails
// or the listener closes. It is what the control socket's monitor serves.
func (m *Monitor) Stream(ctx context.Context, q map[string][]string, emit func([]byte) error) error {
	f, err := ParseFilter(q)
	if err != nil {
		return err
	}
	l := m.Listen(StreamQueue, f)
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

// ParseFilter reads a filter from a query: kind (a comma list of trace,
// drop, conn), and src, dst and addr (each a prefix or an address).
func ParseFilter(q map[string][]string) (Filter, error) {
	var f Filter
	for _, v := range q["kind"] {
		for _, name := range strings.Split(v, ",") {
			k, ok := map[string]Kind{"trace": KindTrace, "drop": KindDrop, "conn": KindConn}[name]
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
