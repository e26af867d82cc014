package wgconf

import (
	"errors"
	"strings"
	"testing"
)

// TestAtIPFIX: an error found when the node starts (an unresolvable
// collector) names the file, the key's line, and the key; an absent key
// the section's line; a Config built in code the section.
func TestAtIPFIX(t *testing.T) {
	cause := errors.New("lookup flows.invalid: no such host")
	text := runnable + "[IPFIX]\nTransport = udp\nCollector = flows.invalid:4739\n"
	c, err := Parse("test.conf", []byte(text), testOptions(nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key  string
		line int
	}{
		{"Collector", 6},
		{"Layers", 4}, // an absent key: the section's line
	} {
		var e *Error
		if !errors.As(c.At(c.IPFIX, tc.key, cause), &e) {
			t.Fatalf("At(IPFIX, %s) is not an *Error", tc.key)
		}
		if e.File != "test.conf" || e.Line != tc.line || e.Key != tc.key || !errors.Is(e, cause) {
			t.Errorf("At(IPFIX, %s) = %q at %s:%d key %q, want test.conf:%d key %q wrapping the cause", tc.key, e, e.File, e.Line, e.Key, tc.line, tc.key)
		}
	}
	want := "test.conf:6: Collector: lookup flows.invalid: no such host"
	if got := c.At(c.IPFIX, "Collector", cause).Error(); got != want {
		t.Errorf("At text %q, want %q", got, want)
	}
	// Built in code: no line, the section named.
	built := &Config{Path: "x.conf", IPFIX: &IPFIX{Collector: "flows.invalid:4739"}}
	if got := built.At(built.IPFIX, "Collector", cause).Error(); !strings.HasPrefix(got, "x.conf: Collector: lookup") || !strings.Contains(got, "[IPFIX]") {
		t.Errorf("At on a built config: %q", got)
	}
}
