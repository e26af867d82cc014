package netstack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/refs"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/wgsidecar/sidecar/internal/leaktest"
	"github.com/wgsidecar/sidecar/internal/testnet"
)

func TestMain(m *testing.M) {
	// Register every gVisor reference-counted object (packet buffers, buffer
	// chunks) so that a test can tell whether any is still held.
	refs.SetLeakMode(refs.LeaksPanic)
	os.Exit(m.Run())
}

// heldBuffers reports gVisor objects still holding references, or "" when
// none is.
func heldBuffers() (msg string) {
	defer func() {
		if r := recover(); r != nil {
			msg = fmt.Sprint(r)
		}
	}()
	refs.DoRepeatedLeakCheck()
	return ""
}

// wire joins two stacks back to back, moving packets between their devices
// in batches, as wireguard-go would (without the encryption).
type wire struct {
	a, b *Stack
	wg   sync.WaitGroup
	// packets counts what crossed, per direction.
	mu      sync.Mutex
	packets [2]int
	maxRead int
	// bad lists packets that a real peer would reject: longer than the
	// MTU, or with a wrong IPv4 header or TCP/UDP checksum (our stacks
	// do not check: WireGuard authenticates what they receive).
	bad []string
	// done ends a push wire's goroutines (newPushWire).
	done chan struct{}
}

// checkPacket says what is wrong with pkt, or "" if nothing is.
func checkPacket(pkt []byte) string {
	if len(pkt) > DefaultMTU {
		return fmt.Sprintf("%d bytes, over the MTU", len(pkt))
	}
	var proto uint8
	var src, dst tcpip.Address
	var l4 []byte
	switch pkt[0] >> 4 {
	case 4:
		ip := header.IPv4(pkt)
		if !ip.IsChecksumValid() {
			return "bad IPv4 header checksum"
		}
		if int(ip.TotalLength()) != len(pkt) {
			return fmt.Sprintf("IPv4 length %d, packet %d", ip.TotalLength(), len(pkt))
		}
		proto, src, dst, l4 = ip.Protocol(), ip.SourceAddress(), ip.DestinationAddress(), ip.Payload()
	case 6:
		ip := header.IPv6(pkt)
		if int(ip.PayloadLength())+header.IPv6MinimumSize != len(pkt) {
			return fmt.Sprintf("IPv6 payload length %d, packet %d", ip.PayloadLength(), len(pkt))
		}
		proto, src, dst, l4 = ip.NextHeader(), ip.SourceAddress(), ip.DestinationAddress(), ip.Payload()
	default:
		return "not IP"
	}
	if proto != uint8(header.TCPProtocolNumber) && proto != uint8(header.UDPProtocolNumber) {
		return ""
	}
	xsum := header.PseudoHeaderChecksum(tcpip.TransportProtocolNumber(proto), src, dst, uint16(len(l4)))
	if checksum.Checksum(l4, xsum) != 0xffff {
		return fmt.Sprintf("bad protocol %d checksum", proto)
	}
	return ""
}

func newWire(t testing.TB, addrA, addrB []netip.Addr) *wire {
	t.Helper()
	w := &wire{a: newTestStack(t, addrA), b: newTestStack(t, addrB)}
	w.wg.Add(2)
	go w.pump(0, w.a, w.b)
	go w.pump(1, w.b, w.a)
	return w
}

// newPushWire is newWire with both stacks in push mode (SetSender): each
// sender checks and copies its batch, and a goroutine per direction writes
// the copies into the other stack, as a WireGuard device's receiver would.
func newPushWire(t testing.TB, addrA, addrB []netip.Addr) *wire {
	t.Helper()
	w := &wire{a: newTestStack(t, addrA), b: newTestStack(t, addrB), done: make(chan struct{})}
	for dir, st := range []*Stack{w.a, w.b} {
		to := []*Stack{w.b, w.a}[dir]
		ch := make(chan [][]byte, 64)
		var sending atomic.Int32
		st.SetSender(func(bufs [][]byte, offset int) error {
			if sending.Add(1) > 1 {
				w.note(dir, 0, []string{"send called concurrently"})
			}
			defer sending.Add(-1)
			out := make([][]byte, len(bufs))
			var bad []string
			for i, b := range bufs {
				if cap(b)-len(b) < pushTail {
					bad = append(bad, fmt.Sprintf("%d bytes of tail room, want %d", cap(b)-len(b), pushTail))
				}
				if msg := checkPacket(b[offset:]); msg != "" {
					bad = append(bad, msg)
				}
				out[i] = append(make([]byte, 0, len(b)), b...)
			}
			w.note(dir, len(bufs), bad)
			select {
			case ch <- out:
				return nil
			case <-w.done:
				return os.ErrClosed
			}
		}, 16, pushTail)
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for {
				select {
				case out := <-ch:
					to.Device().Write(out, 16)
				case <-w.done:
					return
				}
			}
		}()
	}
	return w
}

// pushTail is the room beyond each packet a push-mode test sender asks
// for (WireGuard's padding and tag).
const pushTail = 31

