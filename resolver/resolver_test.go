package resolver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/wgsidecar/sidecar/internal/testnet"
)

// fakeServer is a DNS server on loopback (UDP and TCP on one port) with a
// fixed zone. It can drop UDP queries or truncate UDP answers.
type fakeServer struct {
	zone     map[string][]netip.Addr
	mu       sync.Mutex
	asked    []string // "udp NAME TYPE" / "tcp NAME TYPE"
	dropUDP  int      // drop this many UDP queries first
	truncate bool     // answer UDP with TC set and no records
	addr     string
}

func startServer(t *testing.T, zone map[string][]netip.Addr) *fakeServer {
	t.Helper()
	s := &fakeServer{zone: zone}
	// One port number for UDP and TCP: the UDP port the OS picks may be
	// taken for TCP by another process, so try a few.
	var pc net.PacketConn
	var ln net.Listener
	for try := 0; ; try++ {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		s.addr = pc.LocalAddr().String()
		if ln, err = net.Listen("tcp", s.addr); err == nil {
			break
		}
		pc.Close()
		if try == 20 {
			t.Fatalf("no port free for both UDP and TCP: %v", err)
		}
	}
	testnet.ServePackets(t, pc, func(b []byte, _ net.Addr) []byte { return s.answer("udp", b) })
	testnet.Serve(t, ln, func(c net.Conn) {
		var lb [2]byte
		if _, err := io.ReadFull(c, lb[:]); err != nil {
			return
		}
		req := make([]byte, binary.BigEndian.Uint16(lb[:]))
		if _, err := io.ReadFull(c, req); err != nil {
			return
		}
		out := s.answer("tcp", req)
		binary.BigEndian.PutUint16(lb[:], uint16(len(out)))
		c.Write(append(lb[:], out...))
	})
	return s
}

func (s *fakeServer) answer(network string, req []byte) []byte {
	var m dnsmessage.Message
	if m.Unpack(req) != nil || len(m.Questions) != 1 {
		return nil
	}
	q := m.Questions[0]
	s.mu.Lock()
	s.asked = append(s.asked, fmt.Sprintf("%s %s %s", network, q.Name, q.Type))
	drop := network == "udp" && s.dropUDP > 0
	if drop {
		s.dropUDP--
	}
	truncate := network == "udp" && s.truncate
	s.mu.Unlock()
	if drop {
		return nil
	}
	resp := dnsmessage.Message{Header: dnsmessage.Header{ID: m.ID, Response: true}, Questions: m.Questions}
	addrs, ok := s.zone[strings.ToLower(q.Name.String())]
	if !ok {
		resp.RCode = dnsmessage.RCodeNameError
	}
	if truncate {
		resp.Truncated = true
		addrs = nil
	}
	for _, a := range addrs {
		h := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 1}
		if a.Is4() && q.Type == dnsmessage.TypeA {
			h.Type = dnsmessage.TypeA
			resp.Answers = append(resp.Answers, dnsmessage.Resource{Header: h, Body: &dnsmessage.AResource{A: a.As4()}})
		}
		if a.Is6() && q.Type == dnsmessage.TypeAAAA {
			h.Type = dnsmessage.TypeAAAA
			resp.Answers = append(resp.Answers, dnsmessage.Resource{Header: h, Body: &dnsmessage.AAAAResource{AAAA: a.As16()}})
		}
	}
	out, _ := resp.Pack()
	return out
}

// set changes the server's behaviour while it runs.
func (s *fakeServer) set(dropUDP int, truncate bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropUDP, s.truncate = dropUDP, truncate
}

func (s *fakeServer) queries() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.asked)
}

// resolverFor returns a resolver whose servers (documentation addresses,
// never contacted) are redirected to the fake servers on loopback.
func resolverFor(servers ...*fakeServer) *Resolver {
	r := &Resolver{Search: []string{"corp.example", "example"}, Timeout: 300 * time.Millisecond}
	byAddr := map[string]string{}
	for i, s := range servers {
		a := netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)})
		r.Servers = append(r.Servers, a)
		byAddr[netip.AddrPortFrom(a, 53).String()] = s.addr
	}
	var d net.Dialer
	r.Dial = func(ctx context.Context, network, address string) (net.Conn, error) {
		to, ok := byAddr[address]
		if !ok {
			return nil, fmt.Errorf("unexpected server %s", address)
		}
		return d.DialContext(ctx, network, to)
	}
	return r
}

var (
	web4 = netip.MustParseAddr("10.0.0.80")
	web6 = netip.MustParseAddr("fd00::80")
)

