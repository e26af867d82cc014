package udpbind

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// openBind opens a bind on a free port and closes it when the test ends.
func openBind(t testing.TB) (*Bind, []conn.ReceiveFunc, uint16) {
	t.Helper()
	b := New().(*Bind)
	fns, port, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, fns, port
}

// receiver buffers as wireguard-go hands them over: batchSize buffers of
// 64 KiB.
type rxBufs struct {
	bufs  [][]byte
	sizes []int
	eps   []conn.Endpoint
}

func newRxBufs() *rxBufs {
	r := &rxBufs{sizes: make([]int, batchSize), eps: make([]conn.Endpoint, batchSize)}
	for range batchSize {
		r.bufs = append(r.bufs, make([]byte, 1<<16-1))
	}
	return r
}

// receiveN calls fn until n datagrams have arrived (or a deadline passes),
// returning copies of them and their endpoints.
func receiveN(t testing.TB, fn conn.ReceiveFunc, n int) ([][]byte, []*Endpoint) {
	got, eps, _ := receiveCount(t, fn, n)
	return got, eps
}

// receiveCount is receiveN that also says how many calls it took.
func receiveCount(t testing.TB, fn conn.ReceiveFunc, n int) ([][]byte, []*Endpoint, int) {
	t.Helper()
	r := newRxBufs()
	var got [][]byte
	var eps []*Endpoint
	calls := 0
	done := make(chan error, 1)
	go func() {
		for len(got) < n {
			calls++
			k, err := fn(r.bufs, r.sizes, r.eps)
			if err != nil {
				done <- err
				return
			}
			for i := range k {
				got = append(got, bytes.Clone(r.bufs[i][:r.sizes[i]]))
				eps = append(eps, r.eps[i].(*Endpoint))
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%d of %d datagrams arrived", len(got), n)
	}
	return got, eps, calls
}

// datagrams returns one datagram per size, each filled with a pattern that
// names its index.
func datagrams(sizes ...int) [][]byte {
	var out [][]byte
	for i, size := range sizes {
		d := make([]byte, size)
		for j := range d {
			d[j] = byte(i*7 + j)
		}
		out = append(out, d)
	}
	return out
}

func repeat(size, n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = size
	}
	return s
}

// TestSendReceive sends batches shaped like a tunnel's traffic (long runs
// of one size that the kernel segments and coalesces, short ones, mixed
// sizes) and checks that every datagram arrives whole, in order, from the
// right address, with the arrival address known.
func TestSendReceive(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sizes []int
	}{
		{"one", []int{148}},
		{"run of 100 and a short tail", append(repeat(1452, 100), 300)},
		{"more than one segmented send", repeat(1452, batchSize)},
		{"mixed", []int{100, 200, 200, 50, 1400, 1400, 1400, 32, 32, 1452}},
		{"run larger than 64 KiB", repeat(8000, 20)},
	} {
		for _, mode := range []string{"gso+gro", "plain"} {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				a, _, _ := openBind(t)
				z, zfns, zport := openBind(t)
				if mode == "plain" {
					a.v4.Load().gso.Store(false)
					z.v4.Load().gro = false
				} else if !a.v4.Load().gso.Load() || !z.v4.Load().gro {
					t.Skip("the kernel has no UDP GSO/GRO")
				}
				aport := a.v4.Load().conn.LocalAddr().(*net.UDPAddr).Port
				ep, err := a.ParseEndpoint(fmt.Sprintf("127.0.0.1:%d", zport))
				if err != nil {
					t.Fatal(err)
				}
				want := datagrams(tc.sizes...)
				if err := a.Send(want, ep); err != nil {
					t.Fatal(err)
				}
				got, eps, calls := receiveCount(t, zfns[0], len(want))
				// A run the kernel segmented arrives coalesced: a
				// handful of reads, not one per datagram.
				if mode == "gso+gro" && len(want) >= 64 && calls > len(want)/8 {
					t.Errorf("%d datagrams took %d reads: not coalesced", len(want), calls)
				}
				for i := range want {
					if !bytes.Equal(got[i], want[i]) {
						t.Fatalf("datagram %d: got %d bytes, want %d (or contents differ)", i, len(got[i]), len(want[i]))
					}
					if eps[i].DstAddrPort() != netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(aport)) {
						t.Fatalf("datagram %d from %v; sent from port %d", i, eps[i].DstAddrPort(), aport)
					}
					if eps[i].SrcIP() != netip.MustParseAddr("127.0.0.1") {
						t.Fatalf("datagram %d arrival address %v", i, eps[i].SrcIP())
					}
					if eps[i] != eps[0] {
						t.Fatalf("datagram %d has an endpoint of its own: not interned", i)
					}
				}
			})
		}
	}
}

