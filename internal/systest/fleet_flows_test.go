package systest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/collector"
	"github.com/wgsidecar/sidecar/collector/clickhouse"
	"github.com/wgsidecar/sidecar/collector/storagetest"
	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/logtail"
	"github.com/wgsidecar/sidecar/sidecartest"
	"github.com/wgsidecar/sidecar/wgconf"
)

// TestFleetFlowsRealNodes: two real nodes (sidecartest) log their flows
// to NDJSON files ([FlowLog] Output) and upload them ([LogStream]) to
// different collector replicas; top-N and bucketed queries through either
// replica equal the sums of the files' windows; a retried upload sent to
// the other replica is not counted again; retention drops old days. The
// same table of queries runs on the embedded store (one collector, both
// nodes) and on ClickHouse (two collectors on one database of a
// clickhouse-server the test starts).
func TestFleetFlowsRealNodes(t *testing.T) {
	for _, backend := range []string{"embedded", "clickhouse"} {
		t.Run(backend, func(t *testing.T) {
			// open(db) opens a Storage on database db: each call a
			// replica of the one before on ClickHouse, a new file on the
			// embedded store.
			var open func(db string) func(t *testing.T) collector.Storage
			replicas := 1
			switch backend {
			case "embedded":
				open = func(string) func(t *testing.T) collector.Storage {
					return func(t *testing.T) collector.Storage {
						st, err := collector.OpenBolt(filepath.Join(t.TempDir(), "collector.db"))
						if err != nil {
							t.Fatal(err)
						}
						return st
					}
				}
			case "clickhouse":
				addr, stop, skip := testnet.StartClickHouse()
				if addr == "" {
					t.Skip(skip)
				}
				t.Cleanup(stop)
				replicas = 2
				open = func(db string) func(t *testing.T) collector.Storage {
					return func(t *testing.T) collector.Storage {
						st, err := clickhouse.Open(context.Background(), fmt.Sprintf("clickhouse://%s/%s", addr, db), nil)
						if err != nil {
							t.Fatal(err)
						}
						return st
					}
				}
			}
			forEachDevice(t, func(t *testing.T, own bool) {
				runFleetFlows(t, replicas, open("fleet_"+map[bool]string{false: "wggo", true: "wgdev"}[own]), own)
			})
			t.Run("retention", func(t *testing.T) { storagetest.RunRetention(t, open("retention")) })
		})
	}
}

