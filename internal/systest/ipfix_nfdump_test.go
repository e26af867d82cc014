package systest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/netlog"
	"github.com/wgsidecar/sidecar/sidecartest"
	"github.com/wgsidecar/sidecar/wgconf"
)

// nfcapd is Debian's nfcapd collecting IPFIX on a loopback UDP port into
// a directory, as a plain process of the test.
type nfcapd struct {
	cmd  *exec.Cmd
	out  *testnet.Buffer // its stdout and stderr
	dir  string
	port int
}

// startNfcapd starts nfcapd on 127.0.0.1:port, writing into dir, and
// waits until it listens.
func startNfcapd(t *testing.T, port int, dir string) *nfcapd {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	n := &nfcapd{out: &testnet.Buffer{}, dir: dir}
	n.cmd = exec.Command("nfcapd", "-b", "127.0.0.1", "-p", strconv.Itoa(port), "-w", dir, "-t", "60")
	n.cmd.Stdout, n.cmd.Stderr = n.out, n.out
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.stop(t) })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, ok := udpQueue(t, port); ok && strings.Contains(n.out.String(), "Startup nfcapd.") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nfcapd did not start:\n%s", n.out)
		}
	}
	n.port = port
	return n
}

// udpQueue reads the receive queue of the IPv4 UDP socket bound to
// 127.0.0.1:port from /proc/net/udp: the bytes waiting to be read, and
// whether there is such a socket.
func udpQueue(t *testing.T, port int) (int, bool) {
	t.Helper()
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		t.Fatal(err)
	}
	local := fmt.Sprintf("0100007F:%04X", port)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 5 || f[1] != local {
			continue
		}
		_, rx, _ := strings.Cut(f[4], ":")
		n, err := strconv.ParseInt(rx, 16, 64)
		if err != nil {
			t.Fatalf("/proc/net/udp: %q", line)
		}
		return int(n), true
	}
	return 0, false
}

// stop ends nfcapd with SIGTERM, which makes it write out its file, once
// it has read every datagram sent to it (loopback queues a datagram at its
// send), and returns what it printed.
func (n *nfcapd) stop(t *testing.T) string {
	if n.cmd.ProcessState == nil {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if q, _ := udpQueue(t, n.port); q == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("nfcapd left datagrams unread")
				break
			}
		}
		// The last one read is processed before nfcapd looks at its
		// signals again.
		time.Sleep(100 * time.Millisecond)
		n.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- n.cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			n.cmd.Process.Kill()
			<-done
			t.Errorf("nfcapd did not stop on SIGTERM:\n%s", n.out)
		}
	}
	return n.out.String()
}

// nfRecord is one flow record as nfdump prints it, and as the test
// expects it from the flow log.
type nfRecord struct {
	first, last   string // times: "2006-01-02 15:04:05.000" in UTC
	src, dst      string // addresses as nfdump prints them
	sport, dport  int
	proto         int
	dir           int // flowDirection: 0 ingress, 1 egress
	pkts, bytes   uint64
	point, obsDom uint64 // from -o json only; 0 from csv
}

func (r nfRecord) String() string {
	return fmt.Sprintf("%s..%s %s:%d -> %s:%d proto %d dir %d point %d: %d pkts %d bytes",
		r.first, r.last, r.src, r.sport, r.dst, r.dport, r.proto, r.dir, r.point, r.pkts, r.bytes)
}

// nfdump reads every file of the directories with nfdump in the given
// output format.
func nfdump(t *testing.T, format string, dirs ...string) []byte {
	t.Helper()
	var out bytes.Buffer
	for _, d := range dirs {
		args := []string{"-R", d, "-o", format}
		if format == "json" {
			args = append(args, "-q") // no summary after the flows
		}
		cmd := exec.Command("nfdump", args...)
		cmd.Env = append(os.Environ(), "TZ=UTC")
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("nfdump -R %s -o %s: %v\n%s", d, format, err, b)
		}
		out.Write(b)
	}
	return out.Bytes()
}

