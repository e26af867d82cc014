package netlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/wgsidecar/sidecar/internal/leaktest"
	"github.com/wgsidecar/sidecar/ipfix"
	"github.com/wgsidecar/sidecar/metrics"
	"github.com/wgsidecar/sidecar/wgconf"
)

// loopbackExporter is an exporter to a UDP socket on loopback that reads
// and discards what arrives (the wire format is package ipfix's to test).
func loopbackExporter(t testing.TB) *ipfix.Exporter {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	uc := pc.(*net.UDPConn)
	uc.SetReadBuffer(8 << 20)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			if _, err := uc.Read(buf); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	exp, err := ipfix.New(ipfix.Config{Collector: pc.LocalAddr().String(), ObservationDomain: 1})
	if err != nil {
		t.Fatal(err)
	}
	return exp
}

// renderRecord prints a record for comparisons.
func renderRecord(r ipfix.Record) string {
	dir := "in"
	if r.Direction == ipfix.Egress {
		dir = "out"
	}
	return fmt.Sprintf("point=%d %s proto=%d %v -> %v %d/%d", r.ObservationPoint, dir, r.Proto, r.Src, r.Dst, r.Packets, r.Octets)
}

func TestIPFIXSinkRecords(t *testing.T) {
	msgs := Build("nTestNode", windowStart, windowEnd, scenarioVirtual, scenarioPhysical, false, scenario.IsNode)
	if len(msgs) != 1 {
		t.Fatalf("%d messages", len(msgs))
	}
	m := &msgs[0]
	// An entry that went one way only gets one record.
	m.PhysicalTraffic = append(m.PhysicalTraffic, cc(0, "10.0.0.4:0", "192.0.2.4:51820", 1, 148, 0, 0))

	for _, tc := range []struct {
		layers []string
		want   []string
	}{
		{nil, []string{ // the default: all but physical
			"point=1 out proto=1 10.0.0.1:0 -> 10.0.0.3:0 3/252",
			"point=1 in proto=1 10.0.0.3:0 -> 10.0.0.1:0 3/252",
			"point=1 out proto=6 10.0.0.1:40000 -> 10.0.0.2:80 10/1200",
			"point=1 in proto=6 10.0.0.2:80 -> 10.0.0.1:40000 8/9000",
			"point=1 out proto=17 [fd00::1]:5353 -> [fd00::2]:53 2/140",
			"point=1 in proto=17 [fd00::2]:53 -> [fd00::1]:5353 2/300",
			"point=2 out proto=6 10.0.0.1:40001 -> 192.168.50.7:22 40/4800",
			"point=2 in proto=6 192.168.50.7:22 -> 10.0.0.1:40001 38/61000",
			"point=2 out proto=6 172.16.5.9:8080 -> 10.0.0.4:51000 5/900",
			"point=2 in proto=6 10.0.0.4:51000 -> 172.16.5.9:8080 6/700",
			"point=2 out proto=17 [fd00::1]:40010 -> [fd50::10]:123 1/76",
			"point=2 in proto=17 [fd50::10]:123 -> [fd00::1]:40010 1/76",
			// Exit traffic as the message has it: anonymised, the removed
			// addresses missing (sent as unspecified).
			"point=3 out proto=0 invalid AddrPort -> 10.0.0.4:0 21/30090",
			"point=3 in proto=0 10.0.0.4:0 -> invalid AddrPort 19/2245",
			"point=3 out proto=0 10.0.0.1:0 -> invalid AddrPort 13/2060",
			"point=3 in proto=0 invalid AddrPort -> 10.0.0.1:0 16/18120",
			"point=3 out proto=0 [fd00::1]:0 -> invalid AddrPort 8/1004",
			"point=3 in proto=0 invalid AddrPort -> [fd00::1]:0 10/7104",
		}},
		{[]string{"physical"}, []string{
			"point=4 out proto=0 10.0.0.2:0 -> 203.0.113.2:51820 60/10000",
			"point=4 in proto=0 203.0.113.2:51820 -> 10.0.0.2:0 52/73000",
			"point=4 out proto=0 10.0.0.3:0 -> [2001:db8::3]:51820 25/4100",
			"point=4 in proto=0 [2001:db8::3]:51820 -> 10.0.0.3:0 27/26000",
			"point=4 out proto=0 10.0.0.4:0 -> 192.0.2.4:51820 1/148",
		}},
	} {
		s, err := NewIPFIXSink(loopbackExporter(t), tc.layers)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Write(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range s.recs {
			if !r.Start.Equal(windowStart) || !r.End.Equal(windowEnd) {
				t.Errorf("record %v spans %v..%v, not the window", renderRecord(r), r.Start, r.End)
			}
			got = append(got, renderRecord(r))
		}
		if d := diff(strings.Join(got, "\n"), strings.Join(tc.want, "\n")); d != "" {
			t.Errorf("layers %v: records differ (-got +want):\n%s", tc.layers, d)
		}
		if st := s.exp.Stats(); st.Records != uint64(len(tc.want)) || st.Errors != 0 {
			t.Errorf("layers %v: exporter stats %+v, want %d records", tc.layers, st, len(tc.want))
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Write(context.Background(), m); !errors.Is(err, ipfix.ErrClosed) {
			t.Errorf("Write after Close: %v", err)
		}
	}
	if _, err := NewIPFIXSink(nil, []string{"virtual", "wire"}); err == nil {
		t.Error("an unknown layer was accepted")
	}
}

func TestObservationDomain(t *testing.T) {
	a, b := ObservationDomain("n0123456789abcdef"), ObservationDomain("n0123456789abcdee")
	if a == 0 || b == 0 || a == b || a != ObservationDomain("n0123456789abcdef") {
		t.Errorf("domains %d, %d: want stable, non-zero and different for different nodes", a, b)
	}
}

// TestStartNodeIPFIXErrors: a collector that does not resolve stops the
// start, with the error the node's At makes of it. (The name is one
// the resolver refuses without asking a DNS server: a label may not end in
// '-'.)
func TestStartNodeIPFIXErrors(t *testing.T) {
	defer leaktest.Check(t)()
	log := slog.New(slog.DiscardHandler)
	cfg, err := wgconf.Parse("test.conf", []byte("[Interface]\nPrivateKey = kNH1TGDZC+AdefOEQcts3GlPUIuRwMrS7cSJZBiZg3Y=\nAddress = 10.0.0.1/32\n\n[IPFIX]\nCollector = no-such-collector-:4739\n"), wgconf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	nl, err := StartNode(NodeConfig{IPFIX: cfg.IPFIX, At: cfg.At, NodeID: "n1", Log: log}, nil, nil)
	var e *wgconf.Error
	if nl != nil || !errors.As(err, &e) || e.File != "test.conf" || e.Line != 6 || e.Key != "Collector" || !strings.Contains(err.Error(), "no-such-collector-") {
		t.Fatalf("StartNode with an unresolvable collector: %v, %v; want test.conf:6: Collector: ...", nl, err)
	}
	_, err = StartNode(NodeConfig{IPFIX: cfg.IPFIX, NodeID: "n1", Log: log}, nil, nil)
	if err == nil || !strings.HasPrefix(err.Error(), "[IPFIX] Collector: ") {
		t.Fatalf("without At: %v", err)
	}

	// [IPFIX] alone turns the flow log on.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	var tun, sock fakeDevice
	x := &wgconf.IPFIX{Collector: pc.LocalAddr().String()}
	nl, err = StartNode(NodeConfig{IPFIX: x, NodeID: "n1", Log: log}, &tun, &sock)
	if err != nil || nl == nil {
		t.Fatalf("StartNode with [IPFIX] alone: %v, %v", nl, err)
	}
	tun.send(0, 6, "10.0.0.1:1000", "10.0.0.2:80", 100)
	if err := nl.Cut(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := nl.ipfix.Stats(); st.Records != 1 || st.Messages != 2 {
		t.Errorf("after one window of one flow: %+v, want the templates and one record", st)
	}
	var reg metrics.Registry
	nl.RegisterMetrics(&reg)
	var page bytes.Buffer
	if err := metrics.Write(&page, reg.Gather()); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"wgsidecar_ipfix_messages_total 2\n", "wgsidecar_ipfix_records_total 1\n", "wgsidecar_ipfix_export_errors_total 0\n"} {
		if !strings.Contains(page.String(), line) {
			t.Errorf("/metrics lacks %q:\n%s", line, page.String())
		}
	}
	if err := nl.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkIPFIXSink exports a window of 1,000 flows with traffic both
// ways (2,000 records) to a collector socket on loopback: the message's
// entries parsed, the records encoded and sent.
func BenchmarkIPFIXSink(b *testing.B) {
	var flows []Flow
	for i := range 1000 {
		src := fmt.Sprintf("10.0.0.1:%d", 10000+i)
		if i%4 == 3 {
			src = fmt.Sprintf("[fd00::1]:%d", 10000+i)
			flows = append(flows, classified(flow(0, protoTCP, src, "[fd00::2]:443", 10, 1500, 8, 9000)))
			continue
		}
		flows = append(flows, classified(flow(0, protoTCP, src, "10.0.0.2:443", 10, 1500, 8, 9000)))
	}
	msgs := Build("nBench", windowStart, windowEnd, flows, nil, false, scenario.IsNode)
	if len(msgs) != 1 || len(msgs[0].VirtualTraffic) != 1000 {
		b.Fatalf("%d messages", len(msgs))
	}
	s, err := NewIPFIXSink(loopbackExporter(b), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	s.Write(ctx, &msgs[0]) // the buffers grow once
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Write(ctx, &msgs[0]); err != nil {
			b.Fatal(err)
		}
	}
}
