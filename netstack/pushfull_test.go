package netstack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/wgsidecar/sidecar/internal/leaktest"
)

// blockingSender is a push-mode send function that blocks every call
// until released, then records the datagrams it was handed by the number
// each carries (datagramID).
type blockingSender struct {
	entered chan struct{} // capacity 1: a call has started
	release chan struct{} // closed: calls return

	mu    sync.Mutex
	calls int
	ids   []uint64
	bad   []string
}

func newBlockingSender() *blockingSender {
	return &blockingSender{entered: make(chan struct{}, 1), release: make(chan struct{})}
}

func (s *blockingSender) send(bufs [][]byte, offset int) error {
	s.mu.Lock()
	s.calls++
	s.mu.Unlock()
	select {
	case s.entered <- struct{}{}:
	default:
	}
	<-s.release
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range bufs {
		id, err := datagramID(b[offset:])
		if err != nil {
			s.bad = append(s.bad, err.Error())
			continue
		}
		s.ids = append(s.ids, id)
	}
	return nil
}

// sent returns the numbers of the datagrams sent so far, and the number of
// calls made.
func (s *blockingSender) sent() ([]uint64, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]uint64(nil), s.ids...), s.calls
}

// datagramID reads the number an IPv4 UDP datagram from v4a to queueDst
// carries (its payload: 8 bytes, big-endian).
func datagramID(pkt []byte) (uint64, error) {
	ip := header.IPv4(pkt)
	if len(pkt) < header.IPv4MinimumSize || ip.Protocol() != uint8(header.UDPProtocolNumber) {
		return 0, fmt.Errorf("not an IPv4 UDP packet: %x", pkt)
	}
	if src, dst := ip.SourceAddress().String(), ip.DestinationAddress().String(); src != v4a.String() || dst != queueDst.Addr().String() {
		return 0, fmt.Errorf("UDP datagram %s -> %s, want %s -> %s", src, dst, v4a, queueDst.Addr())
	}
	payload := header.UDP(ip.Payload()).Payload()
	if len(payload) != 8 {
		return 0, fmt.Errorf("UDP payload of %d bytes, want 8", len(payload))
	}
	return binary.BigEndian.Uint64(payload), nil
}

// queueDst is where the queue-filling datagrams go (nothing answers: in
// push mode they only reach the send function).
var queueDst = netip.AddrPortFrom(v4b, 9000)

// queueFill is what fillQueue wrote.
type queueFill struct {
	accepted []uint64 // the datagrams whose Write succeeded, in order
	waited   int      // writes that gave up waiting for send buffer
	conns    []net.Conn
}

// fillQueue blocks the stack's pusher in a send, then writes numbered
// datagrams until the stack has refused at least minDrops of them for a
// full queue. gVisor charges each queued datagram to its socket's send
// buffer, so one socket's writes block before the queue is full: a write
// that waits (its deadline passes) moves on to a new socket. A datagram
// the full queue refuses is lost silently: its write succeeds.
func fillQueue(t *testing.T, st *Stack, s *blockingSender, minDrops uint64) *queueFill {
	t.Helper()
	f := &queueFill{}
	var next uint64
	write := func(c net.Conn) error {
		id := next
		next++
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], id)
		if _, err := c.Write(b[:]); err != nil {
			return err
		}
		f.accepted = append(f.accepted, id)
		return nil
	}
	dial := func() net.Conn {
		c, err := st.DialContext(t.Context(), "udp", fmt.Sprintf("%s:%d", queueDst.Addr(), int(queueDst.Port())+len(f.conns)))
		if err != nil {
			t.Fatal(err)
		}
		f.conns = append(f.conns, c)
		return c
	}
	if err := write(dial()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the pusher did not send the first datagram within 10 s")
	}
	for st.QueueDrops() < minDrops {
		c := dial()
		for st.QueueDrops() < minDrops {
			if len(f.conns) > 256 || next > 2*outQueueLen {
				t.Fatalf("%d sockets, %d datagrams written, %d accepted, %d writes waited, and %d queue-full drops; want %d", len(f.conns), next, len(f.accepted), f.waited, st.QueueDrops(), minDrops)
			}
			c.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
			if err := write(c); err != nil {
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					t.Fatalf("write: %v", err)
				}
				f.waited++
				break // the socket's send buffer is full
			}
		}
	}
	return f
}

func (f *queueFill) close() {
	for _, c := range f.conns {
		c.Close()
	}
}

