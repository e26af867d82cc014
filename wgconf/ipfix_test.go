package wgconf

import (
	"errors"
	"strings"
	"testing"
)

func TestKeyError(t *testing.T) {
	cause := errors.New("lookup flows.invalid: no such host")
	text := minimal + "[IPFIX]\nTransport = udp\nCollector = flows.invalid:4739\n"
	c, err := Parse("test.conf", []byte(text), testOptions(nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		section, key string
		line         int
	}{
		{"IPFIX", "Collector", 5},
		{"ipfix", "Collector", 5},   // section names are case-insensitive
		{"IPFIX", "Layers", 3},      // an absent key: the section's line
		{"FlowLog", "Window", 0},    // a section the file does not have
		{"NoSuchSection", "Key", 0}, // not a section at all
	} {
		var e *Error
		if !errors.As(c.KeyError(tc.section, tc.key, cause), &e) {
			t.Fatalf("KeyError(%s, %s) is not an *Error", tc.section, tc.key)
		}
		if e.File != "test.conf" || e.Line != tc.line || e.Key != tc.key || !errors.Is(e, cause) {
			t.Errorf("KeyError(%s, %s) = %q at %s:%d key %q, want test.conf:%d key %q wrapping the cause", tc.section, tc.key, e, e.File, e.Line, e.Key, tc.line, tc.key)
		}
	}
	want := "test.conf:5: Collector: lookup flows.invalid: no such host"
	if got := c.KeyError("IPFIX", "Collector", cause).Error(); got != want {
		t.Errorf("KeyError text %q, want %q", got, want)
	}

	// Built in code: no line, the section named.
	built := &Config{Path: "x.conf", IPFIX: &IPFIX{Collector: "flows.invalid:4739"}}
	if got := built.KeyError("IPFIX", "Collector", cause).Error(); !strings.HasPrefix(got, "x.conf: Collector: lookup") || !strings.Contains(got, "(in [IPFIX])") {
		t.Errorf("KeyError on a built config: %q", got)
	}
}

func TestValidateIPFIXBuiltInCode(t *testing.T) {
	base := func() *Config {
		return &Config{Interface: Interface{PrivateKey: mustPriv(testPriv)}, IPFIX: &IPFIX{Collector: "127.0.0.1:4739"}}
	}
	// Zero Transport, TemplateRefresh and Layers mean the defaults.
	c := base()
	if err := c.Validate(); err != nil {
		t.Fatalf("zero values: %v", err)
	}
	out := string(c.Marshal())
	if !strings.Contains(out, "[IPFIX]\nCollector = 127.0.0.1:4739\nTransport = udp\nTemplateRefresh = 600s\nLayers = virtual, subnet, exit\n") {
		t.Errorf("Marshal wrote the defaults as:\n%s", out)
	}
	for _, bad := range []struct {
		change func(*IPFIX)
		key    string
	}{
		{func(x *IPFIX) { x.Collector = "" }, "Collector"},
		{func(x *IPFIX) { x.Collector = "[::1]:0" }, "Collector"},
		{func(x *IPFIX) { x.Transport = "quic" }, "Transport"},
		{func(x *IPFIX) { x.TemplateRefresh = -1 }, "TemplateRefresh"},
		{func(x *IPFIX) { x.Layers = []string{"Virtual"} }, "Layers"},
	} {
		c := base()
		bad.change(c.IPFIX)
		var e *Error
		if err := c.Validate(); !errors.As(err, &e) || e.Key != bad.key || !strings.Contains(err.Error(), "(in [IPFIX])") {
			t.Errorf("Validate with a bad %s: %v", bad.key, err)
		}
	}
}
