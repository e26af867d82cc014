package wgconf

import (
	"errors"
	"net/netip"
	"syscall"
	"testing"
)

// TestAt: a refusal at start-up names the file, the line of the key (or of
// its section when the key is absent) and the key; on a Config built in
// code it names the section.
func TestAt(t *testing.T) {
	text := runnable + "ListenPort = 51820\n" + // line 4
		"[TCPClientTunnel]\nBindAddress = 127.0.0.1:5000\nTarget = 10.0.0.2:80\n" + // 5-7
		"[TCPClientTunnel]\nBindAddress = 127.0.0.1:5001\nTarget = 10.0.0.2:81\n" + // 8-10
		"[FlowLog]\nOutput = /nonexistent/flows\n" + // 11-12
		"[Control]\n" // 13
	c, err := Parse("wg0.conf", []byte(text), testOptions(nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	cause := syscall.EADDRINUSE
	for _, tc := range []struct {
		section any
		key     string
		want    string
	}{
		{&c.Interface, "ListenPort", "wg0.conf:4: ListenPort: address already in use"},
		{c.TCPClientTunnels[1], "BindAddress", "wg0.conf:9: BindAddress: address already in use"},
		{c.FlowLog, "Output", "wg0.conf:12: Output: address already in use"},
		{c.Control, "Socket", "wg0.conf:13: Socket: address already in use"}, // absent key: its section's line
	} {
		err := c.At(tc.section, tc.key, cause)
		if err == nil || err.Error() != tc.want || !errors.Is(err, cause) {
			t.Errorf("At(%T, %s) = %v; want %q wrapping the cause", tc.section, tc.key, err, tc.want)
		}
	}
	// Already an *Error: unchanged.
	inner := &Error{File: "x", Line: 2, Key: "K", Err: cause}
	if got := c.At(c.FlowLog, "Output", inner); got != error(inner) {
		t.Errorf("At of an *Error = %v", got)
	}
	built := &Config{Interface: Interface{Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}},
		TCPClientTunnels: []TCPClientTunnel{{BindAddress: "a"}, {BindAddress: "b"}}}
	if got, want := built.At(built.TCPClientTunnels[1], "BindAddress", cause).Error(),
		"<config>: BindAddress: address already in use (in [TCPClientTunnel] #2)"; got != want {
		t.Errorf("built in code: %q; want %q", got, want)
	}
}
