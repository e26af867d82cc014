package testnet

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/netlog"
)

// FreePort returns a loopback TCP or UDP ("udp") port that was free a
// moment ago.
func FreePort(t testing.TB, network string) int {
	t.Helper()
	if network == "udp" {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		return pc.LocalAddr().(*net.UDPAddr).Port
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// ClosedAddr returns a loopback address whose TCP or UDP port nothing
// listens on (a moment ago).
func ClosedAddr(t testing.TB, network string) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", FreePort(t, network))
}

// Pattern returns an endless, cheap pseudo-random byte stream (xorshift),
// the same for every call.
func Pattern() io.Reader { return &pattern{x: 0x9e3779b97f4a7c15} }

type pattern struct{ x uint64 }

func (p *pattern) Read(b []byte) (int, error) {
	for i := range b {
		p.x ^= p.x << 13
		p.x ^= p.x >> 7
		p.x ^= p.x << 17
		b[i] = byte(p.x)
	}
	return len(b), nil
}

// SendAndSum writes size bytes of Pattern on c, half-closes it, and checks
// that the answer (read to the end, within 30 s) names their checksum as
// SumReply does; it closes c.
func SendAndSum(t testing.TB, c net.Conn, size int64) {
	t.Helper()
	defer c.Close()
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(c, h), Pattern(), size); err != nil {
		t.Fatal(err)
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("sum %x", h.Sum(nil)); string(got) != want {
		t.Fatalf("answer %q; want %q", got, want)
	}
}

// Buffer is a bytes.Buffer safe for concurrent writers (a logger, a child
// process) and a reader. The zero value is ready for use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// SumCounts adds up the packet and byte counts of flow-log entries.
func SumCounts(es []netlog.ConnectionCounts) (c netlog.ConnectionCounts) {
	for _, e := range es {
		c.TxPackets += e.TxPackets
		c.TxBytes += e.TxBytes
		c.RxPackets += e.RxPackets
		c.RxBytes += e.RxBytes
	}
	return c
}
