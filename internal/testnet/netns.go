package testnet

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// ID names what a namespace test makes (namespaces, interfaces, sockets)
// after this process, so that runs on one machine do not collide.
func ID() int { return os.Getpid() % 1_000_000 }

// Underlay is two network namespaces joined by a veth pair.
type Underlay struct{ NsA, NsB, VethA, VethB string }

// NewUnderlay creates namespaces wgsc-TAG-a-ID and wgsc-TAG-b-ID, a veth
// pair between them (ends VETHa-ID and VETHb-ID, within the 15 characters
// an interface name may have) and brings lo up in both. It needs root. The
// namespaces, and the veth ends with them, are deleted when the test ends;
// a cleanup registered before them fails the test if any is left behind.
func NewUnderlay(ctx context.Context, t testing.TB, tag, veth string) Underlay {
	t.Helper()
	id := ID()
	u := Underlay{
		NsA:   fmt.Sprintf("wgsc-%s-a-%d", tag, id),
		NsB:   fmt.Sprintf("wgsc-%s-b-%d", tag, id),
		VethA: fmt.Sprintf("%sa%d", veth, id),
		VethB: fmt.Sprintf("%sb%d", veth, id),
	}
	t.Cleanup(func() {
		list, _ := exec.Command("ip", "netns", "list").Output()
		for _, ns := range []string{u.NsA, u.NsB} {
			if bytes.Contains(list, []byte(ns)) {
				t.Errorf("network namespace %s left behind", ns)
			}
		}
		CheckLinksGone(t, u.VethA, u.VethB)
	})
	for _, ns := range []string{u.NsA, u.NsB} {
		Run(ctx, t, "ip", "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v: %s", ns, err, out)
			}
		})
	}
	Run(ctx, t, "ip", "link", "add", u.VethA, "netns", u.NsA, "type", "veth", "peer", "name", u.VethB, "netns", u.NsB)
	for _, ns := range []string{u.NsA, u.NsB} {
		Run(ctx, t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	return u
}

// CheckLinksGone fails the test for each of devs still in the host
// namespace.
func CheckLinksGone(t testing.TB, devs ...string) {
	links, _ := exec.Command("ip", "-o", "link", "show").Output()
	for _, dev := range devs {
		if strings.Contains(string(links), " "+dev+":") || strings.Contains(string(links), " "+dev+"@") {
			t.Errorf("interface %s left behind in the host namespace", dev)
		}
	}
}

// Netns runs functions on a thread inside a network namespace, so that
// the sockets they open belong to it (a socket stays in the namespace it
// was opened in, whichever thread uses it later).
type Netns struct{ self, target *os.File }

// OpenNetns opens network namespace ns (one `ip netns add` made) for Do;
// the handles are closed when the test ends.
func OpenNetns(t testing.TB, ns string) *Netns {
	t.Helper()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	target, err := os.Open("/var/run/netns/" + ns)
	if err != nil {
		self.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { self.Close(); target.Close() })
	return &Netns{self, target}
}

// Do runs f on a locked thread of its own inside the namespace and waits
// for it. If the thread cannot be moved back, it is not handed back to
// the runtime: it ends with its goroutine.
func (h *Netns) Do(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		if err := unix.Setns(int(h.target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			panic(err)
		}
		f()
		if unix.Setns(int(h.self.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
	}()
	<-done
}