func TestSendReceiveIPv6(t *testing.T) {
	a, _, _ := openBind(t)
	z, zfns, zport := openBind(t)
	if a.v6.Load() == nil || z.v6.Load() == nil {
		t.Skip("no IPv6 on this host")
	}
	if len(zfns) != 2 {
		t.Fatalf("%d receive functions; want IPv4 and IPv6", len(zfns))
	}
	ep, err := a.ParseEndpoint(fmt.Sprintf("[::1]:%d", zport))
	if err != nil {
		t.Fatal(err)
	}
	want := datagrams(append(repeat(1280, 70), 90)...)
	if err := a.Send(want, ep); err != nil {
		t.Fatal(err)
	}
	got, eps := receiveN(t, zfns[1], len(want))
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("datagram %d differs", i)
		}
	}
	if eps[0].DstIP() != netip.IPv6Loopback() || eps[0].SrcIP() != netip.IPv6Loopback() {
		t.Fatalf("endpoint %v from %v", eps[0].DstToString(), eps[0].SrcToString())
	}
}

// TestStickySource: a bind on the wildcard address answers from the address
// the peer reached (127.0.0.2), not the one routing would pick (127.0.0.1);
// once the source is cleared, routing picks again.
func TestStickySource(t *testing.T) {
	a, afns, aport := openBind(t)
	z := openPeer(t)
	reach := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), aport)
	if _, err := z.WriteToUDPAddrPort([]byte("hello"), reach); err != nil {
		t.Fatal(err)
	}
	_, eps := receiveN(t, afns[0], 1)
	ep := eps[0]
	if ep.SrcIP() != reach.Addr() {
		t.Fatalf("arrival address %v; want %v", ep.SrcIP(), reach.Addr())
	}
	reply := func() netip.Addr {
		t.Helper()
		if err := a.Send([][]byte{[]byte("reply")}, ep); err != nil {
			t.Fatal(err)
		}
		z.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		_, from, err := z.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatal(err)
		}
		if from.Port() != aport {
			t.Fatalf("reply from port %d; want %d", from.Port(), aport)
		}
		return from.Addr()
	}
	if got := reply(); got != reach.Addr() {
		t.Fatalf("reply from %v; want the address the peer reached, %v", got, reach.Addr())
	}
	ep.ClearSrc()
	if got := reply(); got != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("reply after ClearSrc from %v; want 127.0.0.1", got)
	}
	// The next datagram from the peer gets a fresh endpoint with the
	// source known again.
	if _, err := z.WriteToUDPAddrPort([]byte("again"), reach); err != nil {
		t.Fatal(err)
	}
	_, eps = receiveN(t, afns[0], 1)
	if eps[0] == ep || eps[0].SrcIP() != reach.Addr() {
		t.Fatalf("endpoint after ClearSrc: same=%v source %v", eps[0] == ep, eps[0].SrcIP())
	}
}

