package sidecar_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/netlog"
	"github.com/wgsidecar/sidecar/sidecartest"
	"github.com/wgsidecar/sidecar/wrap"
)

// TestFlowLogCountsFromFirstPacket: a node whose file names a peer with an
// endpoint sends its first handshake initiation from Start; the flow log
// counts it (148 B) and the response (92 B), as a capture of the wire
// would, because counting starts before the socket's first packet (#15).
func TestFlowLogCountsFromFirstPacket(t *testing.T) {
	sidecartest.ForEachDevice(t, flowLogCountsFromFirstPacket)
}

func flowLogCountsFromFirstPacket(t *testing.T, own bool) {
	aCfg, bCfg := pairConfigs(t)
	b, err := sidecar.Start(bCfg, sidecar.Options{OwnWireGuard: own})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	sink := &netlog.MemorySink{}
	aCfg.Peers[0].Endpoint = fmt.Sprintf("127.0.0.1:%d", b.ListenPort())
	a, err := sidecar.Start(aCfg, sidecar.Options{FlowSink: sink, OwnWireGuard: own})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()

	// Wait for the handshake Start began, and the keepalive after it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		sent, recv := a.Messages()
		if sent.Initiations > 0 && recv.Responses > 0 && sent.Keepalives > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no handshake: sent %+v, received %+v", sent, recv)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.CutFlows(ctx); err != nil {
		t.Fatal(err)
	}
	sent, recv := a.Messages()
	var tx, rx uint64
	for _, m := range sink.Messages() {
		if len(m.VirtualTraffic)+len(m.SubnetTraffic)+len(m.ExitTraffic) > 0 {
			t.Fatalf("virtual traffic in a tunnel that carried none: %+v", m)
		}
		for _, e := range m.PhysicalTraffic {
			tx += e.TxBytes
			rx += e.RxBytes
		}
	}
	bytes := func(c wrap.MessageCounts) uint64 {
		return 148*c.Initiations + 92*c.Responses + 64*c.CookieReplies + 32*c.Keepalives
	}
	if tx != bytes(sent) || rx != bytes(recv) {
		t.Errorf("flow log: %d B sent, %d B received; the socket: %d B sent (%+v), %d B received (%+v)",
			tx, rx, bytes(sent), sent, bytes(recv), recv)
	}
}
