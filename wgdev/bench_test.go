package wgdev

import (
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/wgsidecar/sidecar/udpbind"
	"github.com/wgsidecar/sidecar/wgnoise"
)

const (
	benchBatch  = 64   // packets per Send or TUN read
	benchWindow = 2048 // packets in flight at most
	benchSize   = 1420 // bytes per IP packet
)

// benchTUN is a tun.Device for benchmarks: Read makes a batch of copies
// of pkt per credit (the sending wireguard-go's TUN), Write counts what it
// is handed (the receiving side's).
type benchTUN struct {
	pkt     []byte
	credits chan struct{}
	closed  chan struct{}
	got     atomic.Int64
}

func newBenchTUN(pkt []byte) *benchTUN {
	return &benchTUN{pkt: pkt, credits: make(chan struct{}, 64), closed: make(chan struct{})}
}

func (b *benchTUN) File() *os.File { return nil }
func (b *benchTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case <-b.closed:
		return 0, os.ErrClosed
	case <-b.credits:
	}
	n := min(len(bufs), benchBatch)
	for i := range n {
		sizes[i] = copy(bufs[i][offset:], b.pkt)
	}
	return n, nil
}
func (b *benchTUN) Write(bufs [][]byte, offset int) (int, error) {
	b.got.Add(int64(len(bufs)))
	return len(bufs), nil
}
func (b *benchTUN) MTU() (int, error)        { return 1500, nil }
func (b *benchTUN) Name() (string, error)    { return "bench", nil }
func (b *benchTUN) Events() <-chan tun.Event { return make(chan tun.Event) }
func (b *benchTUN) BatchSize() int           { return benchBatch }
func (b *benchTUN) Close() error {
	select {
	case <-b.closed:
	default:
		close(b.closed)
	}
	return nil
}

// benchDevice is either implementation, for the benchmark's two ends.
type benchDevice interface {
	IpcSet(string) error
	IpcGet() (string, error)
	Up() error
	Close()
}

// benchPair sets up two devices of one implementation on udpbind over
// loopback, a sending to b, and returns a's push function and b's TUN.
func benchPair(b *testing.B, ours bool) (push func(), rx *benchTUN, closeAll func()) {
	ka, kb := newKey(b), newKey(b)
	pa, pb := ka.PublicKey(), kb.PublicKey()
	pkt := udpPacket(netipMust("10.9.0.1"), netipMust("10.9.0.2"), make([]byte, benchSize-28))
	txTUN, rxTUN := newBenchTUN(pkt), newBenchTUN(nil)
	var devA, devB benchDevice
	if ours {
		da := New(Config{TUN: txTUN, Bind: udpbind.New()})
		db := New(Config{TUN: rxTUN, Bind: udpbind.New()})
		devA, devB = da, db
		bufs := make([][]byte, benchBatch)
		for i := range bufs {
			bufs[i] = make([]byte, SendOffset+len(pkt), SendOffset+len(pkt)+SendTail)
		}
		push = func() {
			for _, buf := range bufs {
				copy(buf[SendOffset:], pkt)
			}
			_ = da.Send(bufs, SendOffset)
		}
	} else {
		quiet := device.NewLogger(device.LogLevelSilent, "")
		da := device.NewDevice(txTUN, udpbind.New(), quiet)
		db := device.NewDevice(rxTUN, udpbind.New(), quiet)
		devA, devB = da, db
		push = func() { txTUN.credits <- struct{}{} }
	}
	set := func(d benchDevice, k wgnoise.PrivateKey, peer wgnoise.PublicKey, allowed, ep string) {
		s := fmt.Sprintf("private_key=%s\nlisten_port=0\npublic_key=%s\nallowed_ip=%s\n%s", hexKey(k[:]), hexKey(peer[:]), allowed, ep)
		if err := d.IpcSet(s); err != nil {
			b.Fatal(err)
		}
	}
	set(devB, kb, pa, "10.9.0.1/32", "")
	if err := devB.Up(); err != nil {
		b.Fatal(err)
	}
	st, _ := devB.IpcGet()
	set(devA, ka, pb, "10.9.0.2/32", fmt.Sprintf("endpoint=127.0.0.1:%d\n", portOf(b, st)))
	if err := devA.Up(); err != nil {
		b.Fatal(err)
	}
	return push, rxTUN, func() { devA.Close(); devB.Close() }
}

func portOf(b *testing.B, status string) int {
	var port int
	for _, l := range strings.Split(status, "\n") {
		if _, err := fmt.Sscanf(l, "listen_port=%d", &port); err == nil {
			return port
		}
	}
	b.Fatal("no listen_port")
	return 0
}

// BenchmarkPair pushes 1420-byte packets from one device to another over
// loopback UDP and counts them at the receiving TUN: ours against two
// wireguard-go devices, both on the project's udpbind. One op is one
// packet sent; "delivered" is the share that arrived.
func BenchmarkPair(b *testing.B) {
	for _, impl := range []struct {
		name string
		ours bool
	}{{"wgdev", true}, {"wireguard-go", false}} {
		b.Run(impl.name, func(b *testing.B) {
			push, rx, closeAll := benchPair(b, impl.ours)
			defer closeAll()
			for rx.got.Load() == 0 { // the handshake
				push()
				time.Sleep(10 * time.Millisecond)
			}
			base := rx.got.Load()
			b.SetBytes(benchSize)
			b.ReportAllocs()
			b.ResetTimer()
			sent := int64(0)
			for sent < int64(b.N) {
				push()
				sent += benchBatch
				waitDelivered(rx, base, sent-benchWindow)
			}
			waitDelivered(rx, base, sent)
			b.StopTimer()
			b.ReportMetric(float64(rx.got.Load()-base)/float64(sent), "delivered")
		})
	}
}

// waitDelivered waits until at least want packets arrived after base, or
// until nothing arrived for 100 ms (the rest was lost).
func waitDelivered(rx *benchTUN, base, want int64) {
	last, since := rx.got.Load(), time.Now()
	for rx.got.Load()-base < want {
		if n := rx.got.Load(); n != last {
			last, since = n, time.Now()
		} else if time.Since(since) > 100*time.Millisecond {
			return
		}
		time.Sleep(20 * time.Microsecond)
	}
}