func runFleetFlows(t *testing.T, replicas int, open func(t *testing.T) collector.Storage, own bool) {
	var clients []*storagetest.Client
	for range replicas {
		clients = append(clients, storagetest.Start(t, open(t), time.Now))
	}
	dir := t.TempDir()
	ids := make([]logtail.PrivateID, 2)
	outputs := make([]string, 2)
	nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{
		OwnWireGuard: own,
		Configure: func(i int, cfg *wgconf.Config) {
			id, err := logtail.NewPrivateID()
			if err != nil {
				t.Fatal(err)
			}
			ids[i] = id
			outputs[i] = filepath.Join(dir, fmt.Sprintf("flows-%d.ndjson", i))
			cfg.FlowLog = &wgconf.FlowLog{Window: time.Second, NodeID: fmt.Sprintf("node-%c", 'a'+i), Output: outputs[i]}
			// Node i uploads to replica i (both to the one collector
			// without replicas).
			c := clients[i%len(clients)]
			cfg.LogStream = &wgconf.LogStream{URL: c.Base, Collection: storagetest.Collection, PrivateID: id.Hex(), BufferDir: t.TempDir()}
		},
		NodeOptions: func(i int, o *sidecar.Options) { o.LogStreamFlush = 20 * time.Millisecond },
	})

	// Traffic both ways over TCP (a → b 1 MiB, b → a 256 KiB), UDP
	// and pings, in a few windows.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, n := range nodes {
		ln, err := n.Listen("tcp", ":9000")
		if err != nil {
			t.Fatal(err)
		}
		testnet.Serve(t, ln, testnet.Discard)
		peer := sidecartest.Addr4(1 - i).String()
		for round := range 3 {
			c, err := nodes[1-i].Dial("tcp", net.JoinHostPort(sidecartest.Addr4(i).String(), "9000"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.CopyN(c, testnet.Pattern(), int64((1<<20)>>(2*i))/3+int64(round)); err != nil {
				t.Fatal(err)
			}
			c.Close()
			if _, err := n.Ping(ctx, peer); err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}

	// Wait until what the collectors hold is what the files say.
	var windows []storagetest.Window
	totals := url.Values{"start": {"2000-01-01T00:00:00Z"}, "end": {"2100-01-01T00:00:00Z"}, "group": {"node,class"}}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		for _, n := range nodes {
			if err := n.CutFlows(ctx); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(200 * time.Millisecond)
		windows = readFlowFiles(t, outputs)
		want, _ := json.Marshal(storagetest.Expect(t, windows, totals))
		same := len(windows) > 0
		for _, c := range clients {
			got, _ := json.Marshal(c.Flows(cloneParams(totals)))
			same = same && string(got) == string(want)
		}
		if same {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the collectors' totals never matched the NDJSON files' %s", want)
		}
	}
	// Stop the nodes, so that no window arrives while the queries are
	// compared; then the last windows the files got must be in too.
	for _, n := range nodes {
		n.Close()
	}
	windows = readFlowFiles(t, outputs)
	first, last := windows[0].Start, windows[0].End
	for _, w := range windows {
		first, last = minTime(first, w.Start), maxTime(last, w.End)
	}
	at := func(t time.Time) string { return t.Format(time.RFC3339Nano) }
	all := url.Values{"start": {at(first.Add(-time.Hour))}, "end": {at(last.Add(time.Hour))}}
	with := func(kv ...string) url.Values {
		v := cloneParams(all)
		for i := 0; i < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v
	}
	cases := []storagetest.Case{
		{Name: "totals by node and class", Params: with("group", "node,class")},
		{Name: "top 3 dst", Params: with("group", "dst", "top", "3")},
		{Name: "top 2 src virtual", Params: with("group", "src", "top", "2", "class", "virtual")},
		{Name: "per minute by node", Params: with("group", "node", "bucket", "1m")},
		{Name: "per minute top 2 dst tcp", Params: with("group", "dst", "bucket", "1m", "top", "2", "proto", "tcp")},
		{Name: "physical by peer", Params: with("group", "peer", "class", "physical")},
	}
	waitAll(t, clients, windows, all)
	storagetest.CheckQueries(t, clients, windows, cases)

	// A retry of node a's uploads, answered by the other replica (the
	// same one without replicas): every entry a duplicate, nothing moves.
	var logs struct {
		Logs []map[string]any `json:"logs"`
	}
	v := cloneParams(all)
	v.Set("collection", storagetest.Collection)
	v.Set("node", "node-a")
	code, body := clients[0].Get("/api/v1/logs", v)
	if err := json.Unmarshal(body, &logs); code != 200 || err != nil || len(logs.Logs) == 0 {
		t.Fatalf("logs of node-a: %d %v %.300s", code, err, body)
	}
	retry := make([]any, len(logs.Logs))
	for i, e := range logs.Logs {
		delete(e, "logged")
		retry[i] = e
	}
	other := clients[1%len(clients)]
	if ans := other.Upload(ids[0].Hex(), retry); ans != fmt.Sprintf(`{"stored":0,"duplicates":%d}`, len(retry)) {
		t.Fatalf("retried upload of node-a to the other replica: %s, want every entry a duplicate", ans)
	}
	t.Run("after a retry", func(t *testing.T) { storagetest.CheckQueries(t, clients, windows, cases) })
}

// waitAll waits until every client's totals over all equal the windows'
// (the last windows' uploads may still be in flight after Close).
func waitAll(t *testing.T, clients []*storagetest.Client, windows []storagetest.Window, all url.Values) {
	t.Helper()
	v := cloneParams(all)
	v.Set("group", "node")
	want, _ := json.Marshal(storagetest.Expect(t, windows, v))
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		same := true
		var got []byte
		for _, c := range clients {
			got, _ = json.Marshal(c.Flows(cloneParams(v)))
			same = same && string(got) == string(want)
		}
		if same {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("collector totals %s, files' %s", got, want)
		}
	}
}

// readFlowFiles reads the nodes' NDJSON flow logs as the storage suite's
// windows.
func readFlowFiles(t *testing.T, paths []string) []storagetest.Window {
	t.Helper()
	type entry struct {
		Proto                            uint8
		Src, Dst                         string
		TxPkts, TxBytes, RxPkts, RxBytes uint64
	}
	var out []storagetest.Window
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<24)
		for sc.Scan() {
			var m struct {
				NodeID                        string
				Start, End                    time.Time
				VirtualTraffic, SubnetTraffic []entry
				ExitTraffic, PhysicalTraffic  []entry
			}
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			w := storagetest.Window{Node: m.NodeID, Start: m.Start, End: m.End}
			for class, es := range map[string][]entry{"virtual": m.VirtualTraffic, "subnet": m.SubnetTraffic, "exit": m.ExitTraffic, "physical": m.PhysicalTraffic} {
				for _, e := range es {
					w.Flows = append(w.Flows, storagetest.Flow{Class: class, Proto: e.Proto, Src: e.Src, Dst: e.Dst,
						TxPkts: e.TxPkts, TxBytes: e.TxBytes, RxPkts: e.RxPkts, RxBytes: e.RxBytes})
				}
			}
			out = append(out, w)
		}
		f.Close()
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func cloneParams(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
