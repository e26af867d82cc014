package sidecar_test

import (
	"os"
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
