package resolver

import (
	"cmp"
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// Dialer connects to "host:port" where host may be a name: it looks the
// name up and tries its addresses in turn until one connects. Its fields
// must not change after first use; it is safe for concurrent use.
type Dialer struct {
	// Lookup resolves a name; family is "ip", "ip4" or "ip6".
	Lookup func(ctx context.Context, family, host string) ([]netip.Addr, error)
	// Dial connects to an "ip:port" address.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// PreferIPv6 tries IPv6 addresses first (wireproxy's [Resolve]
	// ResolveStrategy = ipv6); otherwise the lookup's order stands (IPv4
	// first).
	PreferIPv6 bool
}

// DialContext connects to address over network ("tcp", "tcp4", "tcp6",
// "udp", "udp4", "udp6"). An IP address is dialed as it is; for a name the
// first error is returned when no address connects.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return d.Dial(ctx, network, address)
	}
	family := "ip"
	switch {
	case strings.HasSuffix(network, "4"):
		family = "ip4"
	case strings.HasSuffix(network, "6"):
		family = "ip6"
	}
	addrs, err := d.Lookup(ctx, family, host)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	if d.PreferIPv6 {
		addrs = slices.Clone(addrs)
		slices.SortStableFunc(addrs, func(a, b netip.Addr) int { return cmp.Compare(b.BitLen(), a.BitLen()) })
	}
	var firstErr error
	for _, a := range addrs {
		c, err := d.Dial(ctx, network, net.JoinHostPort(a.String(), port))
		if err == nil {
			return c, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, firstErr
}
