// Package storagetest holds the tests that every collector.Storage must
// pass: known flow-log uploads through the collector's HTTP API, then a
// table of flow, node and log queries whose expected answers are computed
// here from the uploads by a plain reference sum, independent of the
// storage's own planning, indexes and rollups.
//
// A backend's test calls Run with a function that opens a fresh Storage
// (the same one each call when the backend is shared, so that several
// collectors are replicas of one store).
package storagetest

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/collector"
)

const (
	// Token is the bearer token of the collectors Run starts.
	Token = "storagetest-token"
	// Collection is the collection the uploads go to.
	Collection = "fleet"
)

// T0 is the start of the uploaded data: windows of 5 s start 2.5 s after
// it, for two hours, so ranges cross minutes and hours raggedly.
var T0 = time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)

// A Window is one node's window as the test uploads it.
type Window struct {
	Node       string
	Start, End time.Time
	Flows      []Flow
}

// A Flow is one traffic entry of a Window.
type Flow struct {
	Class                            string // virtual, subnet, exit, physical
	Proto                            uint8
	Src, Dst                         string
	TxPkts, TxBytes, RxPkts, RxBytes uint64
}

// Message is w as a flow-log message (SPEC §6).
func (w *Window) Message() map[string]any {
	m := map[string]any{
		"nodeId": w.Node,
		"start":  w.Start.Format(time.RFC3339Nano),
		"end":    w.End.Format(time.RFC3339Nano),
	}
	for _, f := range w.Flows {
		k := f.Class + "Traffic"
		l, _ := m[k].([]map[string]any)
		m[k] = append(l, map[string]any{"proto": f.Proto, "src": f.Src, "dst": f.Dst,
			"txPkts": f.TxPkts, "txBytes": f.TxBytes, "rxPkts": f.RxPkts, "rxBytes": f.RxBytes})
	}
	return m
}

// Fleet returns the test's windows: three nodes, one window each every
// 5 s for two hours, each with a few flows of every class. Byte counts
// are random (seeded), so that rankings have no ties.
func Fleet() []Window {
	r := rand.New(rand.NewPCG(7, 13))
	nodes := []string{"n1", "n2", "n3"}
	var out []Window
	for i := range 2 * 720 {
		start := T0.Add(2500*time.Millisecond + time.Duration(i)*5*time.Second)
		for n, node := range nodes {
			me := fmt.Sprintf("10.99.0.%d", n+1)
			other := fmt.Sprintf("10.99.0.%d", (n+1+r.IntN(2))%3+1)
			w := Window{Node: node, Start: start, End: start.Add(5*time.Second - time.Nanosecond)}
			b := func() uint64 { return 100 + r.Uint64N(1_000_000) }
			p := func() uint64 { return 1 + r.Uint64N(500) }
			w.Flows = append(w.Flows,
				Flow{"virtual", 6, fmt.Sprintf("%s:%d", me, 40000+r.IntN(4)), other + ":80", p(), b(), p(), b()},
				Flow{"virtual", 6, me + ":443", fmt.Sprintf("%s:%d", other, 50000+r.IntN(3)), p(), b(), p(), b()},
				Flow{"physical", 0, other + ":0", fmt.Sprintf("127.0.0.1:%d", 51820+n), p(), b(), p(), b()},
			)
			if r.IntN(3) == 0 {
				w.Flows = append(w.Flows, Flow{"virtual", 17, me + ":5353", other + ":53", p(), b(), p(), b()})
			}
			if n == 1 {
				w.Flows = append(w.Flows, Flow{"subnet", 6, me + ":41000", fmt.Sprintf("192.168.1.%d:5432", 1+r.IntN(3)), p(), b(), p(), b()})
			}
			if n == 2 && i%4 == 0 {
				w.Flows = append(w.Flows, Flow{"exit", 0, me + ":0", "", p(), b(), p(), b()},
					Flow{"virtual", 6, "[fd00::3]:40000", "[fd00::1]:80", p(), b(), p(), b()})
			}
			if n == 0 && (i == 12 || i == 23) {
				// Only in the first and last windows of the minute
				// from 1m0s: see the case "minute less its ends".
				w.Flows = append(w.Flows, Flow{"virtual", 17, me + ":7", other + ":7", 1, 64, 1, 64})
			}
			out = append(out, w)
		}
	}
	return out
}

