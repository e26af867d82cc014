package sidecar_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/wgsidecar/sidecar/wgconf"
)

// TestREADMEConfigReference checks the README's configuration reference
// against the parser: every section and every key it accepts is
// documented there, so the two cannot drift apart.
func TestREADMEConfigReference(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	start := strings.Index(doc, "## Configuration reference")
	end := strings.Index(doc, "## The flow log")
	if start < 0 || end < start {
		t.Fatal("README has no configuration reference section")
	}
	ref := doc[start:end]
	if !strings.Contains(ref, "`WGConfig") {
		t.Error("README's configuration reference does not mention WGConfig")
	}
	for _, sec := range wgconf.Reference() {
		if !strings.Contains(ref, "`["+sec.Name+"]`") {
			t.Errorf("README's configuration reference does not document section [%s]", sec.Name)
		}
		for _, k := range sec.Keys {
			if !strings.Contains(ref, "`"+k+"`") {
				t.Errorf("README's configuration reference does not document [%s] %s", sec.Name, k)
			}
		}
	}
}

// readmeBlock returns the first fenced block of kind lang ("go", "ini")
// after the heading in the README.
func readmeBlock(t *testing.T, heading, lang string) string {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i := strings.Index(doc, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("README has no %q", heading)
	}
	_, rest, ok := strings.Cut(doc[i:], "```"+lang+"\n")
	block, _, ok2 := strings.Cut(rest, "```\n")
	if !ok || !ok2 {
		t.Fatalf("README has no ```%s block after %q", lang, heading)
	}
	return block
}

// TestREADMEQuickStart: the quick-start file is ten lines at most and
// valid as written, keys from the environment as it says.
func TestREADMEQuickStart(t *testing.T) {
	conf := readmeBlock(t, "## Quick start: beside an app", "ini")
	if n := strings.Count(conf, "\n"); n > 10 {
		t.Errorf("the quick-start file has %d lines; want at most 10", n)
	}
	k, _ := wgconf.GeneratePrivateKey()
	peer, _ := wgconf.GeneratePrivateKey()
	env := map[string]string{"WG_PRIVATE_KEY": k.Base64(), "WG_PEER_KEY": peer.Public().String()}
	cfg, err := wgconf.Parse("wg0.conf", []byte(conf), wgconf.Options{LookupEnv: func(v string) (string, bool) { s, ok := env[v]; return s, ok }})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Peers) != 1 || len(cfg.TCPClientTunnels) != 1 {
		t.Errorf("quick start parsed to %d peers, %d forwards", len(cfg.Peers), len(cfg.TCPClientTunnels))
	}
}

// TestREADMEEmbeddingSnippet compiles and runs the README's embedding
// example exactly as written, as a test package inside this module.
func TestREADMEEmbeddingSnippet(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a package with the go command")
	}
	src := readmeBlock(t, "## Embedding in a Go test", "go")
	gocmd, err := exec.LookPath("go")
	if err != nil {
		gocmd = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	// A directory starting with "_" is inside the module but outside ./...
	dir, err := os.MkdirTemp(".", "_readme_snippet_")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "snippet_test.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(gocmd, "test", "-count=1", "-v", "./"+filepath.Base(dir))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the README's embedding example does not build and pass: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "10.99.0.2:80") {
		t.Errorf("the example logged no flow to 10.99.0.2:80:\n%s", out)
	}
}
