package netlog

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/classify"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files in testdata")

// IP protocol numbers.
const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
)

// scenario is a node (10.0.0.1, fd00::1) with peers 10.0.0.2 (a subnet
// router for 192.168.50.0/24 and fd50::/64), 10.0.0.3 (an exit node) and
// 10.0.0.4 (which uses this node as its exit node and as the subnet router
// for 172.16.5.0/24).
var scenario = classify.New(classify.Routes{
	Local: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32"), netip.MustParsePrefix("fd00::1/128")},
	Peers: [][]netip.Prefix{
		{netip.MustParsePrefix("10.0.0.2/32"), netip.MustParsePrefix("fd00::2/128"),
			netip.MustParsePrefix("192.168.50.0/24"), netip.MustParsePrefix("fd50::/64")},
		{netip.MustParsePrefix("10.0.0.3/32"), netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")},
		{netip.MustParsePrefix("10.0.0.4/32")},
	},
	Serve:     []netip.Prefix{netip.MustParsePrefix("172.16.5.0/24")},
	ServeExit: true,
})

// classified is f with the class scenario gives it.
func classified(f Flow) Flow {
	f.Class = scenario.Classify(f.Src.Addr(), f.Dst.Addr())
	return f
}

// scenarioVirtual are virtual-layer flows of every class, in no order.
var scenarioVirtual = []Flow{
	classified(flow(0, protoTCP, "10.0.0.1:40000", "10.0.0.2:80", 10, 1200, 8, 9000)),
	classified(flow(0, protoUDP, "[fd00::1]:5353", "[fd00::2]:53", 2, 140, 2, 300)),
	classified(flow(0, protoICMP, "10.0.0.1:0", "10.0.0.3:0", 3, 252, 3, 252)),
	classified(flow(0, protoTCP, "10.0.0.1:40001", "192.168.50.7:22", 40, 4800, 38, 61000)),
	classified(flow(0, protoTCP, "172.16.5.9:8080", "10.0.0.4:51000", 5, 900, 6, 700)),
	classified(flow(0, protoUDP, "[fd00::1]:40010", "[fd50::10]:123", 1, 76, 1, 76)),
	// This node using 10.0.0.3 as its exit node.
	classified(flow(0, protoTCP, "10.0.0.1:40002", "1.1.1.1:443", 12, 2000, 15, 18000)),
	classified(flow(0, protoUDP, "10.0.0.1:40003", "8.8.8.8:53", 1, 60, 1, 120)),
	classified(flow(0, protoTCP, "[fd00::1]:40004", "[2606:4700::1111]:443", 7, 900, 9, 7000)),
	classified(flow(0, protoICMPv6, "[fd00::1]:0", "[2001:db8::99]:0", 1, 104, 1, 104)),
	// This node serving 10.0.0.4 as an exit node.
	classified(flow(0, protoTCP, "9.9.9.9:443", "10.0.0.4:52000", 20, 30000, 18, 2200)),
	classified(flow(0, protoUDP, "9.9.9.9:53", "10.0.0.4:52001", 1, 90, 1, 45)),
}

var scenarioPhysical = []Flow{
	flow(0, 0, "10.0.0.3:0", "[2001:db8::3]:51820", 25, 4100, 27, 26000),
	flow(0, 0, "10.0.0.2:0", "203.0.113.2:51820", 60, 10000, 52, 73000),
}

func TestScenarioClasses(t *testing.T) {
	var n [4]int
	for _, f := range scenarioVirtual {
		n[f.Class]++
	}
	if want := [4]int{0, 3, 3, 6}; n != want {
		t.Fatalf("scenario flows per class = %v, want %v", n, want)
	}
}

func TestGolden(t *testing.T) {
	tests := []struct {
		name              string
		virtual, physical []Flow
		logExit           bool
	}{
		{"all_kinds", scenarioVirtual, scenarioPhysical, false},
		{"exit_detailed", scenarioVirtual, scenarioPhysical, true},
		{"physical", nil, scenarioPhysical, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msgs := Build("nTestNode", windowStart, windowEnd, tt.virtual, tt.physical, tt.logExit, scenario.IsNode)
			got, err := json.MarshalIndent(msgs, "", "\t")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", tt.name+".json")
			if *updateGolden {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if d := diff(string(got), string(want)); d != "" {
				t.Errorf("%s differs (-got +want; go test -update rewrites it):\n%s", path, d)
			}
			checkKeys(t, want)
		})
	}
}

// Field names exactly as the flow-log API names them (seed 001).
var (
	messageKeys = []string{"end", "exitTraffic", "logged", "nodeId", "physicalTraffic", "start", "subnetTraffic", "virtualTraffic"}
	entryKeys   = []string{"dst", "proto", "rxBytes", "rxPkts", "src", "txBytes", "txPkts"}
)

// checkKeys checks that the JSON array of messages b uses only the API's
// field names, the required ones always, and every entry all of its own.
func checkKeys(t *testing.T, b []byte) {
	t.Helper()
	var msgs []map[string]json.RawMessage
	if err := json.Unmarshal(b, &msgs); err != nil {
		t.Fatal(err)
	}
	for i, m := range msgs {
		keys := sortedKeys(m)
		for _, k := range keys {
			if !slices.Contains(messageKeys, k) {
				t.Errorf("message %d: unknown key %q", i, k)
			}
		}
		for _, k := range []string{"nodeId", "start", "end"} {
			if !slices.Contains(keys, k) {
				t.Errorf("message %d: missing key %q", i, k)
			}
		}
		for _, field := range []string{"virtualTraffic", "subnetTraffic", "exitTraffic", "physicalTraffic"} {
			var entries []map[string]json.RawMessage
			if err := json.Unmarshal(m[field], &entries); m[field] != nil && err != nil {
				t.Fatalf("message %d: %s: %v", i, field, err)
			}
			for j, e := range entries {
				if got := sortedKeys(e); !slices.Equal(got, entryKeys) {
					t.Errorf("message %d: %s[%d] keys = %q, want %q", i, field, j, got, entryKeys)
				}
			}
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// TestFieldNames checks the struct tags of a message with every field set.
func TestFieldNames(t *testing.T) {
	logged := windowEnd.Add(time.Second)
	e := []ConnectionCounts{cc(6, "10.0.0.1:1", "10.0.0.2:2", 1, 2, 3, 4)}
	m := []Message{{NodeID: "n", Logged: &logged, Start: windowStart, End: windowEnd,
		VirtualTraffic: e, SubnetTraffic: e, ExitTraffic: e, PhysicalTraffic: e}}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if keys := sortedKeys(got[0]); !slices.Equal(keys, messageKeys) {
		t.Errorf("message keys = %q, want %q", keys, messageKeys)
	}
	checkKeys(t, b)
}

func TestBuildEmptyWindow(t *testing.T) {
	for _, tt := range []struct {
		name              string
		virtual, physical []Flow
	}{
		{"nil", nil, nil},
		{"empty", []Flow{}, []Flow{}},
	} {
		if got := Build("n", windowStart, windowEnd, tt.virtual, tt.physical, false, scenario.IsNode); got != nil {
			t.Errorf("%s: Build = %v, want nil", tt.name, got)
		}
	}
}

func TestBuild(t *testing.T) {
	start, end := windowStart.UTC(), windowEnd.UTC()
	msg := func(v, s, e, p []ConnectionCounts) []Message {
		return []Message{{NodeID: "n", Start: start, End: end,
			VirtualTraffic: v, SubnetTraffic: s, ExitTraffic: e, PhysicalTraffic: p}}
	}
	list := func(es ...ConnectionCounts) []ConnectionCounts { return es }
	tests := []struct {
		name              string
		virtual, physical []Flow
		logExit           bool
		isNode            func(netip.Addr) bool
		want              []Message
	}{{
		name: "sorted by address, port, then protocol",
		virtual: []Flow{
			flow(classify.Virtual, protoUDP, "10.0.0.1:80", "10.0.0.10:1", 1, 1, 1, 1),
			flow(classify.Virtual, protoTCP, "[fd00::1]:1", "[fd00::2]:1", 1, 1, 1, 1),
			flow(classify.Virtual, protoTCP, "10.0.0.1:80", "10.0.0.10:1", 1, 1, 1, 1),
			flow(classify.Virtual, protoTCP, "10.0.0.1:80", "10.0.0.9:1", 1, 1, 1, 1),
			flow(classify.Virtual, protoTCP, "10.0.0.1:9", "10.0.0.10:1", 1, 1, 1, 1),
		},
		want: msg(list(
			cc(protoTCP, "10.0.0.1:9", "10.0.0.10:1", 1, 1, 1, 1),
			cc(protoTCP, "10.0.0.1:80", "10.0.0.9:1", 1, 1, 1, 1),
			cc(protoTCP, "10.0.0.1:80", "10.0.0.10:1", 1, 1, 1, 1),
			cc(protoUDP, "10.0.0.1:80", "10.0.0.10:1", 1, 1, 1, 1),
			cc(protoTCP, "[fd00::1]:1", "[fd00::2]:1", 1, 1, 1, 1),
		), nil, nil, nil),
	}, {
		name: "duplicates summed per kind",
		virtual: []Flow{
			flow(classify.Subnet, protoTCP, "10.0.0.1:1", "192.168.50.1:2", 1, 10, 2, 20),
			flow(classify.Virtual, protoTCP, "10.0.0.1:1", "10.0.0.2:2", 1, 1, 1, 1),
			flow(classify.Subnet, protoTCP, "10.0.0.1:1", "192.168.50.1:2", 3, 30, 4, 40),
		},
		physical: []Flow{
			flow(0, 0, "10.0.0.2:0", "203.0.113.2:51820", 1, 100, 2, 200),
			flow(0, 0, "10.0.0.2:0", "203.0.113.2:51820", 1, 100, 2, 200),
		},
		want: msg(
			list(cc(protoTCP, "10.0.0.1:1", "10.0.0.2:2", 1, 1, 1, 1)),
			list(cc(protoTCP, "10.0.0.1:1", "192.168.50.1:2", 4, 40, 6, 60)),
			nil,
			list(cc(0, "10.0.0.2:0", "203.0.113.2:51820", 2, 200, 4, 400))),
	}, {
		name: "exit through an exit node: src kept, summed per tunnel address",
		virtual: []Flow{
			flow(classify.Exit, protoTCP, "10.0.0.1:1000", "1.1.1.1:443", 10, 1000, 8, 4000),
			flow(classify.Exit, protoUDP, "10.0.0.1:1001", "8.8.8.8:53", 1, 60, 1, 120),
			flow(classify.Exit, protoTCP, "[fd00::1]:1002", "[2606:4700::1111]:443", 5, 500, 6, 600),
			flow(classify.Exit, protoICMPv6, "[fd00::1]:0", "[2606:4700::1111]:0", 1, 64, 1, 64),
		},
		isNode: scenario.IsNode,
		want: msg(nil, nil, list(
			cc(0, "10.0.0.1:0", "", 11, 1060, 9, 4120),
			cc(0, "[fd00::1]:0", "", 6, 564, 7, 664),
		), nil),
	}, {
		name: "exit as an exit node: dst kept, summed per peer",
		virtual: []Flow{
			flow(classify.Exit, protoTCP, "1.1.1.1:443", "10.0.0.4:5000", 20, 2000, 10, 1000),
			flow(classify.Exit, protoUDP, "8.8.8.8:53", "10.0.0.4:5001", 1, 100, 1, 50),
			flow(classify.Exit, protoTCP, "9.9.9.9:443", "10.0.0.2:6000", 3, 300, 4, 400),
		},
		isNode: scenario.IsNode,
		want: msg(nil, nil, list(
			cc(0, "", "10.0.0.2:0", 3, 300, 4, 400),
			cc(0, "", "10.0.0.4:0", 21, 2100, 11, 1050),
		), nil),
	}, {
		name: "exit with no tunnel address: one entry",
		virtual: []Flow{
			flow(classify.Exit, protoTCP, "1.1.1.1:443", "198.51.100.1:5000", 1, 10, 2, 20),
			flow(classify.Exit, protoTCP, "10.0.0.1:1000", "1.1.1.1:443", 3, 30, 4, 40),
		},
		isNode: nil, // knows no tunnel address
		want:   msg(nil, nil, list(cc(0, "", "", 4, 40, 6, 60)), nil),
	}, {
		name: "exit detailed",
		virtual: []Flow{
			flow(classify.Exit, protoUDP, "10.0.0.1:1001", "8.8.8.8:53", 1, 60, 1, 120),
			flow(classify.Exit, protoTCP, "10.0.0.1:1000", "1.1.1.1:443", 10, 1000, 8, 4000),
		},
		logExit: true,
		isNode:  scenario.IsNode,
		want: msg(nil, nil, list(
			cc(protoTCP, "10.0.0.1:1000", "1.1.1.1:443", 10, 1000, 8, 4000),
			cc(protoUDP, "10.0.0.1:1001", "8.8.8.8:53", 1, 60, 1, 120),
		), nil),
	}, {
		name: "unknown class is exit, anonymised",
		virtual: []Flow{
			flow(0, protoTCP, "10.0.0.1:1000", "1.1.1.1:443", 1, 2, 3, 4),
			flow(42, protoTCP, "10.0.0.1:1001", "1.1.1.2:443", 1, 2, 3, 4),
		},
		isNode: scenario.IsNode,
		want:   msg(nil, nil, list(cc(0, "10.0.0.1:0", "", 2, 4, 6, 8)), nil),
	}, {
		name:     "physical class ignored",
		physical: []Flow{flow(classify.Exit, 0, "10.0.0.2:0", "203.0.113.2:51820", 1, 2, 3, 4)},
		isNode:   scenario.IsNode,
		want:     msg(nil, nil, nil, list(cc(0, "10.0.0.2:0", "203.0.113.2:51820", 1, 2, 3, 4))),
	}, {
		name: "zero addresses print empty",
		virtual: []Flow{{Proto: protoTCP, Src: netip.AddrPort{}, Dst: ap("10.0.0.2:80"), Class: classify.Virtual,
			TxPackets: 1}},
		want: msg(list(cc(protoTCP, "", "10.0.0.2:80", 1, 0, 0, 0)), nil, nil, nil),
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			virtual, physical := slices.Clone(tt.virtual), slices.Clone(tt.physical)
			got := Build("n", windowStart, windowEnd, tt.virtual, tt.physical, tt.logExit, tt.isNode)
			checkMessages(t, got, tt.want)
			if !slices.Equal(virtual, tt.virtual) || !slices.Equal(physical, tt.physical) {
				t.Error("Build changed its input")
			}
		})
	}
}

func TestBuildTimesUTC(t *testing.T) {
	msgs := Build("n", windowStart, windowEnd, scenarioVirtual, nil, false, scenario.IsNode)
	if len(msgs) != 1 {
		t.Fatalf("got %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.Start.Location() != time.UTC || m.End.Location() != time.UTC {
		t.Errorf("start, end in %v, %v; want UTC", m.Start.Location(), m.End.Location())
	}
	if !m.Start.Equal(windowStart) || !m.End.Equal(windowEnd) {
		t.Errorf("start, end = %v, %v; want %v, %v", m.Start, m.End, windowStart, windowEnd)
	}
	if m.Logged != nil {
		t.Errorf("logged = %v, want nil", m.Logged)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"start":"2025-03-14T15:26:50.123456789Z"`, `"end":"2025-03-14T15:26:55.123456788Z"`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("JSON lacks %s:\n%s", want, b)
		}
	}
	if bytes.Contains(b, []byte(`"logged"`)) {
		t.Errorf("JSON has logged:\n%s", b)
	}
}

// benchFlows returns n flows: nine in ten on the virtual layer (six in ten
// virtual, two subnet, two exit), one in ten physical.
func benchFlows(n int) (virtual, physical []Flow) {
	for i := range n {
		a := netip.AddrFrom4([4]byte{10, 0, byte(i >> 16), byte(i >> 8)})
		port := uint16(i)
		self := netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), 10000+port%50000)
		f := Flow{Proto: protoTCP, Src: self, TxPackets: uint64(i), TxBytes: uint64(i) * 1000,
			RxPackets: uint64(i), RxBytes: uint64(i) * 1400}
		switch i % 10 {
		case 0:
			f.Proto, f.Src, f.Dst = 0, netip.AddrPortFrom(a, 0), netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)}), 51820)
			physical = append(physical, f)
			continue
		case 1, 2:
			f.Class, f.Dst = classify.Subnet, netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)}), 443)
		case 3, 4:
			f.Class, f.Dst = classify.Exit, netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(i >> 16), byte(i >> 8), byte(i), 1}), 443)
		default:
			f.Class, f.Dst = classify.Virtual, netip.AddrPortFrom(a, 80)
		}
		virtual = append(virtual, f)
	}
	return virtual, physical
}

func BenchmarkBuild(b *testing.B) {
	virtual, physical := benchFlows(100_000)
	isNode := func(a netip.Addr) bool { return a.Is4() && a.As4()[0] == 10 }
	for _, logExit := range []bool{false, true} {
		b.Run(fmt.Sprintf("flows=100k/logExit=%v", logExit), func(b *testing.B) {
			b.ReportAllocs()
			var n int
			for b.Loop() {
				n += len(Build("n", windowStart, windowEnd, virtual, physical, logExit, isNode))
			}
			if n == 0 {
				b.Fatal("no messages")
			}
		})
	}
}