// nfdumpCSV reads the records with `nfdump -o csv`: times to the second.
func nfdumpCSV(t *testing.T, dirs ...string) []nfRecord {
	t.Helper()
	var recs []nfRecord
	for _, d := range dirs {
		r := csv.NewReader(bytes.NewReader(nfdump(t, "csv", d)))
		r.FieldsPerRecord = -1
		var col map[string]int
		for {
			row, err := r.Read()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if col == nil {
				if row[0] != "ts" {
					t.Fatalf("nfdump csv header %q", row)
				}
				col = map[string]int{}
				for i, name := range row {
					col[name] = i
				}
				continue
			}
			if len(row) < len(col) { // the summary after the records
				break
			}
			get := func(name string) string { return strings.TrimSpace(row[col[name]]) }
			num := func(name string) uint64 {
				n, err := strconv.ParseUint(get(name), 10, 64)
				if err != nil {
					t.Fatalf("csv %s = %q: %v", name, get(name), err)
				}
				return n
			}
			rec := nfRecord{
				first: get("ts"), last: get("te"), src: get("sa"), dst: get("da"),
				sport: int(num("sp")), dport: int(num("dp")), proto: protoNumber(t, get("pr")),
				dir: int(num("dir")), pkts: num("ipkt"), bytes: num("ibyt"),
			}
			recs = append(recs, rec)
		}
	}
	return recs
}

// protoNumber reads nfdump's protocol column: a name or a number.
func protoNumber(t *testing.T, s string) int {
	switch s {
	case "ICMP":
		return 1
	case "TCP":
		return 6
	case "UDP":
		return 17
	case "ICMP6":
		return 58
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("protocol %q", s)
	}
	return n
}

// nfdumpJSON reads the records with `nfdump -o json`: times to the
// millisecond, the observation domain and point.
func nfdumpJSON(t *testing.T, dirs ...string) []nfRecord {
	t.Helper()
	var recs []nfRecord
	for _, d := range dirs {
		raw := bytes.TrimSpace(nfdump(t, "json", d))
		// With -q, nfdump 1.7.1 leaves out the array's brackets.
		if !bytes.HasPrefix(raw, []byte("[")) {
			raw = append(append([]byte("["), raw...), ']')
		}
		{
			var flows []struct {
				First, Last string
				SrcPort     int    `json:"src_port"`
				DstPort     int    `json:"dst_port"`
				Proto       int    `json:"proto"`
				Src4Addr    string `json:"src4_addr"`
				Dst4Addr    string `json:"dst4_addr"`
				Src6Addr    string `json:"src6_addr"`
				Dst6Addr    string `json:"dst6_addr"`
				Direction   int    `json:"direction"`
				InPackets   uint64 `json:"in_packets"`
				InBytes     uint64 `json:"in_bytes"`
				Domain      uint64 `json:"observationDoaminID"` // sic, nfdump 1.7.1
				Point       uint64 `json:"observationPointID"`
			}
			if err := json.Unmarshal(raw, &flows); err != nil {
				t.Fatalf("nfdump -o json: %v\n%s", err, raw)
			}
			for _, f := range flows {
				recs = append(recs, nfRecord{
					first: strings.Replace(f.First, "T", " ", 1), last: strings.Replace(f.Last, "T", " ", 1),
					src: f.Src4Addr + f.Src6Addr, dst: f.Dst4Addr + f.Dst6Addr,
					sport: f.SrcPort, dport: f.DstPort, proto: f.Proto, dir: f.Direction,
					pkts: f.InPackets, bytes: f.InBytes, point: f.Point, obsDom: f.Domain,
				})
			}
		}
	}
	return recs
}

