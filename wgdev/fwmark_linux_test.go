package wgdev

import (
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wgsidecar/sidecar/internal/leaktest"
)

// socketMarks returns the firewall mark (SO_MARK) of each of this
// process's UDP sockets bound to port, by family ("udp4", "udp6"), found
// among its open files.
func socketMarks(t *testing.T, port uint16) map[string]int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	marks := map[string]int{}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || typ != unix.SOCK_DGRAM {
			continue
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			continue
		}
		family := ""
		switch a := sa.(type) {
		case *unix.SockaddrInet4:
			if a.Port == int(port) {
				family = "udp4"
			}
		case *unix.SockaddrInet6:
			if a.Port == int(port) {
				family = "udp6"
			}
		}
		if family == "" {
			continue
		}
		mark, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK)
		if err != nil {
			t.Fatalf("SO_MARK of the %s socket on port %d: %v", family, port, err)
		}
		marks[family] = mark
	}
	if len(marks) == 0 {
		t.Fatalf("no UDP socket on port %d among the process's files", port)
	}
	return marks
}

// checkMarks checks that every socket of the device's bind carries mark.
func checkMarks(t *testing.T, nd *node, mark int, when string) {
	t.Helper()
	port := nd.listenPort(t)
	marks := socketMarks(t, port)
	t.Logf("%s: %v", when, marks)
	for family, got := range marks {
		if got != mark {
			t.Errorf("%s: the %s socket on port %d has mark %d, want %d", when, family, port, got, mark)
		}
	}
}

// TestFwmarkOnSockets sets the firewall mark through UAPI on our device
// with the real bind and reads it back from its sockets: set while up,
// kept when the bind is reopened on a new port and by Down and Up, and
// cleared by fwmark=0. SO_MARK needs CAP_NET_ADMIN.
func TestFwmarkOnSockets(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("setting SO_MARK needs CAP_NET_ADMIN: run as root to check the sockets' mark (TestFwmark checks the device's side without it)")
	}
	t.Cleanup(leaktest.Check(t))
	nd := newOurs(t, 1)
	defer nd.close()
	checkMarks(t, nd, 0, "before fwmark")
	nd.ipcSet(t, "fwmark=51820\n")
	checkMarks(t, nd, 51820, "set while up")
	old := nd.port
	nd.ipcSet(t, "listen_port=0\n")
	if nd.port = nd.listenPort(t); nd.port == old {
		t.Logf("the bind reopened on the same port %d", old)
	}
	checkMarks(t, nd, 51820, "after listen_port")
	if err := nd.dev.Down(); err != nil {
		t.Fatal(err)
	}
	nd.ipcSet(t, "fwmark=4294967295\n")
	if err := nd.dev.Up(); err != nil {
		t.Fatal(err)
	}
	checkMarks(t, nd, -1, "set while down, then up") // 0xffffffff read as a C int
	nd.ipcSet(t, "fwmark=0\n")
	checkMarks(t, nd, 0, "cleared")
}