func newTestStack(t testing.TB, addrs []netip.Addr) *Stack {
	t.Helper()
	st, err := New(Options{Addresses: addrs})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// note records a batch of n packets that crossed in direction dir, and
// what is wrong with them.
func (w *wire) note(dir, n int, bad []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.bad = append(w.bad, bad...)
	w.packets[dir] += n
	w.maxRead = max(w.maxRead, n)
}

func (w *wire) pump(dir int, from, to *Stack) {
	defer w.wg.Done()
	src, dst := from.Device(), to.Device()
	const offset = 16
	bufs := make([][]byte, src.BatchSize())
	sizes := make([]int, len(bufs))
	for i := range bufs {
		bufs[i] = make([]byte, offset+1500)
	}
	for {
		n, err := src.Read(bufs, sizes, offset)
		if err != nil {
			return
		}
		out := make([][]byte, n)
		var bad []string
		for i := range n {
			out[i] = bufs[i][:offset+sizes[i]]
			if msg := checkPacket(out[i][offset:]); msg != "" {
				bad = append(bad, msg)
			}
		}
		w.note(dir, n, bad)
		if _, err := dst.Write(out, offset); err != nil && !errors.Is(err, os.ErrClosed) {
			panic(err)
		}
	}
}

func (w *wire) close() {
	w.a.Close()
	w.b.Close()
	if w.done != nil {
		close(w.done)
	}
	w.wg.Wait()
}

var (
	v4a = netip.MustParseAddr("10.1.0.1")
	v4b = netip.MustParseAddr("10.1.0.2")
	v6a = netip.MustParseAddr("fd01::1")
	v6b = netip.MustParseAddr("fd01::2")
)

func TestTCPUDPAndPingBothFamilies(t *testing.T) {
	check := leaktest.Check(t)
	w := newWire(t, []netip.Addr{v4a, v6a}, []netip.Addr{v4b, v6b})

	// One dual-stack TCP listener on b serves both families.
	ln, err := w.b.ListenTCP(netip.AddrPortFrom(netip.Addr{}, 80))
	if err != nil {
		t.Fatal(err)
	}
	testnet.Serve(t, ln, testnet.Echo)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, dst := range []string{"10.1.0.2:80", "[fd01::2]:80"} {
		c, err := w.a.DialContext(ctx, "tcp", dst)
		if err != nil {
			t.Fatalf("dial %s: %v", dst, err)
		}
		msg := []byte("echo over " + dst)
		c.Write(msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
			t.Errorf("tcp echo %s: %q, %v", dst, got, err)
		}
		c.Close()
	}

	// UDP both families.
	pc, err := w.b.ListenUDP(netip.AddrPortFrom(netip.Addr{}, 53))
	if err != nil {
		t.Fatal(err)
	}
	testnet.ServePackets(t, pc, testnet.UpperDatagram)
	for _, dst := range []string{"10.1.0.2:53", "[fd01::2]:53"} {
		c, err := w.a.DialContext(ctx, "udp", dst)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("hello"))
		buf := make([]byte, 100)
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != "HELLO" {
			t.Errorf("udp %s: %q, %v", dst, buf[:n], err)
		}
		c.Close()
	}

	for _, dst := range []netip.Addr{v4b, v6b} {
		if rtt, err := w.a.Ping(ctx, dst); err != nil || rtt <= 0 {
			t.Errorf("ping %v: %v, %v", dst, rtt, err)
		}
	}

	// Refused: a port with no listener answers with a RST at once.
	start := time.Now()
	if _, err := w.a.DialContext(ctx, "tcp", "10.1.0.2:81"); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("dial closed port: %v; want connection refused", err)
	} else if time.Since(start) > 5*time.Second {
		t.Errorf("refusal took %v", time.Since(start))
	}

	// A UDP port with nothing on it answers with ICMP port unreachable,
	// which a connected socket reports as connection refused.
	uc, err := w.a.DialContext(ctx, "udp", "[fd01::2]:54")
	if err != nil {
		t.Fatal(err)
	}
	uc.SetDeadline(time.Now().Add(5 * time.Second))
	uc.Write([]byte("anyone?"))
	if _, err := uc.Read(make([]byte, 10)); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("udp to a closed port: %v; want connection refused", err)
	}
	uc.Close()

	ln.Close()
	pc.Close()
	w.close()
	check()
	if msg := heldBuffers(); msg != "" {
		t.Errorf("gVisor buffers still referenced after Close:\n%.2000s", msg)
	}
}

func TestRoutesLimitDestinations(t *testing.T) {
	w := newWire(t, []netip.Addr{v4a}, []netip.Addr{v4b})
	defer w.close()
	w.a.SetRoutes([]netip.Prefix{netip.MustParsePrefix("10.1.0.2/32")})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := w.a.DialContext(ctx, "tcp", "10.1.0.3:80")
	if err == nil || !strings.Contains(err.Error(), "no route") {
		t.Errorf("dial outside routes: %v; want no route", err)
	}
	for _, bad := range []struct{ network, addr string }{
		{"tcp", "example.com:80"}, {"tcp4", "[fd01::2]:80"}, {"tcp6", "10.1.0.2:80"}, {"sctp", "10.1.0.2:80"},
	} {
		if _, err := w.a.DialContext(ctx, bad.network, bad.addr); err == nil {
			t.Errorf("DialContext(%q, %q) succeeded", bad.network, bad.addr)
		}
	}
}