// expectedRecords is what nfdump should show of flow-log messages: a
// record for each direction of each entry with traffic, in the layers
// exported. withMillis keeps the times' milliseconds (json); without, they
// are cut to the second (csv) and the point and domain are left out.
func expectedRecords(t *testing.T, msgs []netlog.Message, domain uint64, withMillis bool) []nfRecord {
	t.Helper()
	var out []nfRecord
	stamp := func(tm time.Time) string {
		if withMillis {
			return time.UnixMilli(tm.UnixMilli()).UTC().Format("2006-01-02 15:04:05.000")
		}
		return tm.UTC().Format("2006-01-02 15:04:05")
	}
	for _, m := range msgs {
		for k, entries := range [][]netlog.ConnectionCounts{m.VirtualTraffic, m.SubnetTraffic, m.ExitTraffic, m.PhysicalTraffic} {
			for _, e := range entries {
				src, dst := netip.MustParseAddrPort(e.Src), netip.MustParseAddrPort(e.Dst)
				r := nfRecord{first: stamp(m.Start), last: stamp(m.End), proto: int(e.Proto)}
				if withMillis {
					r.point, r.obsDom = uint64(k+1), domain
				}
				// nfdump prints an IPv4 address that shares a record
				// with an IPv6 one IPv4-mapped.
				mapped := src.Addr().Is4() != dst.Addr().Is4()
				name := func(a netip.Addr) string {
					if mapped && a.Is4() {
						return netip.AddrFrom16(a.As16()).String()
					}
					return a.String()
				}
				if e.TxPackets+e.TxBytes > 0 {
					r.src, r.dst, r.sport, r.dport = name(src.Addr()), name(dst.Addr()), int(src.Port()), int(dst.Port())
					r.dir, r.pkts, r.bytes = 1, e.TxPackets, e.TxBytes
					out = append(out, r)
				}
				if e.RxPackets+e.RxBytes > 0 {
					r.src, r.dst, r.sport, r.dport = name(dst.Addr()), name(src.Addr()), int(dst.Port()), int(src.Port())
					r.dir, r.pkts, r.bytes = 0, e.RxPackets, e.RxBytes
					out = append(out, r)
				}
			}
		}
	}
	return out
}

// sameRecords compares two lists of records as multisets.
func sameRecords(t *testing.T, what string, got, want []nfRecord) {
	t.Helper()
	gs, ws := make([]string, len(got)), make([]string, len(want))
	for i, r := range got {
		gs[i] = r.String()
	}
	for i, r := range want {
		ws[i] = r.String()
	}
	slices.Sort(gs)
	slices.Sort(ws)
	if slices.Equal(gs, ws) {
		return
	}
	// A multiset difference of the two sorted lists.
	var b strings.Builder
	i, j := 0, 0
	for i < len(gs) || j < len(ws) {
		switch {
		case i < len(gs) && j < len(ws) && gs[i] == ws[j]:
			i, j = i+1, j+1
		case j == len(ws) || i < len(gs) && gs[i] < ws[j]:
			fmt.Fprintf(&b, "- %s\n", gs[i])
			i++
		default:
			fmt.Fprintf(&b, "+ %s\n", ws[j])
			j++
		}
	}
	t.Errorf("%s: nfdump shows %d records, the flow log %d (-nfdump +flow log):\n%s", what, len(got), len(want), b.String())
}

// readNDJSON reads the flow log's NDJSON file.
func readNDJSON(t *testing.T, path string) []netlog.Message {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var msgs []netlog.Message
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m netlog.Message
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// ipfixTraffic sends known traffic from a to b: TCP, UDP and ICMP, over
// IPv4 and IPv6, with sizes that differ by round.
func ipfixTraffic(ctx context.Context, t *testing.T, a *sidecar.Node, round int) {
	t.Helper()
	for _, host := range []string{"10.99.0.2", "fd00:99::2"} {
		c, err := a.DialContext(ctx, "tcp", net.JoinHostPort(host, "7000"))
		if err != nil {
			t.Fatal(err)
		}
		msg := bytes.Repeat([]byte{byte(round)}, 1000*(round+1))
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, msg); err != nil {
			t.Fatal(err)
		}
		c.Close()

		u, err := a.DialContext(ctx, "udp", net.JoinHostPort(host, "7001"))
		if err != nil {
			t.Fatal(err)
		}
		for i := range round + 2 {
			u.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := u.Write(make([]byte, 10+100*i)); err != nil {
				t.Fatal(err)
			}
			if _, err := u.Read(make([]byte, 2000)); err != nil {
				t.Fatal(err)
			}
		}
		u.Close()
		for range round + 1 {
			if _, err := a.Ping(ctx, host); err != nil {
				t.Fatal(err)
			}
		}
	}
	// TCP's last ACKs and FINs cross before the window is cut.
	time.Sleep(300 * time.Millisecond)
}

// TestIPFIXNfdump exports a node's flow log to Debian's nfcapd and checks,
// window by window, that what nfdump reads equals the flow log's NDJSON:
// every flow of the virtual and physical layers (TCP, UDP and ICMP over
// IPv4 and IPv6), its packets and bytes each way, its window, its layer
// (observationPointId) and the observation domain. nfcapd is then stopped
// for one window and started again: only that window is missing, and
// nfcapd counts no sequence error and no bad packet.
func TestIPFIXNfdump(t *testing.T) {
	for _, bin := range []string{"nfcapd", "nfdump"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not found (Debian package nfdump): %v", bin, err)
		}
	}
	forEachDevice(t, ipfixNfdump)
}

