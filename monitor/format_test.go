package monitor

import (
	"bytes"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

var t0 = time.Date(2026, 1, 2, 12, 0, 0, 1000, time.UTC)

type formatCase struct {
	name string
	ev   Event
}

func formatCases() []formatCase {
	trace := func(p Point, pkt []byte) Event { return Event{Time: t0, Kind: KindTrace, Point: p, Packet: pkt} }
	return []formatCase{
		{"tcp4-syn", trace(FromPeer, tcpPacket("10.0.0.1", 2000, "10.0.0.2", 80, header.TCPFlagSyn, ""))},
		{"tcp4-synack", trace(ToPeer, tcpPacket("10.0.0.2", 80, "10.0.0.1", 2000, header.TCPFlagSyn|header.TCPFlagAck, ""))},
		{"tcp4-psh-ack", trace(ToApp, tcpPacket("10.0.0.1", 2000, "10.0.0.2", 80, header.TCPFlagPsh|header.TCPFlagAck, "GET / HTTP/1.1\r\n"))},
		{"tcp4-fin-ack", trace(FromApp, tcpPacket("10.0.0.1", 2000, "10.0.0.2", 80, header.TCPFlagFin|header.TCPFlagAck, ""))},
		{"tcp4-rst", trace(FromPeer, tcpPacket("10.0.0.2", 80, "10.0.0.1", 2000, header.TCPFlagRst, ""))},
		{"tcp6-syn", trace(FromPeer, tcpPacket("fd00::1", 2000, "fd00::2", 443, header.TCPFlagSyn, ""))},
		{"udp4", trace(FromNetwork, udpPacket("192.0.2.1", 51820, "192.0.2.2", 51820, "hello, world"))},
		{"udp6", trace(ToNetwork, udpPacket("2001:db8::1", 5353, "2001:db8::2", 53, "q"))},
		{"icmp4-echo-request", trace(FromPeer, echoPacket("10.0.0.1", "10.0.0.2", false, 1, 2))},
		{"icmp4-echo-reply", trace(ToPeer, echoPacket("10.0.0.2", "10.0.0.1", true, 1, 2))},
		{"icmp6-echo-request", trace(FromPeer, echoPacket("fd00::1", "fd00::2", false, 3, 4))},
		{"icmp6-echo-reply", trace(ToPeer, echoPacket("fd00::2", "fd00::1", true, 3, 4))},
		{"icmp4-unreachable", trace(ToPeer, unreachablePacket("10.0.0.2", "10.0.0.1", udpPacket("10.0.0.1", 53, "10.0.0.2", 9, "x")[:28]))},
		{"drop-no-listener", Event{Time: t0, Kind: KindDrop, Point: FromPeer, Reason: NoListener,
			Packet: udpPacket("10.0.0.1", 53, "10.0.0.2", 9, "hello")}},
		{"drop-unknown-reason", Event{Time: t0, Kind: KindDrop, Point: FromNetwork, Reason: 999, Packet: []byte{0x45}}},
		{"conn", Event{Time: t0, Kind: KindConn, Conn: &ConnRecord{
			Kind: "socks5", From: "127.0.0.1:40000", To: "example.com:443", Verdict: "ok",
			BytesIn: 1234, BytesOut: 567, Duration: 1500 * time.Millisecond}}},
		{"lost", Event{Time: t0, Kind: KindLost, Lost: 17}},
		{"trace-conn-open", Event{Time: t0, Kind: KindTrace, Point: FromApp, Conn: &ConnRecord{
			Kind: "tcp-forward", From: "127.0.0.1:40000", To: "10.0.0.2:80", Verdict: "open"}}},
		{"drop-conn-policy", Event{Time: t0, Kind: KindDrop, Point: FromApp, Reason: PolicyRefused, Conn: &ConnRecord{
			Kind: "socks5", From: "127.0.0.1:40000", Verdict: "refused: wrong username or password"}}},
		{"drop-detail", Event{Time: t0, Kind: KindDrop, Point: FromPeer, Reason: SourceNotAllowed, Detail: "from peer(AbCd…wXyZ)"}},
		{"wire-initiation", trace(ToNetwork, UDPDatagram(netip.MustParseAddrPort("127.0.0.1:51820"),
			netip.MustParseAddrPort("127.0.0.2:51821"), append([]byte{1, 0, 0, 0}, make([]byte, 144)...)))},
		{"wire-data6", trace(FromNetwork, UDPDatagram(netip.MustParseAddrPort("[::1]:51821"),
			netip.MustParseAddrPort("[::1]:51820"), append([]byte{4, 0, 0, 0}, make([]byte, 60)...)))},
		{"drop-wire-malformed", Event{Time: t0, Kind: KindDrop, Point: FromNetwork, Reason: Malformed,
			Packet: UDPDatagram(netip.MustParseAddrPort("127.0.0.1:9"), netip.MustParseAddrPort("127.0.0.1:51820"), []byte("junk"))}},
		{"malformed-empty", trace(FromPeer, nil)},
		{"malformed-short-ipv4", trace(FromPeer, []byte{0x45, 0, 0, 40, 1, 2, 3})},
		{"malformed-version", trace(FromPeer, []byte{0x75, 0, 0, 40, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})},
		{"malformed-truncated-tcp", trace(FromPeer, tcpPacket("10.0.0.1", 2000, "10.0.0.2", 80, header.TCPFlagSyn, "")[:30])},
		{"malformed-bad-ihl", trace(FromPeer, append([]byte{0x4f}, tcpPacket("10.0.0.1", 2000, "10.0.0.2", 80, header.TCPFlagSyn, "")[1:]...))},
	}
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (-update to accept):\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestFormatLineGolden(t *testing.T) {
	var b strings.Builder
	for _, c := range formatCases() {
		b.WriteString(c.name + ": " + FormatLine(c.ev) + "\n")
	}
	golden(t, "line.golden", b.String())
}

func TestFormatJSONGolden(t *testing.T) {
	var b bytes.Buffer
	for _, c := range formatCases() {
		j, err := FormatJSON(c.ev)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		b.Write(j)
		b.WriteByte('\n')
	}
	golden(t, "json.golden", b.String())
}

func TestFormatVerboseGolden(t *testing.T) {
	var b strings.Builder
	for _, c := range formatCases() {
		b.WriteString("== " + c.name + "\n" + FormatVerbose(c.ev))
	}
	golden(t, "verbose.golden", b.String())
}

func TestFormatHexGolden(t *testing.T) {
	var b strings.Builder
	for _, c := range formatCases() {
		b.WriteString("== " + c.name + "\n" + FormatHex(c.ev))
	}
	golden(t, "hex.golden", b.String())
}

func TestFormatLineExample(t *testing.T) {
	ev := Event{Time: t0, Kind: KindTrace, Point: FromPeer,
		Packet: tcpPacket("10.0.0.1", 2000, "10.0.0.2", 80, header.TCPFlagSyn, "")}
	const want = "12:00:00.000001 from-peer trace 10.0.0.1:2000 -> 10.0.0.2:80 tcp SYN"
	if got := FormatLine(ev); got != want {
		t.Errorf("FormatLine = %q, want %q", got, want)
	}
	ev.Kind, ev.Reason = KindDrop, NoListener
	const wantDrop = "12:00:00.000001 from-peer drop (2 no-listener) 10.0.0.1:2000 -> 10.0.0.2:80 tcp SYN"
	if got := FormatLine(ev); got != wantDrop {
		t.Errorf("FormatLine = %q, want %q", got, wantDrop)
	}
}

func TestDropReasonNames(t *testing.T) {
	seen := map[string]DropReason{}
	for r := DropReason(1); int(r) < len(reasonNames); r++ {
		name := r.String()
		if name == "" || strings.HasPrefix(name, "reason-") {
			t.Errorf("reason %d has no name", r)
		}
		if prev, ok := seen[name]; ok {
			t.Errorf("reasons %d and %d share the name %q", prev, r, name)
		}
		seen[name] = r
	}
	// The numbers are forever: the whole table is pinned. Adding a
	// reason adds a line here; changing or removing one is a mistake.
	want := []string{1: "no-peer", 2: "no-listener", 3: "malformed", 4: "queue-full", 5: "forward-refused",
		6: "policy-refused", 7: "not-local", 8: "source-not-allowed", 9: "unsupported-protocol",
		10: "conn-limit", 11: "handshake-refused"}
	rs := Reasons()
	if len(rs) != len(want)-1 {
		t.Errorf("Reasons() has %d reasons; the pinned table %d", len(rs), len(want)-1)
	}
	for r := 1; r < len(want); r++ {
		if got := DropReason(r).String(); got != want[r] {
			t.Errorf("DropReason(%d) = %q, want %q", r, got, want[r])
		}
	}
}

func FuzzFormat(f *testing.F) {
	for _, c := range formatCases() {
		if c.ev.Packet != nil {
			f.Add(c.ev.Packet)
		}
	}
	f.Add([]byte{})
	f.Add([]byte{0x60})
	f.Add([]byte{0x45, 0, 0, 0})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		for _, k := range []Kind{KindTrace, KindDrop} {
			ev := Event{Time: t0, Kind: k, Point: FromPeer, Reason: Malformed, Packet: pkt}
			if FormatLine(ev) == "" {
				t.Fatal("empty line")
			}
			if _, err := FormatJSON(ev); err != nil {
				t.Fatal(err)
			}
			FormatVerbose(ev)
		}
		src, dst := packetAddrs(pkt)
		f := Filter{Addr: netip.MustParsePrefix("10.0.0.0/8")}
		f.matchPacket(KindTrace, src, dst)
	})
}