// TestBulkBatchedAndReleased moves 64 MiB (8 MiB over IPv6) through the
// wire: the data arrives intact in packets a real peer would accept (the
// link cuts gVisor's large TCP segments itself), reads come in batches, and
// every buffer goes back.
func TestBulkBatchedAndReleased(t *testing.T) {
	for _, tc := range []struct {
		a, b netip.Addr
		size int
	}{{v4a, v4b, 64 << 20}, {v6a, v6b, 8 << 20}} {
		t.Run(tc.a.String(), func(t *testing.T) { testBulk(t, newWire(t, []netip.Addr{tc.a}, []netip.Addr{tc.b}), tc.b, tc.size) })
		t.Run(tc.a.String()+"/push", func(t *testing.T) {
			testBulk(t, newPushWire(t, []netip.Addr{tc.a}, []netip.Addr{tc.b}), tc.b, tc.size)
		})
	}
}

func testBulk(t *testing.T, w *wire, b netip.Addr, size int) {
	to := netip.AddrPortFrom(b, 9)
	ln, err := w.b.ListenTCP(to)
	if err != nil {
		t.Fatal(err)
	}
	sum := make(chan [32]byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			sum <- [32]byte{}
			return
		}
		h := sha256.New()
		io.Copy(h, c)
		c.Close()
		sum <- [32]byte(h.Sum(nil))
	}()
	c, err := w.a.DialContext(context.Background(), "tcp", to.String())
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7 / 3)
	}
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got, want := <-sum, sha256.Sum256(data); got != want {
		t.Fatal("checksum mismatch")
	}
	ln.Close()
	w.close()
	if w.maxRead < 2 {
		t.Errorf("largest read batch was %d packet(s); want batching", w.maxRead)
	}
	if len(w.bad) > 0 {
		t.Errorf("%d packets a real peer would drop; first: %s", len(w.bad), w.bad[0])
	}
	if msg := heldBuffers(); msg != "" {
		t.Errorf("gVisor buffers still referenced after Close:\n%.2000s", msg)
	}
}

// BenchmarkWireRequestResponse is BenchmarkRequestResponse of the root
// package without WireGuard: a 64-byte echo between two stacks joined by
// the wire. It shows how much of a tunnel round trip is the two gVisor
// stacks and their goroutine hand-offs.
//
//	go test -run '^$' -bench WireRequestResponse ./netstack
func BenchmarkWireRequestResponse(b *testing.B) {
	w := newWire(b, []netip.Addr{v4a}, []netip.Addr{v4b})
	defer w.close()
	ln, err := w.b.ListenTCP(netip.MustParseAddrPort("10.1.0.2:7"))
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	testnet.Serve(b, ln, testnet.EchoMessages(64))
	c, err := w.a.DialContext(context.Background(), "tcp", "10.1.0.2:7")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg := make([]byte, 64)
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, msg); err != nil {
			b.Fatal(err)
		}
	}
}

// TestPushBatchesDatagrams: in push mode, datagrams an application writes
// one by one are sent by the stack's own goroutine, so those written
// while a send is under way leave together in the next batch, while TCP
// is sent by its writer.
func TestPushBatchesDatagrams(t *testing.T) {
	check := leaktest.Check(t)
	st := newTestStack(t, []netip.Addr{v4a})
	release := make(chan struct{})
	var mu sync.Mutex
	var batches []int
	st.SetSender(func(bufs [][]byte, offset int) error {
		mu.Lock()
		first := len(batches) == 0
		batches = append(batches, len(bufs))
		mu.Unlock()
		if first { // the first send is slow: the writer must not wait for it
			select {
			case <-release:
			case <-time.After(2 * time.Second):
			}
		}
		return nil
	}, 16, pushTail)
	// The device's Read takes nothing in push mode; it ends with Close.
	readDone := make(chan error, 1)
	go func() {
		bufs, sizes := [][]byte{make([]byte, 1500)}, []int{0}
		_, err := st.Device().Read(bufs, sizes, 0)
		readDone <- err
	}()
	c, err := st.DialContext(t.Context(), "udp", "10.1.0.2:53")
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	for range n {
		if _, err := c.Write([]byte("datagram")); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		sent, got := 0, append([]int(nil), batches...)
		mu.Unlock()
		for _, b := range got {
			sent += b
		}
		if sent == n {
			if len(got) > n/2 {
				t.Errorf("%d datagrams left in %d batches %v; want them batched behind the slow send", n, len(got), got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d datagrams sent, in batches %v", sent, n, got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.Close()
	st.Close()
	if err := <-readDone; !errors.Is(err, os.ErrClosed) {
		t.Errorf("Read in push mode ended with %v; want os.ErrClosed", err)
	}
	check()
}
