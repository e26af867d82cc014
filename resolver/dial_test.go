package resolver

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"
)

// TestDialerTriesAddressesInOrder: a name's addresses are tried in the
// lookup's order (IPv6 first with PreferIPv6) until one connects; an IP
// literal is dialed without a lookup; the family follows the network.
func TestDialerTriesAddressesInOrder(t *testing.T) {
	var tried []string
	var families []string
	refused := errors.New("refused")
	d := &Dialer{
		Lookup: func(ctx context.Context, family, host string) ([]netip.Addr, error) {
			families = append(families, family)
			if host != "svc.test" {
				return nil, errors.New("no such host")
			}
			return []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("fd00::1")}, nil
		},
		Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			tried = append(tried, address)
			if address == "10.0.0.2:80" || address == "[fd00::1]:80" {
				c, _ := net.Pipe()
				return c, nil
			}
			return nil, refused
		},
	}
	for _, c := range []struct {
		network, address string
		preferV6         bool
		wantTried        []string
		wantFamily       string
		wantErr          bool
	}{
		{"tcp", "svc.test:80", false, []string{"10.0.0.1:80", "10.0.0.2:80"}, "ip", false},
		{"tcp", "svc.test:80", true, []string{"[fd00::1]:80"}, "ip", false},
		{"udp4", "svc.test:80", false, []string{"10.0.0.1:80", "10.0.0.2:80"}, "ip4", false},
		{"tcp", "10.0.0.1:80", false, []string{"10.0.0.1:80"}, "", true},
		{"tcp6", "nowhere.test:80", false, nil, "ip6", true},
		{"tcp", "no-port", false, nil, "", true},
	} {
		tried, families = nil, nil
		d.PreferIPv6 = c.preferV6
		conn, err := d.DialContext(context.Background(), c.network, c.address)
		if (err != nil) != c.wantErr {
			t.Errorf("%s %s: err %v, want error %v", c.network, c.address, err, c.wantErr)
		}
		if conn != nil {
			conn.Close()
		}
		if !slices.Equal(tried, c.wantTried) {
			t.Errorf("%s %s (prefer v6 %v): tried %v, want %v", c.network, c.address, c.preferV6, tried, c.wantTried)
		}
		if c.wantFamily != "" && (len(families) != 1 || families[0] != c.wantFamily) {
			t.Errorf("%s %s: looked up %v, want family %s", c.network, c.address, families, c.wantFamily)
		}
	}
	if !errors.Is(func() error { _, err := d.DialContext(context.Background(), "tcp", "10.0.0.9:1"); return err }(), refused) {
		t.Error("a refused IP literal does not return the dial's error")
	}
}