func ipfixNfdump(t *testing.T, own bool) {
	dir := t.TempDir()
	port := testnet.FreePort(t, "udp")
	col := startNfcapd(t, port, filepath.Join(dir, "nfcapd1"))
	ndjson := filepath.Join(dir, "flows.ndjson")
	nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{
		OwnWireGuard: own,
		Configure: func(i int, cfg *wgconf.Config) {
			if i == 0 {
				cfg.FlowLog = &wgconf.FlowLog{Window: time.Hour, Output: ndjson}
				cfg.IPFIX = &wgconf.IPFIX{
					Collector: fmt.Sprintf("127.0.0.1:%d", port),
					Layers:    []string{"virtual", "subnet", "exit", "physical"},
				}
			}
		},
	})
	a, b := nodes[0], nodes[1]
	ln, err := b.Listen("tcp", ":7000")
	if err != nil {
		t.Fatal(err)
	}
	testnet.Serve(t, ln, testnet.Echo)
	pc, err := b.ListenPacket("udp", ":7001")
	if err != nil {
		t.Fatal(err)
	}
	testnet.ServePackets(t, pc, testnet.EchoDatagram)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cut := func() {
		t.Helper()
		if err := a.CutFlows(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// Two windows with nfcapd up (the first also holds the handshake).
	ipfixTraffic(ctx, t, a, 0)
	cut()
	ipfixTraffic(ctx, t, a, 1)
	cut()
	upBefore := len(readNDJSON(t, ndjson))

	// One window while nfcapd is down: lost.
	out1 := col.stop(t)
	ipfixTraffic(ctx, t, a, 2)
	cut()
	lost := readNDJSON(t, ndjson)[upBefore:]

	// nfcapd again, on the same port (a new directory, since its file
	// names are the minute): the next window arrives whole.
	col2 := startNfcapd(t, port, filepath.Join(dir, "nfcapd2"))
	ipfixTraffic(ctx, t, a, 3)
	cut()
	all := readNDJSON(t, ndjson)
	out2 := col2.stop(t)

	if len(lost) == 0 {
		t.Fatal("no window while nfcapd was down")
	}
	var kept []netlog.Message
	for _, m := range all {
		if !slices.ContainsFunc(lost, func(l netlog.Message) bool { return l.Start.Equal(m.Start) }) {
			kept = append(kept, m)
		}
	}
	// The flow log has what was asked of it.
	var protos = map[string]bool{}
	for _, m := range kept {
		for _, e := range m.VirtualTraffic {
			ap := netip.MustParseAddrPort(e.Dst)
			protos[fmt.Sprintf("%d/%v", e.Proto, ap.Addr().Is4())] = true
		}
		if len(m.PhysicalTraffic) == 0 {
			t.Errorf("window %v has no physical traffic", m.Start)
		}
	}
	for _, p := range []string{"6/true", "6/false", "17/true", "17/false", "1/true", "58/false"} {
		if !protos[p] {
			t.Errorf("the flow log has no virtual flow of protocol/IPv4 %s: %v", p, protos)
		}
	}

	domain := uint64(netlog.ObservationDomain(sidecar.NodeID(a.PublicKey())))
	got := nfdumpJSON(t, col.dir, col2.dir)
	sameRecords(t, "nfdump -o json", got, expectedRecords(t, kept, domain, true))
	sameRecords(t, "nfdump -o csv", nfdumpCSV(t, col.dir, col2.dir), expectedRecords(t, kept, domain, false))
	if len(got) < 20 {
		t.Errorf("only %d records", len(got))
	}

	for i, out := range []string{out1, out2} {
		if !strings.Contains(out, "Sequence Errors: 0, Bad Packets: 0") {
			t.Errorf("nfcapd %d counted errors:\n%s", i+1, out)
		}
		if strings.Contains(strings.ToLower(out), "template") {
			t.Errorf("nfcapd %d complained of templates:\n%s", i+1, out)
		}
	}
	t.Logf("%d windows, %d records in nfdump; window %v..%v lost while nfcapd was down", len(kept), len(got), lost[0].Start, lost[0].End)
}
