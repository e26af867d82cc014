// Package resolver looks names up through DNS servers that the caller
// reaches with its own dial function (for the sidecar: through the tunnel).
// It never consults the host: not its resolver, not /etc/hosts, not
// /etc/resolv.conf.
//
// It knows nothing of WireGuard or gVisor; it needs only a way to dial
// "udp" and "tcp" to a server address.
package resolver

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// DefaultTimeout bounds one query to one server.
const DefaultTimeout = 2 * time.Second

// attempts is how many rounds over the servers a query makes.
const attempts = 2

// Resolver resolves names with the given servers and search domains. The
// zero value has no servers and resolves only IP literals. A Resolver is
// safe for concurrent use; its fields must not change after first use.
type Resolver struct {
	// Servers are queried in order, on port 53.
	Servers []netip.Addr
	// Search domains are appended to names without a trailing dot, as
	// resolv.conf's "search" with ndots:1 would.
	Search []string
	// Dial opens a connection to a server; network is "udp" or "tcp".
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// Timeout for one query to one server; DefaultTimeout when zero.
	Timeout time.Duration
}

// LookupNetIP returns the addresses of host. network is "ip" (both
// families, IPv4 first), "ip4" or "ip6". An IP literal is returned as is.
// A nil Resolver asks the host's resolver (net.DefaultResolver).
func (r *Resolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	if r == nil {
		return net.DefaultResolver.LookupNetIP(ctx, network, host)
	}
	var types []dnsmessage.Type
	switch network {
	case "ip":
		types = []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA}
	case "ip4":
		types = []dnsmessage.Type{dnsmessage.TypeA}
	case "ip6":
		types = []dnsmessage.Type{dnsmessage.TypeAAAA}
	default:
		return nil, net.UnknownNetworkError(network)
	}
	dnsErr := func(msg string, notFound bool) error {
		return &net.DNSError{Err: msg, Name: host, IsNotFound: notFound}
	}
	if !validName(host) {
		return nil, dnsErr("invalid domain name", true)
	}
	if len(r.Servers) == 0 {
		return nil, dnsErr("no DNS servers configured", false)
	}
	var lastErr error
	for _, name := range r.candidates(host) {
		// Ask for every record type at once, as Go's resolver does.
		type answer struct {
			addrs []netip.Addr
			err   error
		}
		answers := make([]answer, len(types))
		var wg sync.WaitGroup
		for i, t := range types {
			wg.Go(func() {
				answers[i].addrs, answers[i].err = r.query(ctx, name, t)
			})
		}
		wg.Wait()
		if ctx.Err() != nil {
			return nil, dnsErr(ctx.Err().Error(), false)
		}
		var addrs []netip.Addr
		for _, a := range answers {
			addrs = append(addrs, a.addrs...)
			if a.err != nil && !errors.Is(a.err, errNoSuchHost) {
				lastErr = a.err
			}
		}
		if len(addrs) > 0 {
			return addrs, nil
		}
	}
	if lastErr == nil {
		return nil, dnsErr("no such host", true)
	}
	return nil, dnsErr(lastErr.Error(), false)
}

var errNoSuchHost = errors.New("no such host")

// candidates lists the fully qualified names to try for host, in order.
func (r *Resolver) candidates(host string) []string {
	if strings.HasSuffix(host, ".") {
		return []string{host}
	}
	var names []string
	if strings.Contains(host, ".") {
		names = append(names, host+".")
	}
	for _, d := range r.Search {
		d = strings.Trim(d, ".")
		if d != "" {
			names = append(names, host+"."+d+".")
		}
	}
	if !strings.Contains(host, ".") {
		names = append(names, host+".")
	}
	return names
}

// query asks each server in turn for name's records of type t. It returns
// errNoSuchHost when a server answered that there are none.
func (r *Resolver) query(ctx context.Context, name string, t dnsmessage.Type) ([]netip.Addr, error) {
	qname, err := dnsmessage.NewName(name)
	if err != nil {
		return nil, errNoSuchHost
	}
	q := dnsmessage.Question{Name: qname, Type: t, Class: dnsmessage.ClassINET}
	var lastErr error
	for attempt := range attempts * len(r.Servers) {
		// Each server in turn, then all of them again: as resolv.conf's
		// "attempts:2", since a UDP query or its answer may be lost.
		server := netip.AddrPortFrom(r.Servers[attempt%len(r.Servers)], 53).String()
		msg, err := r.exchange(ctx, "udp", server, q)
		if err == nil && msg.Truncated {
			msg, err = r.exchange(ctx, "tcp", server, q)
		}
		if err != nil {
			lastErr = fmt.Errorf("server %s: %w", server, err)
			if ctx.Err() != nil {
				return nil, lastErr
			}
			continue
		}
		switch msg.RCode {
		case dnsmessage.RCodeSuccess:
		case dnsmessage.RCodeNameError:
			return nil, errNoSuchHost
		default:
			lastErr = fmt.Errorf("server %s: %v", server, msg.RCode)
			continue
		}
		var addrs []netip.Addr
		for _, a := range msg.Answers {
			switch b := a.Body.(type) {
			case *dnsmessage.AResource:
				if t == dnsmessage.TypeA {
					addrs = append(addrs, netip.AddrFrom4(b.A))
				}
			case *dnsmessage.AAAAResource:
				if t == dnsmessage.TypeAAAA {
					addrs = append(addrs, netip.AddrFrom16(b.AAAA))
				}
			}
		}
		if len(addrs) == 0 {
			return nil, errNoSuchHost
		}
		return addrs, nil
	}
	return nil, lastErr
}

// exchange sends one query over network and reads the matching response.
func (r *Resolver) exchange(ctx context.Context, network, server string, q dnsmessage.Question) (*dnsmessage.Message, error) {
	timeout := r.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if r.Dial == nil {
		return nil, errors.New("resolver has no dial function")
	}
	conn, err := r.Dial(ctx, network, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	var idb [2]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return nil, err
	}
	id := binary.BigEndian.Uint16(idb[:])
	req := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{q},
	}
	packed, err := req.Pack()
	if err != nil {
		return nil, err
	}
	if network == "tcp" {
		framed := make([]byte, 2+len(packed))
		binary.BigEndian.PutUint16(framed, uint16(len(packed)))
		copy(framed[2:], packed)
		if _, err := conn.Write(framed); err != nil {
			return nil, err
		}
		var lb [2]byte
		if _, err := io.ReadFull(conn, lb[:]); err != nil {
			return nil, err
		}
		resp := make([]byte, binary.BigEndian.Uint16(lb[:]))
		if _, err := io.ReadFull(conn, resp); err != nil {
			return nil, err
		}
		return parseResponse(resp, id, q)
	}
	if _, err := conn.Write(packed); err != nil {
		return nil, err
	}
	buf := make([]byte, 1232)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return nil, err
		}
		if m, err := parseResponse(buf[:n], id, q); err == nil {
			return m, nil
		}
		// Not our answer (late reply to an earlier query, spoof): wait on.
	}
}

func parseResponse(b []byte, id uint16, q dnsmessage.Question) (*dnsmessage.Message, error) {
	var m dnsmessage.Message
	if err := m.Unpack(b); err != nil {
		return nil, fmt.Errorf("malformed DNS response: %w", err)
	}
	if !m.Response || m.ID != id || len(m.Questions) != 1 ||
		m.Questions[0].Type != q.Type || !strings.EqualFold(m.Questions[0].Name.String(), q.Name.String()) {
		return nil, errors.New("DNS response does not match the query")
	}
	return &m, nil
}

// validName reports whether s is a syntactically valid domain name.
func validName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
