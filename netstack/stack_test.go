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
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/refs"

	"github.com/wgsidecar/sidecar/internal/leaktest"
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
}

func newWire(t *testing.T, addrA, addrB []netip.Addr) *wire {
	t.Helper()
	a, err := New(Options{Addresses: addrA})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(Options{Addresses: addrB})
	if err != nil {
		t.Fatal(err)
	}
	w := &wire{a: a, b: b}
	w.wg.Add(2)
	go w.pump(0, a, b)
	go w.pump(1, b, a)
	return w
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
		for i := range n {
			out[i] = bufs[i][:offset+sizes[i]]
		}
		w.mu.Lock()
		w.packets[dir] += n
		w.maxRead = max(w.maxRead, n)
		w.mu.Unlock()
		if _, err := dst.Write(out, offset); err != nil && !errors.Is(err, os.ErrClosed) {
			panic(err)
		}
	}
}

func (w *wire) close() {
	w.a.Close()
	w.b.Close()
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
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
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
	go func() {
		buf := make([]byte, 2000)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(bytes.ToUpper(buf[:n]), from)
		}
	}()
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

// TestBulkBatchedAndReleased moves 64 MiB through the wire: the data
// arrives intact, reads come in batches, and every buffer goes back.
func TestBulkBatchedAndReleased(t *testing.T) {
	w := newWire(t, []netip.Addr{v4a}, []netip.Addr{v4b})
	ln, err := w.b.ListenTCP(netip.MustParseAddrPort("10.1.0.2:9"))
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
	c, err := w.a.DialContext(context.Background(), "tcp", "10.1.0.2:9")
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 64<<20)
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
	if msg := heldBuffers(); msg != "" {
		t.Errorf("gVisor buffers still referenced after Close:\n%.2000s", msg)
	}
}
