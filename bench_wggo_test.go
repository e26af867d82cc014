package sidecar_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/internal/wggo"
	"github.com/wgsidecar/sidecar/wgconf"
)

// The root-only row of the comparative benchmarks, impl=wggo-kernel: what a
// user with root would run instead of a sidecar. Two network namespaces
// joined by a veth pair, Debian's wireguard-go (a TUN interface) in each,
// configured with wg, and the kernel's own TCP and UDP over it; the
// benchmark's sockets are opened inside the namespaces. Its cpu-s/GB adds
// the two wireguard-go processes' CPU time to this process's (the kernel's
// work in softirq context is charged to whichever process it interrupts).
// The row is left out, with a note, where the machine cannot have it.

const wggoKind = "wggo-kernel"

// benchKinds is pairKinds, with the wggo-kernel row where it can run.
func benchKinds(b *testing.B) []string {
	if why := wggo.Missing(); why != "" {
		b.Logf("impl=%s left out: %s", wggoKind, why)
		return pairKinds
	}
	return append(pairKinds[:len(pairKinds):len(pairKinds)], wggoKind)
}

// wggoPids are the wireguard-go processes of the running wggo-kernel
// benchmark, whose CPU readUsage adds.
var (
	wggoMu   sync.Mutex
	wggoPids []int
)

// childCPU is the CPU time (user + system) the wireguard-go processes have
// used so far.
func childCPU() time.Duration {
	wggoMu.Lock()
	defer wggoMu.Unlock()
	var ticks int64
	for _, pid := range wggoPids {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command name (which may hold spaces):
		// utime and stime are the 14th and 15th of the whole line.
		rest := string(stat[strings.LastIndexByte(string(stat), ')')+2:])
		f := strings.Fields(rest)
		if len(f) > 12 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			s, _ := strconv.ParseInt(f[12], 10, 64)
			ticks += u + s
		}
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

// wggoNet builds the wggo-kernel pair: tunnel addresses 10.97.0.1 (in A,
// the client side) and 10.97.0.2 (in B, the server side).
func wggoNet(b *testing.B) benchNet {
	ctx := context.Background()
	u := testnet.NewUnderlay(ctx, b, "bw", "vbw")
	dir := b.TempDir()
	sides := []struct{ ns, veth, under, tun, wg string }{
		{u.NsA, u.VethA, "10.232.0.1", "10.97.0.1", fmt.Sprintf("wgba%d", testnet.ID())},
		{u.NsB, u.VethB, "10.232.0.2", "10.97.0.2", fmt.Sprintf("wgbb%d", testnet.ID())},
	}
	var keys [2]wgconf.PrivateKey
	for i, s := range sides {
		testnet.Run(ctx, b, "ip", "-n", s.ns, "addr", "add", s.under+"/24", "dev", s.veth)
		testnet.Run(ctx, b, "ip", "-n", s.ns, "link", "set", s.veth, "up")
		startWireguardGo(b, s.ns, s.wg)
		k, err := wgconf.GeneratePrivateKey()
		if err != nil {
			b.Fatal(err)
		}
		keys[i] = k
	}
	for i, s := range sides {
		o := sides[1-i]
		keyFile := filepath.Join(dir, s.wg+".key")
		if err := os.WriteFile(keyFile, []byte(keys[i].Base64()), 0o600); err != nil {
			b.Fatal(err)
		}
		testnet.Run(ctx, b, "ip", "netns", "exec", s.ns, "wg", "set", s.wg,
			"private-key", keyFile, "listen-port", "51830",
			"peer", keys[1-i].Public().String(), "allowed-ips", o.tun+"/32", "endpoint", o.under+":51830")
		testnet.Run(ctx, b, "ip", "-n", s.ns, "addr", "add", s.tun+"/24", "dev", s.wg)
		testnet.Run(ctx, b, "ip", "-n", s.ns, "link", "set", s.wg, "up")
	}
	a, z := testnet.OpenNetns(b, u.NsA), testnet.OpenNetns(b, u.NsB)
	return benchNet{
		listen: func() (ln net.Listener, err error) {
			z.Do(func() { ln, err = net.Listen("tcp", "10.97.0.2:5300") })
			return ln, err
		},
		dial: func() (c net.Conn, err error) {
			a.Do(func() { c, err = net.Dial("tcp", "10.97.0.2:5300") })
			return c, err
		},
		listenUDP: func() (pc net.PacketConn, err error) {
			z.Do(func() { pc, err = net.ListenPacket("udp", "10.97.0.2:5301") })
			return pc, err
		},
		dialUDP: func() (c net.Conn, err error) {
			a.Do(func() { c, err = net.Dial("udp", "10.97.0.2:5301") })
			return c, err
		},
	}
}

// startWireguardGo runs wireguard-go (wggo.Start) for the benchmark and
// counts its CPU time in readUsage while the benchmark runs.
func startWireguardGo(b *testing.B, ns, dev string) {
	pid := wggo.Start(b, ns, dev)
	wggoMu.Lock()
	wggoPids = append(wggoPids, pid)
	wggoMu.Unlock()
	b.Cleanup(func() {
		wggoMu.Lock()
		wggoPids = nil
		wggoMu.Unlock()
	})
}
