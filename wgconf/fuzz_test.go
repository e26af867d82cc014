package wgconf

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, fails only with *Error, and
// that whatever it accepts survives Marshal (and WGQuick) unchanged. Each
// input is also tried after a minimal [Interface], so that mutated
// sections get past the check for a private key and reach the writer.
func FuzzParse(f *testing.F) {
	for _, text := range []string{
		goodConf,
		strings.ReplaceAll(goodConf, "\n", "\r\n"),
		string(parseGood(f).Marshal()),
		string(parseGood(f).WGQuick()),
		wireproxySample,
		minimal,
		"[FlowLog]\nNodeID = \"a # b\"\nOutput = 'x \"y\"'\n[Socks5]\nBindAddress = :1\nUsername = $$u\nPassword = ${SOCKS_PASSWORD}\n",
		"[LogStream]\nURL = http://c\nCollection = c\nPrivateID = " + testStreamID + "\nMaxBuffer = 1GiB\n",
		"[UDPServerTunnel]\nListenPort = 53\nTarget = 127.0.0.1:53\nInactivityTimeout = 1.5s\n",
	} {
		f.Add([]byte(text))
	}
	for _, tc := range badCases {
		f.Add([]byte(tc.text))
	}
	for _, text := range badFiles {
		f.Add([]byte(text))
	}
	opts := testOptions(goodEnv, badFiles)
	f.Fuzz(func(t *testing.T, data []byte) {
		checkParse(t, data, opts)
		checkParse(t, append([]byte(minimal), data...), opts)
	})
}

func checkParse(t *testing.T, data []byte, opts Options) {
	c, err := Parse("fuzz.conf", data, opts)
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("error %v is a %T, want *Error", err, err)
		}
		return
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Parse accepted what Validate rejects: %v", err)
	}
	roundTrip(t, c, opts)

	wg := c.WGQuick()
	c2, err := Parse("wg.conf", wg, opts)
	if err != nil {
		t.Fatalf("Parse(WGQuick()): %v\n%s", err, wg)
	}
	want := &Config{Interface: c.Interface, Peers: c.Peers}
	want.Interface.CheckAlive, want.Interface.CheckAliveInterval = nil, 0
	if d := diffConfig(c2, want); len(d) > 0 {
		t.Fatalf("Parse(WGQuick()) differs:\n%s\n%s", strings.Join(d, "\n"), wg)
	}
	for _, line := range bytes.Split(wg, []byte("\n")) {
		if len(line) > 0 && line[0] == '[' && string(line) != "[Interface]" && string(line) != "[Peer]" {
			t.Fatalf("WGQuick wrote section %s:\n%s", line, wg)
		}
	}
}
