package udpbind

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// socketMarks returns the firewall mark (SO_MARK) of each open socket of
// b, by family ("udp4", "udp6").
func (b *Bind) socketMarks(t *testing.T) map[string]int {
	t.Helper()
	marks := map[string]int{}
	for family, s := range map[string]*socket{"udp4": b.v4.Load(), "udp6": b.v6.Load()} {
		if s == nil {
			continue
		}
		var mark int
		var gerr error
		if err := s.rc.Control(func(fd uintptr) {
			mark, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK)
		}); err != nil || gerr != nil {
			t.Fatalf("SO_MARK of the %s socket: %v", family, errors.Join(err, gerr))
		}
		marks[family] = mark
	}
	if len(marks) == 0 {
		t.Fatal("the bind has no open socket")
	}
	return marks
}

func checkMarks(t *testing.T, b *Bind, want int, when string) {
	t.Helper()
	for family, got := range b.socketMarks(t) {
		if got != want {
			t.Errorf("%s: the %s socket has mark %d, want %d", when, family, got, want)
		}
	}
}

// TestSetMark reads the firewall mark back from the sockets: SetMark marks
// the open sockets, a mark set before Open (or kept from before Close)
// marks the new ones from the start, 0 clears it, and marked sockets
// still carry datagrams. SO_MARK needs CAP_NET_ADMIN; without it SetMark
// must fail with EPERM rather than leave the sockets unmarked silently.
func TestSetMark(t *testing.T) {
	b, _, port := openBind(t)
	if os.Geteuid() != 0 {
		if err := b.SetMark(7); !errors.Is(err, syscall.EPERM) {
			t.Errorf("SetMark without CAP_NET_ADMIN: %v, want EPERM", err)
		}
		t.Skip("setting SO_MARK needs CAP_NET_ADMIN: run as root to check the sockets' mark")
	}
	checkMarks(t, b, 0, "opened without a mark")
	if err := b.SetMark(7); err != nil {
		t.Fatal(err)
	}
	checkMarks(t, b, 7, "SetMark on the open bind")

	// Reopened: the kept mark is set before the sockets are bound.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Open(port); err != nil {
		t.Fatal(err)
	}
	checkMarks(t, b, 7, "reopened")
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.SetMark(0x10000); err != nil {
		t.Fatalf("SetMark on the closed bind: %v", err)
	}
	fns, _, err := b.Open(port)
	if err != nil {
		t.Fatal(err)
	}
	checkMarks(t, b, 0x10000, "set while closed, then opened")

	// Marked sockets still send and receive.
	z, zfns, zport := openBind(t)
	if err := z.SetMark(0x10000); err != nil {
		t.Fatal(err)
	}
	ep, _ := b.ParseEndpoint(fmt.Sprintf("127.0.0.1:%d", zport))
	if err := b.Send(datagrams(100, 200), ep); err != nil {
		t.Fatal(err)
	}
	receiveN(t, zfns[0], 2)
	if b.v6.Load() != nil {
		back, _ := z.ParseEndpoint(fmt.Sprintf("[::1]:%d", port))
		if err := z.Send(datagrams(300), back); err != nil {
			t.Fatal(err)
		}
		receiveN(t, fns[len(fns)-1], 1) // the IPv6 socket's
	}

	if err := b.SetMark(0); err != nil {
		t.Fatal(err)
	}
	checkMarks(t, b, 0, "cleared")
}
