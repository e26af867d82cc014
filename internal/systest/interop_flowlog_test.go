package systest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/netlog"
	"github.com/wgsidecar/sidecar/wgconf"
)

// interopTruthEnv is what interopFlowLogTruth needs of the world
// TestInteropKernelWireGuard built.
type interopTruthEnv struct {
	nsB, wgIf, vethB string
	dir              string
	flowFile         string // the sidecar's [FlowLog] Output
	sidecar          *interopProc
	sidecarPub       wgconf.PublicKey
}

// interopNftTable is the nftables table the truth test adds in nsB to
// count the underlay's UDP datagrams between the two WireGuard ports.
const interopNftTable = "wgsc_truth"

// interopFlowLogTruth checks the sidecar's flow log against counts that
// owe nothing to the sidecar, all taken on the kernel side (nsB) over the
// same span of time: one window of the sidecar's log, cut by the test
// between two quiescent moments, holding traffic of every kind (the
// sidecar's TCP exchange with the kernel's server and its pings, the
// kernel's pings and curl, 1 MiB each way).
//
//   - virtual layer: the IP packets the sidecar sent are those the kernel's
//     wireguard-go interface received (its rx_packets/rx_bytes), and those
//     it received are those the interface sent (tx_packets/tx_bytes);
//   - physical layer: the UDP payload bytes the sidecar sent are what
//     wireguard-go received from it (`wg show transfer`, which counts
//     WireGuard message bytes) and what nftables counted entering nsB
//     on the veth (IP+UDP headers, 28 bytes a datagram, taken off), and
//     likewise for what it received; the datagrams are the UDP datagrams
//     nsB's kernel delivered and sent (/proc/net/snmp Udp, wireguard-go
//     having the only UDP socket in nsB).
//
// Counts are compared as deltas over the window: what the kernel sent
// before it (MLD reports and the like, which wireguard-go drops) does not
// matter. Each edge of the window is taken as "kernel-side counts, cut,
// kernel-side counts again", repeated until both readings agree and the
// sidecar's own peer counters did not move across the cut: no packet was
// in flight at the edge.
func interopFlowLogTruth(ctx context.Context, t *testing.T, env interopTruthEnv) {
	sc := env.sidecar
	haveNft := false
	if _, err := exec.LookPath("nft"); err == nil {
		rules := fmt.Sprintf(`table inet %[1]s {
	counter from_sidecar { }
	counter to_sidecar { }
	chain in {
		type filter hook input priority 0; policy accept;
		iifname "%[2]s" ip saddr %[3]s ip daddr %[4]s udp sport %[5]d udp dport %[6]d counter name "from_sidecar"
	}
	chain out {
		type filter hook output priority 0; policy accept;
		oifname "%[2]s" ip saddr %[4]s ip daddr %[3]s udp sport %[6]d udp dport %[5]d counter name "to_sidecar"
	}
}
`, interopNftTable, env.vethB, interopUnderA, interopUnderB, interopPortA, interopPortB)
		file := filepath.Join(env.dir, "truth.nft")
		interopWriteFile(t, file, rules)
		if out, err := testnet.Output(ctx, 10*time.Second, "ip", "netns", "exec", env.nsB, "nft", "-f", file); err != nil {
			// The check against the wire is only skipped: the kernel
			// may lack nf_tables.
			t.Logf("nft cannot add its counters in %s (%v): no wire count\n%s", env.nsB, err, out)
		} else {
			haveNft = true
		}
	} else {
		t.Logf("nft is not on PATH: no count of UDP datagrams on the wire (install Debian's nftables)")
	}

	snapshot := func() interopCounts {
		t.Helper()
		c, err := interopReadCounts(ctx, env, haveNft)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// cut ends the sidecar's flow-log window at a moment when nothing is
	// in flight, and returns the kernel-side counts of that moment.
	cut := func(edge string) (interopCounts, time.Time, time.Time) {
		t.Helper()
		for attempt := 1; ; attempt++ {
			time.Sleep(300 * time.Millisecond) // let ACKs, FINs and echoes cross
			before := snapshot()
			sent := time.Now()
			if _, err := io.WriteString(sc.stdin, "CUT\n"); err != nil {
				t.Fatalf("asking the sidecar to cut its flow log: %v", err)
			}
			line := sc.expect(t, "CUT ", 15*time.Second)
			acked := time.Now()
			after := snapshot()
			f := strings.Fields(line)
			if len(f) != 6 || f[1] != "OK" {
				t.Fatalf("sidecar's CutFlows at the %s of the window: %q", edge, line)
			}
			if before == after && f[2] == f[4] && f[3] == f[5] {
				return after, sent, acked
			}
			if attempt == 5 {
				t.Fatalf("traffic at every attempt to cut at the %s of the window; last attempt: kernel side %+v before, %+v after; sidecar's peer rx/tx %s/%s before, %s/%s after",
					edge, before, after, f[2], f[3], f[4], f[5])
			}
			t.Logf("traffic in flight while cutting at the %s of the window; again", edge)
		}
	}

	start, firstSent, _ := cut("start")
	offset := int64(0)
	if fi, err := os.Stat(env.flowFile); err == nil {
		offset = fi.Size()
	}

	// The window's traffic. From the sidecar: a TCP exchange with the
	// kernel's server and pings, both families.
	if _, err := io.WriteString(sc.stdin, "TRAFFIC\n"); err != nil {
		t.Fatal(err)
	}
	interopExpectSidecarTraffic(t, sc)
	sc.expect(t, "TRAFFIC DONE", 30*time.Second)
	// From the kernel: pings (small and full-size), curl, and a 1 MiB
	// download and upload.
	for _, args := range [][]string{
		{"-4", "-c", "3", "-i", "0.05", "-W", "2", interopTunA4},
		{"-6", "-c", "3", "-i", "0.05", "-W", "2", "-M", "do", "-s", "1372", interopTunA6},
	} {
		out, err := testnet.Output(ctx, 15*time.Second, "ip", append([]string{"netns", "exec", env.nsB, "ping"}, args...)...)
		if err != nil || !strings.Contains(out, " 0% packet loss") {
			t.Fatalf("kernel side's ping %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	if out, err := testnet.Output(ctx, 15*time.Second, "ip", "netns", "exec", env.nsB, "curl", "-sS", "-g", "--max-time", "5", "http://["+interopTunA6+"]/"); err != nil {
		t.Fatalf("kernel side's curl: %v\n%s", err, out)
	}
	big := interopBigBody()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", env.nsB, "curl", "-sS", "--max-time", "10", "http://"+interopTunA4+"/big")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if body, err := cmd.Output(); err != nil || !bytes.Equal(body, big) {
		t.Fatalf("kernel side's download of /big: %v, %d bytes\n%s", err, len(body), stderr.String())
	}
	upload := filepath.Join(env.dir, "upload.bin")
	if err := os.WriteFile(upload, big, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := testnet.Output(ctx, 15*time.Second, "ip", "netns", "exec", env.nsB, "curl", "-sS", "-g", "--max-time", "10",
		"-H", "Expect:", "--data-binary", "@"+upload, "http://["+interopTunA6+"]/upload")
	if want := fmt.Sprintf("sidecar got %d %x\n", len(big), sha256.Sum256(big)); err != nil || out != want {
		t.Fatalf("kernel side's upload of 1 MiB: %v, the sidecar answered %q; want %q", err, out, want)
	}

	end, _, lastAcked := cut("end")

	// The sidecar's log of the window: every message written after the
	// first cut, up to the second.
	msgs := interopReadFlowLog(t, env.flowFile, offset)
	if len(msgs) == 0 {
		t.Fatalf("the sidecar wrote no flow-log message for a window with traffic (%s from offset %d)", env.flowFile, offset)
	}
	var virtual, physical []netlog.ConnectionCounts
	for _, m := range msgs {
		if m.NodeID != sidecar.NodeID(env.sidecarPub) {
			t.Errorf("message from node %q; want the sidecar's %q", m.NodeID, sidecar.NodeID(env.sidecarPub))
		}
		if m.Start.Before(firstSent) || m.End.After(lastAcked) || m.End.Before(m.Start) {
			t.Errorf("message for %v..%v, not inside the test's window %v..%v", m.Start, m.End, firstSent, lastAcked)
		}
		if len(m.SubnetTraffic)+len(m.ExitTraffic) > 0 {
			t.Errorf("subnet or exit traffic between two tunnel addresses: %+v %+v", m.SubnetTraffic, m.ExitTraffic)
		}
		virtual = append(virtual, m.VirtualTraffic...)
		physical = append(physical, m.PhysicalTraffic...)
	}
	for _, e := range virtual {
		if !strings.HasPrefix(e.Src, interopTunA4+":") && !strings.HasPrefix(e.Src, "["+interopTunA6+"]:") {
			t.Errorf("virtual entry whose source is not the sidecar: %+v", e)
		}
	}
	wantSrc, wantDst := interopTunB4+":0", net.JoinHostPort(interopUnderB, strconv.Itoa(interopPortB))
	for _, e := range physical {
		if e.Proto != 0 || e.Src != wantSrc || e.Dst != wantDst {
			t.Errorf("physical entry %+v; want only %s -> %s, protocol 0", e, wantSrc, wantDst)
		}
	}
	v, p := testnet.SumCounts(virtual), testnet.SumCounts(physical)
	d := end.sub(start)

	// The comparison, printed whole whatever fails.
	type row struct {
		what, theirs    string
		ours, reference uint64
	}
	rows := []row{
		{"virtual   pkts sent", "kernel " + env.wgIf + " rx_packets", v.TxPackets, d.ifRxPkts},
		{"virtual   bytes sent", "kernel " + env.wgIf + " rx_bytes", v.TxBytes, d.ifRxBytes},
		{"virtual   pkts received", "kernel " + env.wgIf + " tx_packets", v.RxPackets, d.ifTxPkts},
		{"virtual   bytes received", "kernel " + env.wgIf + " tx_bytes", v.RxBytes, d.ifTxBytes},
		{"physical  pkts sent", "nsB Udp InDatagrams", p.TxPackets, d.udpB.in},
		{"physical  bytes sent", "wg show transfer: received", p.TxBytes, d.wgRx},
		{"physical  pkts received", "nsB Udp OutDatagrams", p.RxPackets, d.udpB.out},
		{"physical  bytes received", "wg show transfer: sent", p.RxBytes, d.wgTx},
	}
	if haveNft {
		rows = append(rows,
			row{"physical  bytes sent", "nft on " + env.vethB + " in, less 28/datagram", p.TxBytes, d.nftIn[1] - 28*d.nftIn[0]},
			row{"physical  bytes received", "nft on " + env.vethB + " out, less 28/datagram", p.RxBytes, d.nftOut[1] - 28*d.nftOut[0]},
		)
	}
	var table strings.Builder
	fmt.Fprintf(&table, "window %v..%v (%v)\n", msgs[0].Start.Format(time.RFC3339Nano), msgs[len(msgs)-1].End.Format(time.RFC3339Nano), msgs[len(msgs)-1].End.Sub(msgs[0].Start))
	fmt.Fprintf(&table, "%-26s %12s %12s  %s\n", "sidecar flow log", "sidecar", "kernel side", "counted by")
	mismatch := false
	for _, r := range rows {
		mark := ""
		if r.ours != r.reference {
			mark, mismatch = "  <-- differs", true
		}
		fmt.Fprintf(&table, "%-26s %12d %12d  %s%s\n", r.what, r.ours, r.reference, r.theirs, mark)
	}
	if haveNft {
		fmt.Fprintf(&table, "nft packets: %d in, %d out (fewer than datagrams when the sender used UDP GSO)\n", d.nftIn[0], d.nftOut[0])
	}
	for _, u := range []struct {
		ns  string
		udp interopUDP
	}{{"nsB (wireguard-go)", d.udpB}, {"nsA (sidecar)", d.udpA}} {
		fmt.Fprintf(&table, "%s UDP: InDatagrams %d OutDatagrams %d InErrors %d RcvbufErrors %d SndbufErrors %d NoPorts %d\n",
			u.ns, u.udp.in, u.udp.out, u.udp.inErrors, u.udp.rcvbufErrors, u.udp.sndbufErrors, u.udp.noPorts)
	}
	fmt.Fprintf(&table, "%d messages, %d virtual and %d physical entries", len(msgs), len(virtual), len(physical))
	if mismatch {
		var drops string
		if d.udpB.errors() > 0 {
			drops = " (nsB's UDP socket dropped datagrams: wireguard-go did not keep up)"
		} else if d.udpA.errors() > 0 {
			drops = " (nsA's UDP socket dropped datagrams: the sidecar did not keep up)"
		}
		t.Errorf("the sidecar's flow log differs from the kernel side's counts of the same window%s:\n%s", drops, table.String())
	} else {
		t.Logf("the sidecar's flow log equals the kernel side's counts:\n%s", table.String())
	}
	if v.TxBytes < interopBigSize || v.RxBytes < interopBigSize {
		t.Errorf("virtual bytes sent %d, received %d; want at least the 1 MiB carried each way", v.TxBytes, v.RxBytes)
	}
}

// interopUDP is the Udp line of /proc/net/snmp.
type interopUDP struct {
	in, out, noPorts, inErrors, rcvbufErrors, sndbufErrors uint64
}

// interopCounts is what the kernel side in nsB counted.
type interopCounts struct {
	ifRxBytes, ifRxPkts, ifTxBytes, ifTxPkts uint64     // wireguard-go's TUN interface
	wgRx, wgTx                               uint64     // wg show transfer, the sidecar peer
	nftIn, nftOut                            [2]uint64  // packets, bytes to and from the sidecar's port
	udpB                                     interopUDP // the namespace's UDP statistics
	udpA                                     interopUDP // the same in the sidecar's namespace
}

// sub is c less an earlier reading.
func (c interopCounts) sub(o interopCounts) interopCounts {
	return interopCounts{
		ifRxBytes: c.ifRxBytes - o.ifRxBytes, ifRxPkts: c.ifRxPkts - o.ifRxPkts,
		ifTxBytes: c.ifTxBytes - o.ifTxBytes, ifTxPkts: c.ifTxPkts - o.ifTxPkts,
		wgRx: c.wgRx - o.wgRx, wgTx: c.wgTx - o.wgTx,
		nftIn:  [2]uint64{c.nftIn[0] - o.nftIn[0], c.nftIn[1] - o.nftIn[1]},
		nftOut: [2]uint64{c.nftOut[0] - o.nftOut[0], c.nftOut[1] - o.nftOut[1]},
		udpB:   c.udpB.sub(o.udpB), udpA: c.udpA.sub(o.udpA),
	}
}

func (u interopUDP) sub(o interopUDP) interopUDP {
	return interopUDP{
		in: u.in - o.in, out: u.out - o.out, noPorts: u.noPorts - o.noPorts,
		inErrors: u.inErrors - o.inErrors, rcvbufErrors: u.rcvbufErrors - o.rcvbufErrors,
		sndbufErrors: u.sndbufErrors - o.sndbufErrors,
	}
}

func (u interopUDP) errors() uint64 { return u.inErrors + u.rcvbufErrors + u.sndbufErrors }

// interopReadCounts reads nsB's counters with one command, so that they
// are read close together.
func interopReadCounts(ctx context.Context, env interopTruthEnv, withNft bool) (interopCounts, error) {
	script := fmt.Sprintf(`set -e
s=/sys/class/net/%[1]s/statistics
echo @if $(cat $s/rx_bytes $s/rx_packets $s/tx_bytes $s/tx_packets)
echo @wg $(wg show %[1]s transfer)
grep '^Udp:' /proc/net/snmp
`, env.wgIf)
	if withNft {
		script += "nft list counters table inet " + interopNftTable + "\n"
	}
	out, err := testnet.Output(ctx, 10*time.Second, "ip", "netns", "exec", env.nsB, "sh", "-c", script)
	if err != nil {
		return interopCounts{}, fmt.Errorf("reading the kernel side's counters: %v\n%s", err, out)
	}
	var c interopCounts
	bad := func(what string) (interopCounts, error) {
		return interopCounts{}, fmt.Errorf("reading the kernel side's counters: cannot parse %s in:\n%s", what, out)
	}
	nums := func(fields []string) ([]uint64, bool) {
		var r []uint64
		for _, f := range fields {
			n, err := strconv.ParseUint(f, 10, 64)
			if err != nil {
				return nil, false
			}
			r = append(r, n)
		}
		return r, true
	}
	var udpNames []string
	var counter *[2]uint64
	var counterName string
	seen := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch {
		case f[0] == "@if":
			n, ok := nums(f[1:])
			if !ok || len(n) != 4 {
				return bad("the interface's statistics")
			}
			c.ifRxBytes, c.ifRxPkts, c.ifTxBytes, c.ifTxPkts = n[0], n[1], n[2], n[3]
			seen["if"] = true
		case f[0] == "@wg":
			// One peer: the sidecar's key, received bytes, sent bytes.
			if len(f) != 4 || f[1] != env.sidecarPub.String() {
				return bad("wg show transfer")
			}
			n, ok := nums(f[2:])
			if !ok {
				return bad("wg show transfer")
			}
			c.wgRx, c.wgTx = n[0], n[1]
			seen["wg"] = true
		case f[0] == "Udp:" && udpNames == nil:
			udpNames = f[1:]
		case f[0] == "Udp:":
			var ok bool
			if c.udpB, ok = interopParseUDP(udpNames, f[1:]); !ok {
				return bad("/proc/net/snmp")
			}
			seen["udp"] = true
		case f[0] == "counter" && len(f) >= 2:
			counterName = f[1]
			switch counterName {
			case "from_sidecar":
				counter = &c.nftIn
			case "to_sidecar":
				counter = &c.nftOut
			default:
				counter = nil
			}
		case f[0] == "packets" && len(f) >= 4 && f[2] == "bytes" && counter != nil:
			n, ok := nums([]string{f[1], f[3]})
			if !ok {
				return bad("nft's counters")
			}
			*counter = [2]uint64{n[0], n[1]}
			seen["nft "+counterName] = true
			counter = nil
		}
	}
	want := 3
	if withNft {
		want += 2
	}
	if len(seen) != want {
		return bad("some of the counters")
	}

	// The sidecar's namespace, for its socket's drops: the proc file of a
	// process shows its namespace's statistics.
	snmp, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/snmp", env.sidecar.cmd.Process.Pid))
	if err != nil {
		return interopCounts{}, fmt.Errorf("reading the sidecar's namespace's UDP statistics: %v", err)
	}
	udpNames = nil
	for _, line := range strings.Split(string(snmp), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == "Udp:" {
			if udpNames == nil {
				udpNames = f[1:]
				continue
			}
			var ok bool
			if c.udpA, ok = interopParseUDP(udpNames, f[1:]); !ok {
				return interopCounts{}, fmt.Errorf("cannot parse the sidecar's namespace's UDP statistics:\n%s", snmp)
			}
		}
	}
	return c, nil
}

// interopParseUDP parses the Udp lines of /proc/net/snmp: names, values.
func interopParseUDP(names, values []string) (interopUDP, bool) {
	var u interopUDP
	if len(names) != len(values) {
		return u, false
	}
	for i, name := range names {
		n, err := strconv.ParseUint(values[i], 10, 64)
		if err != nil {
			return u, false
		}
		switch name {
		case "InDatagrams":
			u.in = n
		case "OutDatagrams":
			u.out = n
		case "NoPorts":
			u.noPorts = n
		case "InErrors":
			u.inErrors = n
		case "RcvbufErrors":
			u.rcvbufErrors = n
		case "SndbufErrors":
			u.sndbufErrors = n
		}
	}
	return u, true
}

// interopReadFlowLog returns the messages of the NDJSON flow log at path
// written from offset on.
func interopReadFlowLog(t *testing.T, path string, offset int64) []netlog.Message {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("the sidecar's flow log: %v", err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	var msgs []netlog.Message
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 2*netlog.MaxMessageSize)
	for sc.Scan() {
		var m netlog.Message
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("flow log line %q: %v", sc.Text(), err)
		}
		msgs = append(msgs, m)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading the flow log: %v", err)
	}
	return msgs
}
