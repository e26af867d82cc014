package sidecar_test

import (
	"bytes"
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// modulePath is the module whose own packages the import rules govern.
const modulePath = "github.com/wgsidecar/sidecar"

// importRule forbids the packages matching pkgs (less those matching
// except) to import anything matching forbid.
//
// Patterns are those of the go command: "x/..." matches x and everything
// below it, anything else matches one path exactly. A pattern whose first
// element holds no dot names a package of this module relative to its
// root ("." is the root package itself, "..." the whole module); one with
// a dot is a full import path ("gvisor.dev/...").
type importRule struct {
	pkgs   []string
	except []string
	forbid []string
	why    string // the rule in the spec's words
}

var (
	gvisor    = "gvisor.dev/..."
	wireguard = "golang.zx2c4.com/wireguard/..."
	core      = []string{"netstack", "wrap", "stats", "classify", "logtail", "logproto", "wgconf", "devconf", "metrics", "relay", "resolver", "udpbind", "ipfix", "wgnoise"}
	middle    = []string{"proxy/...", "forward/...", "netlog/...", "monitor/...", "watchdog/...", "control/...", "collector/...", "sidecartest/..."}
)

// importRules is SPEC §1's dependency paragraph as a table: dependencies
// point from the edge (cmd/sidecar, the root package) through the middle
// (proxies, flow logger, monitor, collector) to the core.
var importRules = []importRule{
	{
		pkgs:   []string{"stats", "classify", "logtail", "logproto", "collector"},
		forbid: []string{gvisor, wireguard},
		why:    "stats, classify and logtail know nothing of gVisor or WireGuard (plain addresses, prefixes, bytes); nor does the collector",
	},
	{
		pkgs:   []string{"stats", "classify"},
		forbid: []string{"..."},
		why:    "stats and classify stand alone: plain addresses, prefixes and bytes",
	},
	{
		pkgs:   []string{"logtail"},
		forbid: []string{"stats/...", "classify/...", "netlog/...", "wrap/...", "collector/..."},
		why:    "logtail knows nothing of flows (it carries any JSON entry)",
	},
	{
		pkgs:   []string{"wgnoise"},
		forbid: []string{gvisor, wireguard, "..."},
		why:    "WireGuard's messages and cryptography stand alone: bytes in, bytes out, no I/O",
	},
	{
		pkgs:   []string{"ipfix"},
		forbid: []string{gvisor, wireguard, "..."},
		why:    "the IPFIX exporter stands alone: plain addresses, ports and counts; it knows nothing of gVisor, WireGuard or the flow log",
	},
	{
		pkgs:   []string{"collector"},
		forbid: []string{"logtail/..."},
		why:    "the collector shares only the wire protocol with the client",
	},
	{
		pkgs:   []string{"netstack"},
		forbid: []string{"stats/...", "wrap/...", "netlog/...", "logtail/...", "metrics/...", "monitor/..."},
		why:    "netstack knows nothing of counting or logging",
	},
	{
		pkgs:   []string{"..."},
		except: []string{"netstack", "monitor"},
		forbid: []string{gvisor},
		why:    "gVisor stays behind netstack (and the monitor's packet dissector)",
	},
	{
		pkgs:   core,
		forbid: append([]string{".", "cmd/..."}, middle...),
		why:    "dependencies point one way, from the edge to the core",
	},
}

// TestImportRules checks the module's own (non-test) imports against
// importRules.
func TestImportRules(t *testing.T) {
	graph := moduleImports(t)
	if len(graph) == 0 {
		t.Fatal("go list reported no packages")
	}
	// The graph must be the real one: netstack is built on gVisor.
	if !slices.ContainsFunc(graph[modulePath+"/netstack"], func(imp string) bool {
		return matchImport(gvisor, imp)
	}) {
		t.Fatalf("netstack imports no gVisor package in the graph read: %v", graph[modulePath+"/netstack"])
	}
	pkgs := slices.Collect(maps.Keys(graph))
	for _, r := range importRules {
		for _, p := range r.pkgs {
			if !slices.ContainsFunc(pkgs, func(pkg string) bool { return matchImport(p, pkg) }) {
				t.Errorf("rule %q names %q, which matches no package of the module", r.why, p)
			}
		}
	}
	for _, v := range checkImports(graph, importRules) {
		t.Error(v)
	}
}

// TestCheckImports runs the rule matcher over small made-up graphs, so
// TestImportRules cannot pass for want of finding anything.
func TestCheckImports(t *testing.T) {
	m := func(rel string) string { return modulePath + "/" + rel }
	tests := []struct {
		name  string
		graph map[string][]string
		want  []string // offending "pkg -> import" pairs, in order
	}{
		{
			name:  "clean",
			graph: map[string][]string{m("netstack"): {"gvisor.dev/gvisor/pkg/tcpip"}, m("monitor"): {"gvisor.dev/gvisor/pkg/tcpip/header"}, m("wrap"): {m("stats"), "golang.zx2c4.com/wireguard/tun"}, modulePath: {m("wrap")}},
		},
		{
			name:  "stats imports gVisor",
			graph: map[string][]string{m("stats"): {"net/netip", "gvisor.dev/gvisor/pkg/tcpip/header"}},
			want:  []string{m("stats") + " -> gvisor.dev/gvisor/pkg/tcpip/header", m("stats") + " -> gvisor.dev/gvisor/pkg/tcpip/header"},
		},
		{
			name:  "logtail imports WireGuard",
			graph: map[string][]string{m("logtail"): {"golang.zx2c4.com/wireguard/conn"}},
			want:  []string{m("logtail") + " -> golang.zx2c4.com/wireguard/conn"},
		},
		{
			name:  "classify imports the module",
			graph: map[string][]string{m("classify"): {m("wgconf")}},
			want:  []string{m("classify") + " -> " + m("wgconf")},
		},
		{
			name:  "collector imports logtail",
			graph: map[string][]string{m("collector"): {m("logtail")}},
			want:  []string{m("collector") + " -> " + m("logtail")},
		},
		{
			name:  "root imports gVisor",
			graph: map[string][]string{modulePath: {"gvisor.dev/gvisor/pkg/tcpip/header"}},
			want:  []string{modulePath + " -> gvisor.dev/gvisor/pkg/tcpip/header"},
		},
		{
			name:  "core imports the root",
			graph: map[string][]string{m("relay"): {modulePath}},
			want:  []string{m("relay") + " -> " + modulePath},
		},
		{
			name:  "core imports a middle package below it",
			graph: map[string][]string{m("wgconf"): {m("proxy/socks")}, m("udpbind"): {m("cmd/sidecar")}},
			want:  []string{m("udpbind") + " -> " + m("cmd/sidecar"), m("wgconf") + " -> " + m("proxy/socks")},
		},
		{
			name:  "netstack imports metrics",
			graph: map[string][]string{m("netstack"): {m("metrics")}},
			want:  []string{m("netstack") + " -> " + m("metrics")},
		},
		{
			name:  "a prefix is not a path element",
			graph: map[string][]string{m("relay"): {m("proxyutil"), "gvisor.devices/x"}, m("statsd"): {"gvisor.dev/gvisor/pkg/tcpip"}},
			want:  []string{m("statsd") + " -> gvisor.dev/gvisor/pkg/tcpip"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, v := range checkImports(tt.graph, importRules) {
				got = append(got, v.pkg+" -> "+v.imp)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("violations:\n got  %q\n want %q", got, tt.want)
			}
		})
	}
}

// violation is one import that breaks one rule.
type violation struct {
	pkg, imp string
	rule     importRule
}

func (v violation) String() string {
	return fmt.Sprintf("%s imports %s: %s", v.pkg, v.imp, v.rule.why)
}

// checkImports returns every import in graph (import path → its imports)
// that a rule forbids, sorted by package and import, once per rule broken.
func checkImports(graph map[string][]string, rules []importRule) []violation {
	var out []violation
	for _, pkg := range slices.Sorted(maps.Keys(graph)) {
		imps := slices.Sorted(slices.Values(graph[pkg]))
		for _, r := range rules {
			if !matchAny(r.pkgs, pkg) || matchAny(r.except, pkg) {
				continue
			}
			for _, imp := range imps {
				if matchAny(r.forbid, imp) {
					out = append(out, violation{pkg, imp, r})
				}
			}
		}
	}
	return out
}

// matchAny reports whether path matches one of patterns.
func matchAny(patterns []string, path string) bool {
	return slices.ContainsFunc(patterns, func(p string) bool { return matchImport(p, path) })
}

// matchImport reports whether the import path matches pattern, a go
// command pattern that is relative to the module root unless its first
// element has a dot (see importRule).
func matchImport(pattern, path string) bool {
	first, _, _ := strings.Cut(pattern, "/")
	if !strings.Contains(first, ".") || first == "." || first == "..." {
		switch {
		case pattern == ".":
			pattern = modulePath
		case pattern == "...":
			pattern = modulePath + "/..."
		default:
			pattern = modulePath + "/" + pattern
		}
	}
	if tree, ok := strings.CutSuffix(pattern, "/..."); ok {
		return path == tree || strings.HasPrefix(path, tree+"/")
	}
	return path == pattern
}

// moduleImports lists the module's packages with the go command and
// returns each one's non-test imports.
func moduleImports(t *testing.T) map[string][]string {
	t.Helper()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list the module's imports: %v", err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(goCmd, "list", "-deps=false", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "./...")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	graph := make(map[string][]string)
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		graph[fields[0]] = fields[1:]
	}
	return graph
}
