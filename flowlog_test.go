package sidecar_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/netlog"
	"github.com/wgsidecar/sidecar/sidecartest"
)

// recorder is a tun.Device layer that notes the size of every IP packet
// sent into the tunnel (Read) and received from it (Write): an independent
// record to check the flow log against.
type recorder struct {
	tun.Device
	mu     sync.Mutex
	tx, rx []int
}

func (r *recorder) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := r.Device.Read(bufs, sizes, offset)
	r.mu.Lock()
	r.tx = append(r.tx, sizes[:n]...)
	r.mu.Unlock()
	return n, err
}

func (r *recorder) Write(bufs [][]byte, offset int) (int, error) {
	r.mu.Lock()
	for _, b := range bufs {
		r.rx = append(r.rx, len(b)-offset)
	}
	r.mu.Unlock()
	return r.Device.Write(bufs, offset)
}

// take returns and forgets the sizes recorded so far.
func (r *recorder) take() (tx, rx []int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	tx, rx, r.tx, r.rx = r.tx, r.rx, nil, nil
	return tx, rx
}

// framing is the UDP payload WireGuard sends for an IP packet of size n
// through a tunnel of the given MTU: a 16-byte header, the packet padded to
// a multiple of 16 (but not past the MTU), a 16-byte tag.
func framing(n, mtu int) int {
	padded := (n + 15) &^ 15
	if n <= mtu && padded > mtu {
		padded = mtu
	}
	return 32 + padded
}

// quiesce waits for a window's last packets to cross: no keepalives are
// configured, and TCP has closed cleanly by then but for its last ACKs
// and FINs.
func quiesce() { time.Sleep(300 * time.Millisecond) }

