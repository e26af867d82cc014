package testnet

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Exchange connects to addr, has one byte echoed and closes first: one
// connection of a churn load (the client's side is the one left in
// TIME_WAIT).
func Exchange(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte{'x'}); err != nil {
		return err
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return fmt.Errorf("no echo: %w", err)
	}
	return nil
}

// HeapAndStacks returns the heap bytes in use, and those plus the
// goroutine stacks', after a collection (two, so that sync.Pools are
// emptied too and a pooled buffer counts only while in use).
func HeapAndStacks() (heap, total int64) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc), int64(m.HeapAlloc + m.StackInuse)
}

// ProcMemory returns a process's resident set now and at its peak
// (VmRSS, VmHWM of /proc/PID/status; pid 0 is this process), in bytes,
// or an error where /proc does not say.
func ProcMemory(pid int) (now, peak int64, err error) {
	path := "/proc/self/status"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/status", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	field := func(name string) int64 {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, name+":"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				return kb << 10
			}
		}
		return 0
	}
	return field("VmRSS"), field("VmHWM"), nil
}

// IdleConns is what OpenIdleSOCKS5 returns: connections through a SOCKS5
// proxy to an echo server, idle after one byte each way.
type IdleConns []net.Conn

// OpenIdleSOCKS5 opens n connections through the SOCKS5 proxy at proxy
// (no authentication) to the IPv4 address dst, which must echo; each has
// one byte echoed and is then left idle.
func OpenIdleSOCKS5(tb testing.TB, proxy string, dst netip.AddrPort, n int) IdleConns {
	tb.Helper()
	req := append([]byte{5, 1, 0, 5, 1, 0, 1}, dst.Addr().AsSlice()...)
	req = binary.BigEndian.AppendUint16(req, dst.Port())
	conns := make(IdleConns, 0, n)
	for i := range n {
		c, err := net.DialTimeout("tcp", proxy, 10*time.Second)
		if err != nil {
			conns.Close()
			tb.Fatal(err)
		}
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(20 * time.Second))
		c.Write(req)
		var reply [12]byte
		if _, err := io.ReadFull(c, reply[:]); err != nil || reply[3] != 0 {
			conns.Close()
			tb.Fatalf("connection %d: SOCKS5 reply %x, %v", i, reply, err)
		}
		if err := conns.echo(i); err != nil {
			conns.Close()
			tb.Fatalf("connection %d: %v", i, err)
		}
		c.SetDeadline(time.Time{})
	}
	return conns
}

// Echo has one byte echoed on every connection, as it would after they
// have been idle: the first failure is returned.
func (cs IdleConns) Echo() error {
	for i := range cs {
		if err := cs.echo(i); err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
	}
	return nil
}

func (cs IdleConns) echo(i int) error {
	c := cs[i]
	c.SetDeadline(time.Now().Add(20 * time.Second))
	defer c.SetDeadline(time.Time{})
	b := []byte{byte('a' + i%26)}
	if _, err := c.Write(b); err != nil {
		return err
	}
	var got [1]byte
	if _, err := io.ReadFull(c, got[:]); err != nil {
		return fmt.Errorf("no echo: %w", err)
	}
	if got[0] != b[0] {
		return fmt.Errorf("echo %q, sent %q", got[0], b[0])
	}
	return nil
}

// Close closes every connection.
func (cs IdleConns) Close() {
	for _, c := range cs {
		c.Close()
	}
}
