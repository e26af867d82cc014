package testnet

import (
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
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