func TestLookup(t *testing.T) {
	s := startServer(t, map[string][]netip.Addr{
		"web.corp.example.": {web4, web6},
		"db.example.":       {netip.MustParseAddr("10.0.0.5")},
		"host.":             {netip.MustParseAddr("10.0.0.9")},
	})
	r := resolverFor(s)
	ctx := context.Background()
	cases := []struct {
		network, host string
		want          []netip.Addr
	}{
		{"ip", "web", []netip.Addr{web4, web6}},
		{"ip4", "web", []netip.Addr{web4}},
		{"ip6", "web", []netip.Addr{web6}},
		{"ip", "web.corp.example", []netip.Addr{web4, web6}},
		{"ip", "web.corp.example.", []netip.Addr{web4, web6}},
		{"ip", "db", []netip.Addr{netip.MustParseAddr("10.0.0.5")}},   // second search domain
		{"ip", "host", []netip.Addr{netip.MustParseAddr("10.0.0.9")}}, // bare name last
		{"ip", "10.1.2.3", []netip.Addr{netip.MustParseAddr("10.1.2.3")}},
		{"ip", "[fd00::1]", []netip.Addr{netip.MustParseAddr("fd00::1")}},
	}
	for _, tc := range cases {
		got, err := r.LookupNetIP(ctx, tc.network, tc.host)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("LookupNetIP(%q, %q) = %v, %v; want %v", tc.network, tc.host, got, err, tc.want)
		}
	}
}

func TestSearchOrder(t *testing.T) {
	s := startServer(t, nil)
	r := resolverFor(s)
	r.LookupNetIP(context.Background(), "ip4", "app")
	r.LookupNetIP(context.Background(), "ip4", "app.internal")
	want := []string{
		"udp app.corp.example. TypeA", "udp app.example. TypeA", "udp app. TypeA",
		"udp app.internal. TypeA", "udp app.internal.corp.example. TypeA", "udp app.internal.example. TypeA",
	}
	if got := s.queries(); !slices.Equal(got, want) {
		t.Errorf("queries:\n got %q\nwant %q", got, want)
	}
}

func TestNotFoundAndBadNames(t *testing.T) {
	r := resolverFor(startServer(t, nil))
	for _, host := range []string{"nothing", "bad..name", "-x.example", strings.Repeat("a", 64) + ".example"} {
		_, err := r.LookupNetIP(context.Background(), "ip", host)
		var de *net.DNSError
		if !errors.As(err, &de) || !de.IsNotFound {
			t.Errorf("LookupNetIP(%q) = %v; want a not-found *net.DNSError", host, err)
		}
	}
	if _, err := (&Resolver{}).LookupNetIP(context.Background(), "ip", "web"); err == nil || !strings.Contains(err.Error(), "no DNS servers") {
		t.Errorf("no servers: %v", err)
	}
	if _, err := r.LookupNetIP(context.Background(), "tcp", "web"); err == nil {
		t.Error("network tcp accepted")
	}
}

func TestRetryTruncationAndFailover(t *testing.T) {
	zone := map[string][]netip.Addr{"web.corp.example.": {web4}}

	// A lost UDP query is asked again.
	lossy := startServer(t, zone)
	lossy.set(1, false)
	if got, err := resolverFor(lossy).LookupNetIP(context.Background(), "ip4", "web.corp.example."); err != nil || !slices.Equal(got, []netip.Addr{web4}) {
		t.Errorf("after one lost query: %v, %v", got, err)
	}

	// A truncated UDP answer is asked again over TCP.
	trunc := startServer(t, zone)
	trunc.set(0, true)
	if got, err := resolverFor(trunc).LookupNetIP(context.Background(), "ip4", "web.corp.example."); err != nil || !slices.Equal(got, []netip.Addr{web4}) {
		t.Errorf("truncated: %v, %v", got, err)
	}
	if q := trunc.queries(); len(q) != 2 || !strings.HasPrefix(q[1], "tcp ") {
		t.Errorf("truncated: queries %q; want UDP then TCP", q)
	}

	// A dead first server: the second answers.
	dead := startServer(t, zone)
	dead.set(1<<30, false)
	if got, err := resolverFor(dead, startServer(t, zone)).LookupNetIP(context.Background(), "ip4", "web.corp.example."); err != nil || !slices.Equal(got, []netip.Addr{web4}) {
		t.Errorf("failover: %v, %v", got, err)
	}

	// Every server dead: a timeout error, not "not found".
	_, err := resolverFor(dead).LookupNetIP(context.Background(), "ip4", "web.corp.example.")
	var de *net.DNSError
	if !errors.As(err, &de) || de.IsNotFound {
		t.Errorf("all servers dead: %v; want a DNSError that is not IsNotFound", err)
	}

	// A cancelled context stops at once.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := resolverFor(dead).LookupNetIP(ctx, "ip4", "web"); err == nil {
		t.Error("cancelled lookup succeeded")
	}
}