// waitSent waits until s has sent n datagrams and returns them.
func (s *blockingSender) waitSent(t *testing.T, n int) []uint64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ids, calls := s.sent()
		if len(ids) >= n {
			return ids
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d datagrams sent within 10 s, in %d calls", len(ids), n, calls)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPushQueueFull: in push mode the link's queue fills while a send
// blocks. The datagrams that do not fit are counted as queue-full drops
// (Drops, QueueDrops) and shown to the drop observer, each with its
// packet; they are the last ones written (the overflow), and the writes
// themselves succeed, as a lost datagram's do. Once the send is released
// every datagram that was queued is sent, in the order written.
func TestPushQueueFull(t *testing.T) {
	check := leaktest.Check(t)
	st := newTestStack(t, []netip.Addr{v4a})
	obs := &recordDrops{active: true}
	st.SetDropObserver(obs)
	s := newBlockingSender()
	st.SetSender(s.send, 16, pushTail)
	f := fillQueue(t, st, s, 10)
	defer f.close()

	drops := st.Drops(DropQueueFull)
	if st.QueueDrops() != drops || drops < 10 {
		t.Fatalf("QueueDrops %d, Drops(DropQueueFull) %d; want the same, at least 10", st.QueueDrops(), drops)
	}
	// The observer heard of each drop, with its packet: the last datagrams
	// written, after the queue had filled.
	kept := len(f.accepted) - int(drops)
	obs.mu.Lock()
	if len(obs.got) != int(drops) {
		t.Errorf("the observer heard of %d drops, the stack counted %d", len(obs.got), drops)
	}
	for i, d := range obs.got {
		id, err := datagramID(obs.pkts[i])
		switch {
		case d != DropQueueFull:
			t.Errorf("drop %d: reason %d, want DropQueueFull", i, d)
		case err != nil:
			t.Errorf("drop %d: %v", i, err)
		case kept+i >= len(f.accepted) || id != f.accepted[kept+i]:
			t.Errorf("drop %d: datagram %d, want the %d-th of the overflow", i, id, i)
		}
	}
	obs.mu.Unlock()
	if kept < outQueueLen-1 {
		t.Errorf("%d datagrams kept before the first drop; want the queue full (%d) first", kept, outQueueLen-1)
	}

	close(s.release)
	sent := s.waitSent(t, kept)
	if !slices.Equal(sent, f.accepted[:kept]) {
		t.Errorf("sent %d datagrams, want the %d kept ones in the order written (first difference at %d)", len(sent), kept, firstDiff(sent, f.accepted[:kept]))
	}
	s.mu.Lock()
	if len(s.bad) > 0 {
		t.Errorf("%d packets handed to send were not the datagrams written; first: %s", len(s.bad), s.bad[0])
	}
	s.mu.Unlock()
	f.close()
	st.Close()
	if ids, _ := s.sent(); len(ids) != kept {
		t.Errorf("%d datagrams sent in the end, want %d", len(ids), kept)
	}
	check()
	if msg := heldBuffers(); msg != "" {
		t.Errorf("gVisor buffers still referenced after Close:\n%.2000s", msg)
	}
}

// TestPushCloseWhileSendBlocked: Close returns while the pusher is blocked
// in a send with the queue full behind it, releases the queued packets,
// and once the send returns the pusher sends nothing more and ends.
func TestPushCloseWhileSendBlocked(t *testing.T) {
	check := leaktest.Check(t)
	st := newTestStack(t, []netip.Addr{v4a})
	s := newBlockingSender()
	st.SetSender(s.send, 16, pushTail)
	f := fillQueue(t, st, s, 1)
	readDone := make(chan error, 1)
	go func() {
		bufs, sizes := [][]byte{make([]byte, 1500)}, []int{0}
		_, err := st.Device().Read(bufs, sizes, 0)
		readDone <- err
	}()

	closed := make(chan struct{})
	go func() {
		st.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		close(s.release) // let the test end
		t.Fatal("Close did not return within 10 s while a send was blocked")
	}
	_, calls := s.sent()
	close(s.release)
	f.close()
	check() // the pusher's goroutine ends once its send returns
	ids, after := s.sent()
	if after != calls {
		t.Errorf("%d sends after Close, want none", after-calls)
	}
	if !slices.Equal(ids, f.accepted[:1]) {
		t.Errorf("sent %v, want only what the blocked send had (%v)", ids, f.accepted[:1])
	}
	select {
	case err := <-readDone:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Read in push mode ended with %v; want os.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("Read in push mode still blocked 10 s after Close")
	}
	if msg := heldBuffers(); msg != "" {
		t.Errorf("gVisor buffers still referenced after Close:\n%.2000s", msg)
	}
}

// firstDiff is the first index at which a and b differ.
func firstDiff(a, b []uint64) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
