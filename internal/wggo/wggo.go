// Package wggo runs Debian's wireguard-go, the independent WireGuard peer
// of the tests and benchmarks that need root: Missing says whether this
// machine can, Start runs one in a network namespace the caller created.
// It imports nothing of the module, so any package's tests may use it.
package wggo

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Missing says why wireguard-go cannot be run here: not root, or one of
// ip, wg, wireguard-go or the extra tools not on PATH; "" when it can.
func Missing(extra ...string) string {
	if os.Geteuid() != 0 {
		return "needs root: network namespaces and a wireguard-go TUN interface"
	}
	for _, tool := range append([]string{"ip", "wg", "wireguard-go"}, extra...) {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " is not on PATH (Debian packages wireguard-go, wireguard-tools, iproute2)"
		}
	}
	return ""
}

// Start runs wireguard-go in the foreground in network namespace ns,
// creating TUN interface dev, and returns once its UAPI socket exists (so
// wg can configure it). When the test ends it is stopped (SIGTERM, then
// SIGKILL after 5 s) and its socket removed; should the test binary die
// first, the kernel sends it SIGTERM. Its output is logged if the test
// failed. It returns the process's ID (ip netns exec execs wireguard-go in
// place).
func Start(t testing.TB, ns, dev string) int {
	t.Helper()
	var out bytes.Buffer // read only once the process has ended
	cmd := exec.Command("ip", "netns", "exec", ns, "wireguard-go", "-f", dev)
	cmd.Env = append(os.Environ(), "WG_PROCESS_FOREGROUND=1")
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting wireguard-go: %v", err)
	}
	sock := filepath.Join("/var/run/wireguard", dev+".sock")
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("removing %s: %v", sock, err)
		}
		if t.Failed() {
			t.Logf("wireguard-go %s output:\n%s", dev, out.String())
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			return cmd.Process.Pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("wireguard-go did not create %s", sock) // the cleanup logs its output
		}
	}
}