// Row is a row of /api/v1/flows as JSON gives it.
type Row map[string]any

// Client is an HTTP client of a collector's API.
type Client struct {
	t    testing.TB
	Base string
	HTTP *http.Client
}

// Get asks path with query v and returns the status and body.
func (c *Client) Get(path string, v url.Values) (int, []byte) {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodGet, c.Base+path+"?"+v.Encode(), nil)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+Token)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// Flows asks /api/v1/flows and returns its rows, failing on another
// status than 200.
func (c *Client) Flows(v url.Values) []Row {
	c.t.Helper()
	v.Set("collection", Collection)
	code, body := c.Get("/api/v1/flows", v)
	if code != 200 {
		c.t.Fatalf("flows %s: %d %s", v.Encode(), code, body)
	}
	var ans struct {
		Rows []Row `json:"rows"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&ans); err != nil || ans.Rows == nil {
		c.t.Fatalf("flows %s: %v in %s", v.Encode(), err, body)
	}
	return ans.Rows
}

// Upload posts entries (JSON objects) as stream priv (64 hex digits)
// and returns the answer.
func (c *Client) Upload(priv string, entries []any) string {
	c.t.Helper()
	body, err := json.Marshal(entries)
	if err != nil {
		c.t.Fatal(err)
	}
	resp, err := c.HTTP.Post(c.Base+"/c/"+Collection+"/"+priv, "application/json", bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		c.t.Fatalf("upload: %d %s", resp.StatusCode, answer)
	}
	return strings.TrimSpace(string(answer))
}

// Start serves a collector on st over loopback (its clock is now) and
// returns a client of it. Cleanup closes it, which closes st.
func Start(t testing.TB, st collector.Storage, now func() time.Time) *Client {
	t.Helper()
	s, err := collector.Open(collector.Config{Storage: st, Token: Token, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	tr := &http.Transport{}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		srv.Close()
		if err := s.Close(); err != nil {
			t.Errorf("collector Close: %v", err)
		}
	})
	return &Client{t: t, Base: srv.URL, HTTP: &http.Client{Transport: tr, Timeout: time.Minute}}
}

// stamped returns w's message with logtail's stamp for seq.
func stamped(w *Window, seq int) map[string]any {
	m := w.Message()
	m["logtail"] = map[string]any{"client_time": w.End.Format(time.RFC3339Nano), "proc_id": "proc-" + w.Node, "proc_seq": seq}
	return m
}

// privOf is the private stream ID of a node.
func privOf(node string) string { return fmt.Sprintf("%064x", []byte(node)) }

// UploadFleet uploads windows, node by node in batches of 120, spreading
// the batches over the clients in turn, and then sends the first batch of
// each node again to the next client (a retry that another replica
// answers), which must store nothing.
func UploadFleet(t testing.TB, clients []*Client, windows []Window) {
	t.Helper()
	byNode := map[string][]any{}
	var order []string
	for i := range windows {
		w := &windows[i]
		if _, ok := byNode[w.Node]; !ok {
			order = append(order, w.Node)
		}
		byNode[w.Node] = append(byNode[w.Node], stamped(w, len(byNode[w.Node])+1))
	}
	k := 0
	for _, node := range order {
		es := byNode[node]
		for i := 0; i < len(es); i += 120 {
			batch := es[i:min(i+120, len(es))]
			if ans := clients[k%len(clients)].Upload(privOf(node), batch); ans != fmt.Sprintf(`{"stored":%d,"duplicates":0}`, len(batch)) {
				t.Fatalf("upload of %s: %s", node, ans)
			}
			k++
		}
		batch := es[:min(120, len(es))]
		if ans := clients[(k+1)%len(clients)].Upload(privOf(node), batch); ans != fmt.Sprintf(`{"stored":0,"duplicates":%d}`, len(batch)) {
			t.Fatalf("retried upload of %s: %s, want every entry a duplicate", node, ans)
		}
	}
}

// Case is one flow query and its parameters.
type Case struct {
	Name   string
	Params url.Values
}

// Cases are the flow queries Run asks. Ranges are given as start and end
// (the reference cannot know a collector's now).
func Cases() []Case {
	at := func(d time.Duration) string { return T0.Add(d).Format(time.RFC3339Nano) }
	all := url.Values{"start": {at(-time.Hour)}, "end": {at(3 * time.Hour)}}
	with := func(base url.Values, kv ...string) url.Values {
		v := url.Values{}
		for k, vs := range base {
			v[k] = vs
		}
		for i := 0; i < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v
	}
	ragged := url.Values{"start": {at(37*time.Minute + 13*time.Second)}, "end": {at(time.Hour + 52*time.Minute + 1500*time.Millisecond)}}
	return []Case{
		{"totals", with(all)},
		{"by node", with(all, "group", "node")},
		{"top 3 dst", with(all, "group", "dst", "top", "3")},
		{"class and proto", with(all, "group", "class,proto")},
		{"one node by srcAddr and dstPort", with(all, "group", "srcAddr,dstPort", "node", "n2")},
		{"physical by peer", with(all, "group", "peer", "class", "physical")},
		{"prefix either end by dst", with(all, "group", "dst", "addr", "192.168.1.0/24")},
		{"one address", with(all, "group", "node,dstAddr", "addr", "10.99.0.2")},
		{"IPv6 address", with(all, "group", "src,dst", "addr", "fd00::1")},
		{"port either end by src", with(all, "group", "src", "port", "443")},
		{"udp by node", with(all, "group", "node", "proto", "udp")},
		{"exit by src", with(all, "group", "src,dst,proto", "class", "exit")},
		{"ragged range totals", with(ragged)},
		{"ragged range by dstAddr top 2", with(ragged, "group", "dstAddr", "top", "2")},
		{"ragged range per minute by node", with(ragged, "group", "node", "bucket", "1m")},
		{"ragged range per 5m top 2 dst", with(ragged, "group", "dst", "bucket", "5m", "top", "2")},
		{"per hour by class", with(all, "group", "class", "bucket", "1h")},
		// A minute less the windows at its ends: some sources are only
		// in those windows, so their groups net to nothing.
		{"minute less its ends by src", url.Values{"start": {at(time.Minute + 3*time.Second)}, "end": {at(time.Minute + 55*time.Second)}, "group": {"src"}}},
		{"ragged hour top 5 src per hour", url.Values{"start": {at(2 * time.Second)}, "end": {at(time.Hour + 58*time.Second)}, "group": {"src"}, "top": {"5"}, "bucket": {"1h"}}},
		{"one window exactly", url.Values{"start": {at(2500 * time.Millisecond)}, "end": {at(7500 * time.Millisecond)}, "group": {"node,src,dst,class,proto,peer"}}},
		{"an empty range", url.Values{"start": {at(-time.Hour)}, "end": {at(-time.Minute)}, "group": {"node"}}},
	}
}

// Expect computes a case's rows from windows by the API's rules: windows
// whose start lies in [start, end), filters on either end, sums per
// group (and bucket), top groups by bytes over the range, most bytes
// first (by bucket first when bucketed).
func Expect(t testing.TB, windows []Window, v url.Values) []Row {
	t.Helper()
	start, err1 := time.Parse(time.RFC3339Nano, v.Get("start"))
	end, err2 := time.Parse(time.RFC3339Nano, v.Get("end"))
	if err1 != nil || err2 != nil {
		t.Fatalf("case needs start and end: %v", v)
	}
	var group []string
	if g := v.Get("group"); g != "" {
		group = strings.Split(g, ",")
	}
	bucket := map[string]time.Duration{"": 0, "1m": time.Minute, "5m": 5 * time.Minute, "1h": time.Hour}[v.Get("bucket")]
	var prefix netip.Prefix
	if a := v.Get("addr"); a != "" {
		if p, err := netip.ParsePrefix(a); err == nil {
			prefix = p
		} else {
			ip := netip.MustParseAddr(a)
			prefix = netip.PrefixFrom(ip, ip.BitLen())
		}
	}
	rows := map[string]*sums{}
	for _, w := range windows {
		if w.Start.Before(start) || !w.Start.Before(end) || v.Get("node") != "" && w.Node != v.Get("node") {
			continue
		}
		for _, f := range w.Flows {
			src, dst := endpoint(f.Src), endpoint(f.Dst)
			if !matches(v, prefix, f, src, dst) {
				continue
			}
			keys := groupKeys(group, w.Node, f, src, dst)
			var b string
			if bucket > 0 {
				b = w.Start.Truncate(bucket).UTC().Format(time.RFC3339)
			}
			id := fmt.Sprint(keys, b)
			s := rows[id]
			if s == nil {
				s = &sums{keys: keys, bucket: b}
				rows[id] = s
			}
			s.txPkts += f.TxPkts
			s.txBytes += f.TxBytes
			s.rxPkts += f.RxPkts
			s.rxBytes += f.RxBytes
			s.flows++
		}
	}
	top, _ := strconv.Atoi(v.Get("top"))
	return rankRows(rows, top, bucket > 0)
}

// sums is one expected row being summed.
type sums struct {
	keys                             Row
	bucket                           string
	txPkts, txBytes, rxPkts, rxBytes uint64
	flows                            uint64
}

// rankRows ranks the groups of rows by their bytes over the whole range
// (ties in the API's order of keys), keeps the top ones (all when top is
// 0) and lists their rows by bucket, then rank.
func rankRows(rows map[string]*sums, top int, bucketed bool) []Row {
	// Rank the groups over the whole range.
	total := map[string]uint64{}
	for _, s := range rows {
		total[fmt.Sprint(s.keys)] += s.txBytes + s.rxBytes
	}
	var ranked []string
	order := map[string]string{} // the API's order of keys, for ties
	for _, s := range rows {
		k := fmt.Sprint(s.keys)
		if _, ok := order[k]; !ok {
			ranked = append(ranked, k)
			order[k] = keyOrder(s.keys)
		}
	}
	slices.SortFunc(ranked, func(a, b string) int {
		return cmp.Or(cmp.Compare(total[b], total[a]), cmp.Compare(order[a], order[b]))
	})
	rank := map[string]int{}
	for i, k := range ranked {
		rank[k] = i
	}
	var out []*sums
	for _, s := range rows {
		if top > 0 && rank[fmt.Sprint(s.keys)] >= top {
			continue
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b *sums) int {
		return cmp.Or(cmp.Compare(a.bucket, b.bucket), cmp.Compare(rank[fmt.Sprint(a.keys)], rank[fmt.Sprint(b.keys)]))
	})
	res := []Row{}
	for _, s := range out {
		r := Row{}
		for k, val := range s.keys {
			r[k] = val
		}
		if bucketed {
			r["bucket"] = s.bucket
		}
		r["txPkts"], r["txBytes"] = json.Number(fmt.Sprint(s.txPkts)), json.Number(fmt.Sprint(s.txBytes))
		r["rxPkts"], r["rxBytes"] = json.Number(fmt.Sprint(s.rxPkts)), json.Number(fmt.Sprint(s.rxBytes))
		r["flows"] = json.Number(fmt.Sprint(s.flows))
		res = append(res, r)
	}
	return res
}

// matches applies a case's filters (class, proto, port and addr on either
// end) to one flow.
func matches(v url.Values, prefix netip.Prefix, f Flow, src, dst netip.AddrPort) bool {
	proto := cmp.Or(map[string]string{"tcp": "6", "udp": "17", "icmp": "1", "icmpv6": "58"}[v.Get("proto")], v.Get("proto"))
	switch {
	case v.Get("class") != "" && f.Class != v.Get("class"):
		return false
	case v.Get("proto") != "" && fmt.Sprint(f.Proto) != proto:
		return false
	case v.Get("port") != "" && fmt.Sprint(src.Port()) != v.Get("port") && fmt.Sprint(dst.Port()) != v.Get("port"):
		return false
	case prefix.IsValid() && !prefix.Contains(src.Addr()) && !prefix.Contains(dst.Addr()):
		return false
	}
	return true
}

// groupKeys is a flow's row keys for the group asked for.
func groupKeys(group []string, node string, f Flow, src, dst netip.AddrPort) Row {
	keys := Row{}
	for _, g := range group {
		switch g {
		case "node":
			keys[g] = node
		case "class":
			keys[g] = f.Class
		case "proto":
			keys[g] = json.Number(fmt.Sprint(f.Proto))
		case "src":
			keys[g] = f.Src
		case "dst":
			keys[g] = f.Dst
		case "srcAddr":
			keys[g] = addrText(src)
		case "dstAddr":
			keys[g] = addrText(dst)
		case "dstPort":
			keys[g] = json.Number(fmt.Sprint(dst.Port()))
		case "peer":
			if f.Class == "physical" {
				keys[g] = addrText(src)
			} else {
				keys[g] = addrText(dst)
			}
		}
	}
	return keys
}

// keyOrder is a string that sorts group keys as the API ranks ties:
// node, class, proto, src, dst (address as 16 bytes, then port), peer.
func keyOrder(keys Row) string {
	str := func(k string) string { s, _ := keys[k].(string); return s }
	num := func(k string) uint64 { n, _ := strconv.ParseUint(fmt.Sprint(keys[k]), 10, 64); return n }
	ep := func(ap netip.AddrPort) []byte {
		var a16 [16]byte
		if ap.Addr().IsValid() {
			a16 = ap.Addr().As16()
		}
		return binary.BigEndian.AppendUint16(a16[:], ap.Port())
	}
	b := []byte(str("node"))
	b = append(b, 0, byte(slices.Index([]string{"", "virtual", "subnet", "exit", "physical"}, str("class"))), byte(num("proto")))
	src, dst := endpoint(str("src")), endpoint(str("dst"))
	if a := str("srcAddr"); a != "" {
		src = netip.AddrPortFrom(netip.MustParseAddr(a), 0)
	}
	if a := str("dstAddr"); a != "" {
		dst = netip.AddrPortFrom(netip.MustParseAddr(a), dst.Port())
	}
	if keys["dstPort"] != nil {
		dst = netip.AddrPortFrom(dst.Addr(), uint16(num("dstPort")))
	}
	b = append(b, ep(src)...)
	b = append(b, ep(dst)...)
	var peer netip.Addr
	if a := str("peer"); a != "" {
		peer = netip.MustParseAddr(a)
	}
	return string(append(b, ep(netip.AddrPortFrom(peer, 0))...))
}

func endpoint(s string) netip.AddrPort {
	if s == "" {
		return netip.AddrPort{}
	}
	return netip.MustParseAddrPort(s)
}

func addrText(ap netip.AddrPort) string {
	if !ap.Addr().IsValid() {
		return ""
	}
	return ap.Addr().String()
}

// Run uploads Fleet through one collector per Storage that open returns
// (replicas > 1 makes several collectors of one shared store), then
// asks every Case through each of them and compares with Expect, checks
// /api/v1/nodes and /api/v1/logs with time=window.
func Run(t *testing.T, replicas int, open func(t *testing.T) collector.Storage) {
	windows := Fleet()
	var clients []*Client
	for range replicas {
		clients = append(clients, Start(t, open(t), time.Now))
	}
	UploadFleet(t, clients, windows)
	CheckQueries(t, clients, windows, Cases())
	t.Run("nodes", func(t *testing.T) { checkNodes(t, clients, windows) })
	t.Run("logs by window", func(t *testing.T) { checkLogsByWindow(t, clients, windows) })
}

// CheckQueries asks every case of cases through each client, as a
// subtest, and compares the rows with Expect's from windows.
func CheckQueries(t *testing.T, clients []*Client, windows []Window, cases []Case) {
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			want := Expect(t, windows, tc.Params)
			for i, c := range clients {
				got := c.Flows(cloneValues(tc.Params))
				if diff := diffRows(got, want); diff != "" {
					t.Errorf("replica %d: %s: rows (-got +want):\n%s", i, tc.Params.Encode(), diff)
				}
			}
		})
	}
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = slices.Clone(vs)
	}
	return out
}

// diffRows returns "" if the rows are equal, in order, else both lists.
func diffRows(got, want []Row) string {
	line := func(r Row) string { b, _ := json.Marshal(r); return string(b) }
	var g, w []string
	for _, r := range got {
		g = append(g, line(r))
	}
	for _, r := range want {
		w = append(w, line(r))
	}
	if slices.Equal(g, w) {
		return ""
	}
	var b strings.Builder
	for _, l := range g {
		fmt.Fprintf(&b, "-%s\n", l)
	}
	for _, l := range w {
		fmt.Fprintf(&b, "+%s\n", l)
	}
	return b.String()
}

func checkNodes(t *testing.T, clients []*Client, windows []Window) {
	type node struct {
		Node        string    `json:"node"`
		FirstWindow time.Time `json:"firstWindow"`
		LastWindow  time.Time `json:"lastWindow"`
		TxBytes     uint64    `json:"txBytes"`
		RxBytes     uint64    `json:"rxBytes"`
	}
	want := map[string]*node{}
	for _, w := range windows {
		n := want[w.Node]
		if n == nil {
			n = &node{Node: w.Node, FirstWindow: w.Start, LastWindow: w.End}
			want[w.Node] = n
		}
		if w.Start.Before(n.FirstWindow) {
			n.FirstWindow = w.Start
		}
		if w.End.After(n.LastWindow) {
			n.LastWindow = w.End
		}
		for _, f := range w.Flows {
			if f.Class != "physical" {
				n.TxBytes += f.TxBytes
				n.RxBytes += f.RxBytes
			}
		}
	}
	var wantList []node
	for _, n := range want {
		wantList = append(wantList, *n)
	}
	slices.SortFunc(wantList, func(a, b node) int { return strings.Compare(a.Node, b.Node) })
	for i, c := range clients {
		code, body := c.Get("/api/v1/nodes", url.Values{"collection": {Collection}})
		var ans struct {
			Nodes []node `json:"nodes"`
		}
		if code != 200 || json.Unmarshal(body, &ans) != nil {
			t.Fatalf("replica %d: nodes: %d %s", i, code, body)
		}
		if !slices.EqualFunc(ans.Nodes, wantList, func(a, b node) bool {
			return a.Node == b.Node && a.FirstWindow.Equal(b.FirstWindow) && a.LastWindow.Equal(b.LastWindow) && a.TxBytes == b.TxBytes && a.RxBytes == b.RxBytes
		}) {
			t.Errorf("replica %d: nodes:\n got %+v\nwant %+v", i, ans.Nodes, wantList)
		}
	}
}

// checkLogsByWindow replays the entries of a ragged range by window
// start, for one node and for all.
func checkLogsByWindow(t *testing.T, clients []*Client, windows []Window) {
	start, end := T0.Add(10*time.Minute+2500*time.Millisecond), T0.Add(20*time.Minute)
	for _, node := range []string{"", "n3"} {
		var want []string
		for _, w := range windows {
			if !w.Start.Before(start) && !w.Start.After(end) && (node == "" || w.Node == node) {
				want = append(want, w.Node+"@"+w.Start.Format(time.RFC3339Nano))
			}
		}
		for i, c := range clients {
			v := url.Values{"collection": {Collection}, "start": {start.Format(time.RFC3339Nano)}, "end": {end.Format(time.RFC3339Nano)}, "time": {"window"}}
			if node != "" {
				v.Set("node", node)
			}
			code, body := c.Get("/api/v1/logs", v)
			var ans struct {
				Logs []struct {
					NodeID string `json:"nodeId"`
					Start  string `json:"start"`
				} `json:"logs"`
			}
			if code != 200 || json.Unmarshal(body, &ans) != nil {
				t.Fatalf("replica %d: logs: %d %.200s", i, code, body)
			}
			var got []string
			for _, l := range ans.Logs {
				got = append(got, l.NodeID+"@"+l.Start)
			}
			// Entries of one window start come in stored order: compare
			// as sets within a start, in order across starts.
			sortWithinStart(got)
			sortWithinStart(want)
			if !slices.Equal(got, want) {
				t.Errorf("replica %d node %q: %d entries by window, want %d; first got %v, want %v", i, node, len(got), len(want), head(got), head(want))
			}
		}
	}
}

func sortWithinStart(l []string) {
	slices.SortStableFunc(l, func(a, b string) int {
		_, sa, _ := strings.Cut(a, "@")
		_, sb, _ := strings.Cut(b, "@")
		return cmp.Or(cmp.Compare(sa, sb), cmp.Compare(a, b))
	})
}

func head(l []string) []string { return l[:min(3, len(l))] }

// RunRetention stores windows and entries on a day 40 days ago and on
// yesterday, runs Expire with a cutoff 30 days ago, and checks that only
// the old day went from flows, nodes and logs (by either time).
func RunRetention(t *testing.T, open func(t *testing.T) collector.Storage) {
	now := time.Now().UTC()
	old, recent := now.Add(-40*24*time.Hour), now.Add(-24*time.Hour)
	st := open(t)
	clock := old
	c := Start(t, st, func() time.Time { return clock })
	mk := func(at time.Time, seq int) []any {
		w := Window{Node: "nr", Start: at, End: at.Add(5*time.Second - 1), Flows: []Flow{{"virtual", 6, "10.99.0.1:1000", "10.99.0.2:80", 1, 100, 1, 200}}}
		return []any{stamped(&w, seq)}
	}
	c.Upload(privOf("nr"), mk(old, 1))
	clock = recent
	c.Upload(privOf("nr"), mk(recent, 2))
	all := url.Values{"start": {now.Add(-60 * 24 * time.Hour).Format(time.RFC3339)}, "end": {now.Format(time.RFC3339)}}
	if rows := c.Flows(cloneValues(all)); len(rows) != 1 || fmt.Sprint(rows[0]["flows"]) != "2" {
		t.Fatalf("before expiry: %v, want one row of 2 flows", rows)
	}
	if err := st.Expire(context.Background(), now.Add(-30*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if rows := c.Flows(cloneValues(all)); len(rows) != 1 || fmt.Sprint(rows[0]["flows"]) != "1" || fmt.Sprint(rows[0]["txBytes"]) != "100" {
		t.Errorf("after expiry: %v, want one row of 1 flow", rows)
	}
	for _, by := range []string{"logged", "window"} {
		v := cloneValues(all)
		v.Set("collection", Collection)
		v.Set("time", by)
		code, body := c.Get("/api/v1/logs", v)
		if n := bytes.Count(body, []byte(`"nodeId"`)); code != 200 || n != 1 {
			t.Errorf("logs by %s after expiry: %d, %d entries, want 1: %.300s", by, code, n, body)
		}
	}
	code, body := c.Get("/api/v1/nodes", url.Values{"collection": {Collection}})
	var ans struct {
		Nodes []struct {
			FirstWindow time.Time `json:"firstWindow"`
			TxBytes     uint64    `json:"txBytes"`
		} `json:"nodes"`
	}
	if code != 200 || json.Unmarshal(body, &ans) != nil || len(ans.Nodes) != 1 || !ans.Nodes[0].FirstWindow.Equal(recent) || ans.Nodes[0].TxBytes != 100 {
		t.Errorf("nodes after expiry: %d %s; want one node whose first window is %v", code, body, recent)
	}
}