// warmAndCut has a make its first request to the other node (the
// handshake), lets it settle, and starts a new window on each of nodes.
func warmAndCut(ctx context.Context, t *testing.T, a *sidecar.Node, nodes ...*sidecar.Node) {
	t.Helper()
	testnet.Get(t, a.HTTPClient(), "http://10.99.0.2/")
	a.HTTPClient().CloseIdleConnections()
	quiesce()
	for _, n := range nodes {
		if err := n.CutFlows(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFlowLogReconcilesLayers runs real traffic (HTTP, a bulk transfer,
// UDP, ping) between two nodes inside one quiescent window, and checks the
// node's flow log against an independent per-packet record: the virtual
// layer equals the IP packets that crossed the tunnel device, and the
// physical bytes equal their WireGuard framing plus the handshake and
// keepalive messages, exactly, in both directions.
func TestFlowLogReconcilesLayers(t *testing.T) { sidecartest.ForEachDevice(t, flowLogReconcilesLayers) }

func flowLogReconcilesLayers(t *testing.T, own bool) {
	var sinks [2]netlog.MemorySink
	var recs [2]*recorder
	nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{
		OwnWireGuard: own,
		NodeOptions: func(i int, o *sidecar.Options) {
			o.FlowSink = &sinks[i]
			o.WrapTUN = func(d tun.Device) tun.Device {
				recs[i] = &recorder{Device: d}
				return recs[i]
			}
		},
	})
	a, b := nodes[0], nodes[1]
	testnet.ServeHTTP(t, b, "b")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	warmAndCut(ctx, t, a, nodes...)
	recs[0].take()
	recs[1].take()
	sent0, recv0 := a.Messages()
	before := len(sinks[0].Messages())

	windowTraffic(ctx, t, a, b)
	quiesce()
	if err := a.CutFlows(ctx); err != nil {
		t.Fatal(err)
	}
	sent1, recv1 := a.Messages()
	tx, rx := recs[0].take()

	msgs := sinks[0].Messages()[before:]
	if len(msgs) == 0 {
		t.Fatal("no flow-log message for a window with traffic")
	}
	var virtual, physical []netlog.ConnectionCounts
	for _, m := range msgs {
		if m.NodeID != sidecar.NodeID(a.PublicKey()) || !m.Start.Equal(msgs[0].Start) {
			t.Errorf("message of another window or node: %s %v", m.NodeID, m.Start)
		}
		virtual = append(virtual, m.VirtualTraffic...)
		physical = append(physical, m.PhysicalTraffic...)
		if len(m.SubnetTraffic)+len(m.ExitTraffic) > 0 {
			t.Errorf("subnet/exit traffic between two tunnel nodes: %+v %+v", m.SubnetTraffic, m.ExitTraffic)
		}
	}
	for _, e := range virtual {
		if !strings.HasPrefix(e.Src, "10.99.0.1:") && !strings.HasPrefix(e.Src, "[fd00:99::1]:") {
			t.Errorf("virtual entry's source is not this node: %+v", e)
		}
	}
	bPort := fmt.Sprint(b.ListenPort())
	if len(physical) != 1 || physical[0].Src != "10.99.0.2:0" || physical[0].Dst != "127.0.0.1:"+bPort || physical[0].Proto != 0 {
		t.Fatalf("physical traffic %+v; want one entry 10.99.0.2:0 -> 127.0.0.1:%s", physical, bPort)
	}

	// The virtual layer against the recorder.
	v := testnet.SumCounts(virtual)
	var txBytes, rxBytes, txFramed, rxFramed uint64
	for _, n := range tx {
		txBytes += uint64(n)
		txFramed += uint64(framing(n, 1420))
	}
	for _, n := range rx {
		rxBytes += uint64(n)
		rxFramed += uint64(framing(n, 1420))
	}
	if v.TxPackets != uint64(len(tx)) || v.TxBytes != txBytes || v.RxPackets != uint64(len(rx)) || v.RxBytes != rxBytes {
		t.Errorf("virtual layer: logged tx %d/%d rx %d/%d; the device saw tx %d/%d rx %d/%d (packets/bytes)",
			v.TxPackets, v.TxBytes, v.RxPackets, v.RxBytes, len(tx), txBytes, len(rx), rxBytes)
	}

	// The physical layer: framing of the virtual packets plus handshake
	// and keepalive messages.
	p := physical[0]
	hsTx := 148*(sent1.Initiations-sent0.Initiations) + 92*(sent1.Responses-sent0.Responses) +
		64*(sent1.CookieReplies-sent0.CookieReplies) + 32*(sent1.Keepalives-sent0.Keepalives)
	hsRx := 148*(recv1.Initiations-recv0.Initiations) + 92*(recv1.Responses-recv0.Responses) +
		64*(recv1.CookieReplies-recv0.CookieReplies) + 32*(recv1.Keepalives-recv0.Keepalives)
	if p.TxBytes != txFramed+hsTx {
		t.Errorf("physical tx %d bytes; virtual packets framed %d + handshake/keepalive %d = %d", p.TxBytes, txFramed, hsTx, txFramed+hsTx)
	}
	if p.RxBytes != rxFramed+hsRx {
		t.Errorf("physical rx %d bytes; virtual packets framed %d + handshake/keepalive %d = %d", p.RxBytes, rxFramed, hsRx, rxFramed+hsRx)
	}
	t.Logf("window: virtual tx %d pkts %d B, rx %d pkts %d B; physical tx %d B, rx %d B; handshake/keepalive tx %d B, rx %d B",
		v.TxPackets, v.TxBytes, v.RxPackets, v.RxBytes, p.TxBytes, p.RxBytes, hsTx, hsRx)
	if txBytes < 3<<20 {
		t.Errorf("only %d bytes crossed; the bulk transfer is missing", txBytes)
	}
}

// windowTraffic is the traffic of a reconciliation window from a to b
// (which serves HTTP): HTTP over IPv4 and IPv6, a 3 MiB TCP transfer,
// UDP datagrams of sizes that pad differently, a ping.
func windowTraffic(ctx context.Context, t *testing.T, a, b *sidecar.Node) {
	t.Helper()
	for _, url := range []string{"http://10.99.0.2/", "http://[fd00:99::2]/"} {
		if got := testnet.Get(t, a.HTTPClient(), url); !strings.HasPrefix(got, "b saw") {
			t.Fatalf("GET %s: %q", url, got)
		}
	}
	a.HTTPClient().CloseIdleConnections()
	bulkTCP(t, a, b, 3<<20)
	udpEcho(t, a, b)
	if _, err := a.Ping(ctx, "fd00:99::2"); err != nil {
		t.Fatal(err)
	}
}

func bulkTCP(t *testing.T, from, to *sidecar.Node, size int64) {
	t.Helper()
	ln, err := to.Listen("tcp", ":7000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := testnet.SumOne(t, ln)
	c, err := from.Dial("tcp", "10.99.0.2:7000")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(c, rand.Reader, size); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if n := (<-done).N; n != size {
		t.Fatalf("bulk: %d of %d bytes", n, size)
	}
}

func udpEcho(t *testing.T, from, to *sidecar.Node) {
	t.Helper()
	pc, err := to.ListenPacket("udp", ":7001")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	testnet.ServePackets(t, pc, testnet.EchoDatagram)
	c, err := from.Dial("udp", "[fd00:99::2]:7001")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 20 {
		msg := make([]byte, 1+i*61) // sizes that pad differently
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(make([]byte, 2000)); err != nil {
			t.Fatal(err)
		}
	}
}
