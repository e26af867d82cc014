package wgconf

import (
	"bytes"
	"cmp"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Marshal writes the whole configuration in canonical form: every section
// in a fixed order (Interface, Peers, the wireproxy sections, then the
// sidecar's), keys in a fixed order and spelling, lists on one line, and
// defaults written out. Imports and secret files are written inline, so
// the output holds the private key. For a Config that Parse returned,
// Parse(Marshal(c)) equals c except for Path and Warnings.
func (c *Config) Marshal() []byte {
	w := &writer{}
	w.wgQuick(c, true)
	w.wireproxy(c)
	w.sidecar(c)
	return w.buf.Bytes()
}

// wireproxy writes the sections wireproxy defines, in its order: the
// proxies, then the tunnels, then [Resolve].
func (w *writer) wireproxy(c *Config) {
	for _, s := range c.Socks5 {
		w.section("Socks5")
		w.kv("BindAddress", s.BindAddress)
		w.kv("Username", s.Username)
		w.kv("Password", s.Password)
	}
	for _, h := range c.HTTP {
		w.section("http")
		w.kv("BindAddress", h.BindAddress)
		w.kv("Username", h.Username)
		w.kv("Password", h.Password)
		w.kv("CertFile", h.CertFile)
		w.kv("KeyFile", h.KeyFile)
	}
	for _, s := range c.SNI {
		w.section("SNI")
		w.kv("BindAddress", s.BindAddress)
	}
	for _, t := range c.TCPClientTunnels {
		w.section("TCPClientTunnel")
		w.kv("BindAddress", t.BindAddress)
		w.kv("Target", t.Target)
	}
	for _, t := range c.TCPServerTunnels {
		w.section("TCPServerTunnel")
		w.int("ListenPort", t.ListenPort)
		w.kv("Target", t.Target)
	}
	for _, t := range c.UDPProxyTunnels {
		w.section("UDPProxyTunnel")
		w.kv("BindAddress", t.BindAddress)
		w.kv("Target", t.Target)
		w.kv("InactivityTimeout", formatSeconds(t.InactivityTimeout, ""))
	}
	for _, t := range c.STDIOTunnels {
		w.section("STDIOTunnel")
		w.kv("Target", t.Target)
	}
	if r := c.Resolve; r != nil {
		w.section("Resolve")
		w.kv("ResolveStrategy", cmp.Or(r.ResolveStrategy, DefaultResolveStrategy))
	}
}

// sidecar writes the sections of our own that wireproxy has none for,
// with their defaults written out.
func (w *writer) sidecar(c *Config) {
	for _, t := range c.UDPServerTunnels {
		w.section("UDPServerTunnel")
		w.int("ListenPort", t.ListenPort)
		w.kv("Target", t.Target)
		w.kv("InactivityTimeout", formatSeconds(t.InactivityTimeout, ""))
	}
	if s := c.Serve; s != nil {
		w.section("Serve")
		w.kv("Subnets", joinList(s.Subnets))
		w.kv("Exit", strconv.FormatBool(s.Exit))
	}
	if f := c.FlowLog; f != nil {
		w.section("FlowLog")
		w.kv("Window", formatSeconds(cmp.Or(f.Window, DefaultFlowWindow), "s"))
		w.kv("NodeID", f.NodeID)
		w.kv("Output", f.Output)
		w.kv("LogExitFlows", strconv.FormatBool(f.LogExitFlows))
	}
	if l := c.LogStream; l != nil {
		w.section("LogStream")
		w.kv("URL", l.URL)
		w.kv("Collection", l.Collection)
		w.kv("PrivateID", l.PrivateID)
		w.kv("CopyID", l.CopyID)
		w.kv("BufferDir", l.BufferDir)
		w.kv("MaxBuffer", formatSize(cmp.Or(l.MaxBuffer, DefaultMaxBuffer)))
	}
	if ctl := c.Control; ctl != nil {
		w.section("Control")
		w.kv("Socket", ctl.Socket)
	}
	if m := c.Metrics; m != nil {
		w.section("Metrics")
		w.kv("BindAddress", cmp.Or(m.BindAddress, DefaultMetricsAddress))
	}
	w.ipfix(c.IPFIX)
}

// WGQuick writes only [Interface] and [Peer] in wg-quick(8) syntax, with
// imports and secret files already resolved: the file `wg-quick strip`
// and, once stripped, `wg setconf` accept. wireproxy's CheckAlive keys are
// left out, since wg(8) does not know them.
func (c *Config) WGQuick() []byte {
	w := &writer{verbatim: true}
	w.wgQuick(c, false)
	return w.buf.Bytes()
}

// writer accumulates a file. Values go through kv, which quotes and escapes
// them so that Parse reads them back unchanged; in verbatim mode (wg-quick
// output, where every value is already plain) they are written as they are.
type writer struct {
	buf      bytes.Buffer
	verbatim bool
}

func (w *writer) section(name string) {
	if w.buf.Len() > 0 {
		w.buf.WriteByte('\n')
	}
	w.buf.WriteString("[" + name + "]\n")
}

// kv writes "key = value", or nothing if value is empty.
func (w *writer) kv(key, value string) {
	if value == "" {
		return
	}
	if !w.verbatim {
		value = quote(value)
	}
	w.raw(key, value)
}

// raw writes a value kept verbatim by the parser.
func (w *writer) raw(key, value string) {
	if value == "" {
		return
	}
	w.buf.WriteString(key + " = " + value + "\n")
}

func (w *writer) int(key string, n int) {
	if n != 0 {
		w.raw(key, strconv.Itoa(n))
	}
}

func (w *writer) wgQuick(c *Config, all bool) {
	ifc := &c.Interface
	w.section("Interface")
	w.kv("PrivateKey", ifc.PrivateKey.Base64())
	w.int("ListenPort", ifc.ListenPort)
	w.raw("FwMark", ifc.FwMark)
	w.kv("Address", joinList(ifc.Addresses))
	w.kv("DNS", strings.Join(append(stringsOf(ifc.DNS), ifc.DNSSearch...), ", "))
	w.int("MTU", cmp.Or(ifc.MTU, DefaultMTU))
	w.raw("Table", ifc.Table)
	if ifc.SaveConfig {
		w.raw("SaveConfig", "true")
	}
	for _, h := range []struct {
		key  string
		cmds []string
	}{{"PreUp", ifc.PreUp}, {"PostUp", ifc.PostUp}, {"PreDown", ifc.PreDown}, {"PostDown", ifc.PostDown}} {
		for _, cmd := range h.cmds {
			w.raw(h.key, cmd)
		}
	}
	if all {
		w.kv("CheckAlive", joinList(ifc.CheckAlive))
		w.int("CheckAliveInterval", ifc.CheckAliveInterval)
	}
	for i := range c.Peers {
		p := &c.Peers[i]
		w.section("Peer")
		w.kv("PublicKey", p.PublicKey.String())
		if !p.PresharedKey.IsZero() {
			w.kv("PresharedKey", p.PresharedKey.Base64())
		}
		w.kv("AllowedIPs", joinList(p.AllowedIPs))
		w.kv("Endpoint", p.Endpoint)
		w.int("PersistentKeepalive", p.PersistentKeepalive)
	}
}

// quote makes s read back as itself: a leading '$' is doubled, and s is
// put in quotes when it is empty, has white space at either end, holds a
// '#', or starts with a quote that a later one would close.
func quote(s string) string {
	if strings.HasPrefix(s, "$") {
		s = "$" + s
	}
	if !needsQuotes(s) {
		return s
	}
	if strings.ContainsRune(s, '"') {
		return "'" + s + "'"
	}
	return `"` + s + `"`
}

func needsQuotes(s string) bool {
	if s == "" || s != strings.TrimSpace(s) || strings.ContainsRune(s, '#') {
		return true
	}
	return (s[0] == '"' || s[0] == '\'') && strings.IndexByte(s[1:], s[0]) >= 0
}

// joinList writes xs as a comma list.
func joinList[T fmt.Stringer](xs []T) string { return strings.Join(stringsOf(xs), ", ") }

// stringsOf returns the String of each of xs.
func stringsOf[T fmt.Stringer](xs []T) []string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = x.String()
	}
	return s
}

// formatSeconds writes whole seconds as a number followed by unit ("" for
// the bare number wireproxy reads), anything finer in Go syntax.
func formatSeconds(d time.Duration, unit string) string {
	if d == 0 && unit == "" {
		return "" // the default, never: leave it out
	}
	if d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10) + unit
	}
	return d.String()
}

// formatSize writes n in the largest unit that divides it exactly.
func formatSize(n int64) string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"kB", 1e3}} {
		if n != 0 && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}
