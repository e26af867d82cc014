package netstack

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/wgsidecar/sidecar/internal/leaktest"
)

// fullEndpoint is a UDP endpoint whose send buffer the test controls:
// while full is set, Write fails with ErrWouldBlock. A failure with
// freeing set also frees the buffer at that moment (full cleared,
// writable events sent), as when the link sends its whole queue just
// after a write found the buffer full.
type fullEndpoint struct {
	tcpip.Endpoint
	wq      *waiter.Queue
	full    atomic.Bool
	freeing atomic.Bool
	writes  atomic.Int32 // successful writes
}

func (e *fullEndpoint) Write(p tcpip.Payloader, opts tcpip.WriteOptions) (int64, tcpip.Error) {
	if e.full.Load() {
		if e.freeing.Swap(false) {
			e.full.Store(false)
			e.wq.Notify(waiter.WritableEvents)
		}
		return 0, &tcpip.ErrWouldBlock{}
	}
	n, err := e.Endpoint.Write(p, opts)
	if err == nil {
		e.writes.Add(1)
	}
	return n, err
}

// newFullEndpoint opens a UDP endpoint on a test stack, connected to an
// address inside it that nothing answers (its packets wait in the link's
// queue).
func newFullEndpoint(t *testing.T) *fullEndpoint {
	t.Helper()
	st := newTestStack(t, []netip.Addr{netip.MustParseAddr("10.9.0.1")})
	t.Cleanup(func() { st.Close() })
	e := &fullEndpoint{wq: new(waiter.Queue)}
	ep, terr := st.s.NewEndpoint(udp.ProtocolNumber, ipv4.ProtocolNumber, e.wq)
	if terr == nil {
		terr = ep.Connect(tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFrom4([4]byte{10, 9, 0, 2}), Port: 9})
	}
	if terr != nil {
		t.Fatal(terr)
	}
	t.Cleanup(ep.Close)
	e.Endpoint = ep
	return e
}

// TestUDPWriteFreedBeforeWait: the buffer empties right after a write
// found it full, before the writer waits. The write must go through, not
// wait for an event that already came and went.
func TestUDPWriteFreedBeforeWait(t *testing.T) {
	t.Cleanup(leaktest.Check(t)) // after the stack closes
	e := newFullEndpoint(t)
	c := newUDPConn(e.wq, e)
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	e.full.Store(true)
	e.freeing.Store(true)
	if n, err := c.Write([]byte("hello")); err != nil || n != 5 {
		t.Fatalf("Write = %d, %v; want 5, nil", n, err)
	}
	if got := e.writes.Load(); got != 1 {
		t.Errorf("%d writes reached the endpoint, want 1", got)
	}

	// gonet's own UDPConn loses that wake-up and waits out its deadline.
	// If this starts to pass, gVisor has fixed it and udpConn's Write
	// can go.
	e.full.Store(true)
	e.freeing.Store(true)
	g := gonet.NewUDPConn(e.wq, e)
	g.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := g.Write([]byte("hello")); err == nil {
		t.Log("gonet.UDPConn.Write no longer loses the wake-up; udpConn's Write may be dropped")
	}
}

// waitingWrite starts a write on c and returns its result's channel once
// the writer waits for e's buffer to have room.
func waitingWrite(c *udpConn, e *fullEndpoint) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := c.Write([]byte("hello"))
		done <- err
	}()
	for e.wq.Events()&waiter.WritableEvents == 0 {
		time.Sleep(time.Millisecond)
	}
	return done
}

// TestUDPWriteWaitsForSpace: a write into a full buffer waits, and goes
// through once space is freed.
func TestUDPWriteWaitsForSpace(t *testing.T) {
	t.Cleanup(leaktest.Check(t)) // after the stack closes
	e := newFullEndpoint(t)
	c := newUDPConn(e.wq, e)
	e.full.Store(true)
	done := waitingWrite(c, e)
	select {
	case err := <-done:
		t.Fatalf("Write returned %v while the buffer was full", err)
	default:
	}
	e.full.Store(false)
	e.wq.Notify(waiter.WritableEvents)
	if err := <-done; err != nil {
		t.Fatalf("Write = %v after space was freed", err)
	}
	if got := e.writes.Load(); got != 1 {
		t.Errorf("%d writes reached the endpoint, want 1", got)
	}
	if e.wq.Events() != 0 {
		t.Error("the writer left its waiter registered")
	}
}

// TestUDPWriteDeadline: a write into a full buffer ends at its deadline,
// also one set while it waits, with an error net/http and friends
// recognise as a timeout; a cleared deadline lets writes go on.
func TestUDPWriteDeadline(t *testing.T) {
	t.Cleanup(leaktest.Check(t)) // after the stack closes
	e := newFullEndpoint(t)
	c := newUDPConn(e.wq, e)
	e.full.Store(true)

	isTimeout := func(err error) bool {
		var ne net.Error
		return errors.Is(err, os.ErrDeadlineExceeded) && errors.As(err, &ne) && ne.Timeout()
	}
	c.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := c.Write([]byte("x")); !isTimeout(err) {
		t.Fatalf("Write past its deadline = %v, want a timeout", err)
	}
	if _, err := c.Write([]byte("x")); !isTimeout(err) {
		t.Fatalf("Write after its deadline = %v, want a timeout", err)
	}

	c.SetDeadline(time.Now().Add(time.Hour))
	done := waitingWrite(c, e)
	c.SetWriteDeadline(time.Now().Add(-time.Second))
	if err := <-done; !isTimeout(err) {
		t.Fatalf("Write whose deadline moved into the past = %v, want a timeout", err)
	}

	c.SetWriteDeadline(time.Time{})
	e.full.Store(false)
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatalf("Write with the deadline cleared = %v", err)
	}
	if _, err := c.WriteTo([]byte("x"), &net.TCPAddr{}); err == nil {
		t.Error("WriteTo a *net.TCPAddr succeeded")
	}

	// SetDeadline sets the read deadline too (gonet's).
	c.SetDeadline(time.Now().Add(-time.Second))
	read := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 10))
		read <- err
	}()
	select {
	case err := <-read:
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("Read past SetDeadline's deadline = %v, want a timeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("Read past SetDeadline's deadline still waits after 5 s")
		c.Close()
		<-read
	}
}
