package wgdev

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/internal/leaktest"
	"github.com/wgsidecar/sidecar/wgnoise"
)

func TestLimiter(t *testing.T) {
	var l limiter
	t0 := time.Unix(1000, 0)
	a := netip.MustParseAddr("192.0.2.1")
	allowed := func(src netip.Addr, at time.Time, n int) int {
		ok := 0
		for range n {
			if l.allow(src, at) {
				ok++
			}
		}
		return ok
	}
	if got := allowed(a, t0, 10); got != limitBurst {
		t.Errorf("a burst of 10 at once: %d allowed, want %d", got, limitBurst)
	}
	if got := allowed(a, t0.Add(time.Second/limitRate), 3); got != 1 {
		t.Errorf("one interval later: %d allowed, want 1", got)
	}
	// Another IPv4 address has its own bucket; one IPv6 /64 shares one.
	if got := allowed(netip.MustParseAddr("192.0.2.2"), t0, 10); got != limitBurst {
		t.Errorf("another address: %d allowed, want %d", got, limitBurst)
	}
	if got := allowed(netip.MustParseAddr("2001:db8::1"), t0, 3) + allowed(netip.MustParseAddr("2001:db8::ffff:2"), t0, 3); got != limitBurst {
		t.Errorf("two addresses of one /64: %d allowed together, want %d", got, limitBurst)
	}
	if got := allowed(netip.MustParseAddr("2001:db8:0:1::1"), t0, 1); got != 1 {
		t.Errorf("the next /64: %d allowed, want 1", got)
	}
	// A quiet source earns its burst back, no more; idle sources are
	// forgotten.
	later := t0.Add(time.Hour)
	if got := allowed(a, later, 10); got != limitBurst {
		t.Errorf("an hour later: %d allowed, want %d", got, limitBurst)
	}
	if len(l.seen) != 1 {
		t.Errorf("%d sources remembered after the others went idle; want 1", len(l.seen))
	}
}

// TestLimiterUnderLoad: under load, an initiation with a valid mac2 from
// a source that used up its rate is dropped unanswered; once the source
// has credit again, the next one is answered.
func TestLimiterUnderLoad(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	b := newOurs(t, 2)
	defer b.close()
	b.dev.forceUnderLoad.Store(true)
	key := newKey(t)
	b.ipcSet(t, "public_key="+hexKey(func() []byte { p := key.PublicKey(); return p[:] }())+"\nallowed_ip=10.9.0.1/32\n")
	hs, err := wgnoise.NewHandshake(wgnoise.NewIdentity(key), b.pub, wgnoise.PresharedKey{})
	if err != nil {
		t.Fatal(err)
	}
	cookies := wgnoise.NewCookies(b.pub)
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), b.port)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// initiate sends a fresh initiation, stamped with what cookies hold,
	// and returns the answer's type, or 0 for none within 300 ms.
	idx := uint32(100)
	initiate := func() uint32 {
		t.Helper()
		idx++
		msg, err := hs.CreateInitiation(idx, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		cookies.Stamp(msg[:], time.Now())
		if _, err := c.Write(msg[:]); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 256)
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := c.Read(buf)
		if err != nil {
			return 0
		}
		if typ, _ := wgnoise.MessageType(buf[:n]); typ == wgnoise.TypeCookieReply {
			if err := cookies.ConsumeReply(buf[:n], time.Now()); err != nil {
				t.Fatal(err)
			}
			return typ
		}
		typ, _ := wgnoise.MessageType(buf[:n])
		return typ
	}
	if typ := initiate(); typ != wgnoise.TypeCookieReply {
		t.Fatalf("first initiation under load answered with type %d, want a cookie reply", typ)
	}
	for b.dev.limit.allow(netip.MustParseAddr("127.0.0.1"), time.Now()) {
	}
	if typ := initiate(); typ != 0 {
		t.Fatalf("initiation from a source over its rate answered with type %d, want none", typ)
	}
	time.Sleep(2 * time.Second / limitRate)
	if typ := initiate(); typ != wgnoise.TypeResponse {
		t.Fatalf("initiation once the source has credit answered with type %d, want a response", typ)
	}
}
