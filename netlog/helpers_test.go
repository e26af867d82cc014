package netlog

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/classify"
)

// ap parses "ip:port".
func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// flow is a Flow of class c with tx/rx counts (packets, bytes).
func flow(c classify.Class, proto uint8, src, dst string, txPkts, txBytes, rxPkts, rxBytes uint64) Flow {
	return Flow{Proto: proto, Src: ap(src), Dst: ap(dst), Class: c,
		TxPackets: txPkts, TxBytes: txBytes, RxPackets: rxPkts, RxBytes: rxBytes}
}

// cc is a ConnectionCounts.
func cc(proto uint8, src, dst string, txPkts, txBytes, rxPkts, rxBytes uint64) ConnectionCounts {
	return ConnectionCounts{proto, src, dst, txPkts, txBytes, rxPkts, rxBytes}
}

// window is the test window: 5 s, given in a zone other than UTC.
var (
	windowStart = time.Date(2025, 3, 14, 16, 26, 50, 123456789, time.FixedZone("CET", 3600))
	windowEnd   = windowStart.Add(5*time.Second - time.Nanosecond)
)

// render prints messages one line per field and entry, for diffs.
func render(msgs []Message) string {
	var b strings.Builder
	for i, m := range msgs {
		fmt.Fprintf(&b, "message %d: node %q start %s end %s", i, m.NodeID,
			m.Start.Format(time.RFC3339Nano), m.End.Format(time.RFC3339Nano))
		if m.Logged != nil {
			fmt.Fprintf(&b, " logged %s", m.Logged.Format(time.RFC3339Nano))
		}
		b.WriteByte('\n')
		for k, es := range kinds(&m) {
			for _, e := range es {
				fmt.Fprintf(&b, "  %s %s\n", kindNames[k], renderEntry(e))
			}
		}
	}
	return b.String()
}

func renderEntry(e ConnectionCounts) string {
	return fmt.Sprintf("proto=%d %q -> %q tx=%d/%d rx=%d/%d",
		e.Proto, e.Src, e.Dst, e.TxPackets, e.TxBytes, e.RxPackets, e.RxBytes)
}

var kindNames = [numKinds]string{"virtual", "subnet", "exit", "physical"}

// kinds returns m's traffic fields in order.
func kinds(m *Message) [numKinds][]ConnectionCounts {
	return [numKinds][]ConnectionCounts{m.VirtualTraffic, m.SubnetTraffic, m.ExitTraffic, m.PhysicalTraffic}
}

// diff returns a line diff of got and want, "-" for lines only in got and
// "+" for lines only in want, or "" when they are equal.
func diff(got, want string) string {
	if got == want {
		return ""
	}
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	// lcs[i][j] is the length of the longest common subsequence of g[i:]
	// and w[j:].
	lcs := make([][]int, len(g)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(w)+1)
	}
	for i := len(g) - 1; i >= 0; i-- {
		for j := len(w) - 1; j >= 0; j-- {
			if g[i] == w[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var b strings.Builder
	i, j := 0, 0
	for i < len(g) || j < len(w) {
		switch {
		case i < len(g) && j < len(w) && g[i] == w[j]:
			fmt.Fprintf(&b, "  %s\n", g[i])
			i, j = i+1, j+1
		case j == len(w) || i < len(g) && lcs[i+1][j] >= lcs[i][j+1]:
			fmt.Fprintf(&b, "- %s\n", g[i])
			i++
		default:
			fmt.Fprintf(&b, "+ %s\n", w[j])
			j++
		}
	}
	return b.String()
}

// checkMessages fails t with a diff when got and want differ.
func checkMessages(t *testing.T, got, want []Message) {
	t.Helper()
	if d := diff(render(got), render(want)); d != "" {
		t.Errorf("messages differ (-got +want):\n%s", d)
	}
}