// openPeer is a plain UDP socket on 127.0.0.1 standing for a peer.
func openPeer(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestOpenClose(t *testing.T) {
	b, fns, port := openBind(t)
	if _, _, err := b.Open(0); !errors.Is(err, conn.ErrBindAlreadyOpen) {
		t.Fatalf("second Open: %v; want ErrBindAlreadyOpen", err)
	}
	errc := make(chan error, 1)
	go func() {
		r := newRxBufs()
		_, err := fns[0](r.bufs, r.sizes, r.eps)
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("receive after Close: %v; want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("receive still blocked after Close")
	}
	ep, _ := b.ParseEndpoint("127.0.0.1:9")
	if err := b.Send([][]byte{{1}}, ep); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Send on a closed bind: %v; want net.ErrClosed (what a sender racing Close must see)", err)
	}
	// Reopening on the same port works (wireguard-go's BindUpdate).
	if _, got, err := b.Open(port); err != nil || got != port {
		t.Fatalf("reopen on %d: port %d, %v", port, got, err)
	}
	if err := b.SetMark(0); err != nil {
		t.Fatal(err)
	}
}

func TestParseEndpoint(t *testing.T) {
	b := New()
	for in, want := range map[string]string{
		"127.0.0.1:51820":     "127.0.0.1:51820",
		"[::ffff:10.0.0.1]:7": "10.0.0.1:7",
		"[2001:db8::1]:51820": "[2001:db8::1]:51820",
	} {
		ep, err := b.ParseEndpoint(in)
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if got := ep.DstToString(); got != want {
			t.Errorf("%s: %s; want %s", in, got, want)
		}
		if ep.SrcIP().IsValid() || ep.SrcToString() != "" {
			t.Errorf("%s: parsed endpoint has a source", in)
		}
	}
	for _, bad := range []string{"", "127.0.0.1", "host:1", "[::1]:99999"} {
		if _, err := b.ParseEndpoint(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// TestNoAllocations: a steady send and receive allocates nothing.
func TestNoAllocations(t *testing.T) {
	a, _, _ := openBind(t)
	_, zfns, zport := openBind(t)
	ep, _ := a.ParseEndpoint(fmt.Sprintf("127.0.0.1:%d", zport))
	batch := datagrams(repeat(1452, 32)...)
	r := newRxBufs()
	round := func() {
		if err := a.Send(batch, ep); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < len(batch); {
			n, err := zfns[0](r.bufs, r.sizes, r.eps)
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
	}
	round() // the first datagram makes the endpoint
	if allocs := testing.AllocsPerRun(100, round); allocs > 0 {
		t.Fatalf("%.1f allocations per batch of 32", allocs)
	}
}

// TestFewBuffersLoseNothing: a caller with fewer buffers than a coalesced
// run has segments gets the rest of the run from its next calls, in
// order; nothing is dropped.
func TestFewBuffersLoseNothing(t *testing.T) {
	a, _, _ := openBind(t)
	z, zfns, zport := openBind(t)
	if !a.v4.Load().gso.Load() || !z.v4.Load().gro {
		t.Skip("the kernel has no UDP GSO/GRO")
	}
	ep, err := a.ParseEndpoint(fmt.Sprintf("127.0.0.1:%d", zport))
	if err != nil {
		t.Fatal(err)
	}
	want := datagrams(repeat(1000, 40)...)
	if err := a.Send(want, ep); err != nil {
		t.Fatal(err)
	}
	const room = 3
	bufs, sizes, eps := make([][]byte, room), make([]int, room), make([]conn.Endpoint, room)
	for i := range bufs {
		bufs[i] = make([]byte, 1<<16-1)
	}
	var mu sync.Mutex
	var got [][]byte
	done := make(chan error, 1)
	go func() {
		for {
			k, err := zfns[0](bufs, sizes, eps)
			if err != nil {
				done <- err
				return
			}
			mu.Lock()
			for i := range k {
				got = append(got, bytes.Clone(bufs[i][:sizes[i]]))
			}
			n := len(got)
			mu.Unlock()
			if n >= len(want) {
				done <- nil
				return
			}
		}
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("%d of %d datagrams arrived through %d buffers", len(got), len(want), room)
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("datagram %d differs", i)
		}
	}
}
