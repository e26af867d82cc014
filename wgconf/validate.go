package wgconf

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Validate checks what Parse checks beyond syntax: required keys, ranges,
// address syntax, duplicate peers and ports, and that every string can be
// written back by Marshal. Parse runs the same checks on what it read, with
// the file and line of the key at fault; on a Config built in code an
// *Error has no line, and its message names the section instead.
//
// In a Config built in code, a zero MTU, CheckAliveInterval, Window,
// MaxBuffer, ResolveStrategy or Metrics BindAddress means the default.
func (c *Config) Validate() error { return c.validate(nil) }

type validator struct {
	c   *Config
	pos *positions // nil when the Config was not parsed
}

func (c *Config) validate(pos *positions) error {
	v := &validator{c: c, pos: pos}
	for _, check := range []func() error{
		v.checkInterface,
		v.checkPeers,
		v.checkProxies,
		v.checkTunnels,
		v.checkSidecar,
		v.checkAddress,
	} {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

// parsed reports whether the Config came from Parse, where defaults are
// already filled in and a zero therefore came from the file.
func (v *validator) parsed() bool { return v.pos != nil }

// errorf reports a problem with key in the section ref: at the key's line
// when parsed (or the section's line if the key is absent), otherwise
// naming the section in the message.
func (v *validator) errorf(ref sectionRef, key, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	if v.pos == nil {
		return &Error{File: v.c.Path, Key: key, Err: fmt.Errorf("%w (in %s)", err, v.describe(ref))}
	}
	w := where{file: v.pos.main}
	if sp := v.pos.sections[ref]; sp != nil {
		w = sp.header
		if kw, ok := sp.keys[key]; ok {
			w = kw
		}
	}
	return &Error{File: w.file, Line: w.line, Key: key, Err: err}
}

// describe names a section for a message: by position when parsed, by
// number otherwise.
func (v *validator) describe(ref sectionRef) string {
	spec := &sections[ref.kind]
	if v.pos != nil {
		if sp := v.pos.sections[ref]; sp != nil {
			return fmt.Sprintf("[%s] at %s:%d", spec.name, displayName(sp.header.file), sp.header.line)
		}
	}
	if spec.repeated {
		return fmt.Sprintf("[%s] #%d", spec.name, ref.index+1)
	}
	return "[" + spec.name + "]"
}

// checkAddress requires an Address: a node cannot run without its own
// tunnel address. It runs after the other checks, so that a file with
// several faults is told of the one on its own line first.
func (v *validator) checkAddress() error {
	if len(v.c.Interface.Addresses) == 0 {
		return v.errorf(sectionRef{kind: secInterface}, "Address",
			"required key is missing: the node's own tunnel addresses, e.g. Address = 10.0.0.2/32")
	}
	return nil
}

func (v *validator) checkInterface() error {
	ifc := &v.c.Interface
	ref := sectionRef{kind: secInterface}
	if ifc.PrivateKey.IsZero() {
		if v.pos != nil && v.pos.sections[ref] == nil {
			return &Error{File: v.pos.wgFile, Err: errors.New("no [Interface] section: a config needs one, with a PrivateKey")}
		}
		return v.errorf(ref, "PrivateKey", "required key is missing (set PrivateKey or PrivateKeyFile)")
	}
	if !portInRange(ifc.ListenPort, 0) {
		return v.errorf(ref, "ListenPort", "%d is out of range 0..65535", ifc.ListenPort)
	}
	mtu := ifc.MTU
	if mtu == 0 && !v.parsed() {
		mtu = DefaultMTU
	}
	if mtu < MinMTU || mtu > MaxMTU {
		return v.errorf(ref, "MTU", "%d is out of range %d..%d", mtu, MinMTU, MaxMTU)
	}
	for i, a := range ifc.Addresses {
		if !a.IsValid() {
			return v.errorf(ref, "Address", "entry %d is not a valid prefix", i+1)
		}
		if a.Addr().Is6() && mtu < MinMTUIPv6 {
			return v.errorf(ref, "MTU", "%d is below %d, the minimum for IPv6, and Address %s is IPv6", mtu, MinMTUIPv6, a)
		}
	}
	for i, a := range ifc.DNS {
		if !a.IsValid() || a.Zone() != "" {
			return v.errorf(ref, "DNS", "entry %d is not a valid IP address", i+1)
		}
	}
	for _, d := range ifc.DNSSearch {
		if err := checkHostname(d); err != nil {
			return v.errorf(ref, "DNS", "search domain %q: %v", d, err)
		}
	}
	raw := []struct {
		key  string
		vals []string
	}{
		{"Table", []string{ifc.Table}}, {"FwMark", []string{ifc.FwMark}},
		{"PreUp", ifc.PreUp}, {"PostUp", ifc.PostUp}, {"PreDown", ifc.PreDown}, {"PostDown", ifc.PostDown},
	}
	for _, r := range raw {
		for _, s := range r.vals {
			if err := checkRaw(s); err != nil {
				return v.errorf(ref, r.key, "%v", err)
			}
		}
	}
	if err := checkFwMark(ifc.FwMark); err != nil {
		return v.errorf(ref, "FwMark", "%v", err)
	}
	for i, a := range ifc.CheckAlive {
		if !a.IsValid() || a.Zone() != "" {
			return v.errorf(ref, "CheckAlive", "entry %d is not a valid IP address", i+1)
		}
	}
	switch {
	case ifc.CheckAliveInterval < 0:
		return v.errorf(ref, "CheckAliveInterval", "%d is negative", ifc.CheckAliveInterval)
	case ifc.CheckAliveInterval > 0 && len(ifc.CheckAlive) == 0:
		return v.errorf(ref, "CheckAliveInterval", "is only valid when CheckAlive is set")
	}
	return nil
}

func (v *validator) checkPeers() error {
	var own PublicKey
	if !v.c.Interface.PrivateKey.IsZero() {
		own = v.c.Interface.PrivateKey.Public()
	}
	seen := make(map[PublicKey]int, len(v.c.Peers))
	for i := range v.c.Peers {
		peer := &v.c.Peers[i]
		ref := sectionRef{kind: secPeer, index: i}
		if peer.PublicKey.IsZero() {
			return v.errorf(ref, "PublicKey", "required key is missing")
		}
		if j, dup := seen[peer.PublicKey]; dup {
			return v.errorf(ref, "PublicKey", "duplicate peer: %s has the same key", v.describe(sectionRef{kind: secPeer, index: j}))
		}
		seen[peer.PublicKey] = i
		if peer.PublicKey == own {
			return v.errorf(ref, "PublicKey", "is this interface's own public key")
		}
		for j, a := range peer.AllowedIPs {
			if !a.IsValid() {
				return v.errorf(ref, "AllowedIPs", "entry %d is not a valid prefix", j+1)
			}
		}
		if peer.Endpoint != "" {
			if err := checkHostPort(peer.Endpoint, false, 1); err != nil {
				return v.errorf(ref, "Endpoint", "%v", err)
			}
		}
		if !portInRange(peer.PersistentKeepalive, 0) {
			return v.errorf(ref, "PersistentKeepalive", "%d is out of range 0..65535 (seconds)", peer.PersistentKeepalive)
		}
	}
	return nil
}

func (v *validator) checkProxies() error {
	for i, s := range v.c.Socks5 {
		ref := sectionRef{kind: secSocks5, index: i}
		if err := v.firstOf(
			v.bind(ref, "BindAddress", s.BindAddress, true),
			v.text(ref, "Username", s.Username, false),
			v.text(ref, "Password", s.Password, true),
		); err != nil {
			return err
		}
	}
	for i, h := range v.c.HTTP {
		ref := sectionRef{kind: secHTTP, index: i}
		if err := v.firstOf(
			v.bind(ref, "BindAddress", h.BindAddress, true),
			v.text(ref, "Username", h.Username, false),
			v.text(ref, "Password", h.Password, true),
			v.text(ref, "CertFile", h.CertFile, false),
			v.text(ref, "KeyFile", h.KeyFile, false),
		); err != nil {
			return err
		}
		switch {
		case h.CertFile != "" && h.KeyFile == "":
			return v.errorf(ref, "CertFile", "KeyFile is required with CertFile")
		case h.KeyFile != "" && h.CertFile == "":
			return v.errorf(ref, "KeyFile", "CertFile is required with KeyFile")
		}
	}
	for i, s := range v.c.SNI {
		if err := v.bind(sectionRef{kind: secSNI, index: i}, "BindAddress", s.BindAddress, true); err != nil {
			return err
		}
	}
	return nil
}

func (v *validator) checkTunnels() error {
	for i, t := range v.c.TCPClientTunnels {
		ref := sectionRef{kind: secTCPClientTunnel, index: i}
		if err := v.firstOf(v.bind(ref, "BindAddress", t.BindAddress, true), v.target(ref, t.Target)); err != nil {
			return err
		}
	}
	tcpPorts := make(map[int]int)
	for i, t := range v.c.TCPServerTunnels {
		ref := sectionRef{kind: secTCPServerTunnel, index: i}
		if err := v.firstOf(v.listenPort(ref, t.ListenPort, tcpPorts), v.target(ref, t.Target)); err != nil {
			return err
		}
	}
	for i, t := range v.c.UDPProxyTunnels {
		ref := sectionRef{kind: secUDPProxyTunnel, index: i}
		if err := v.firstOf(
			v.bind(ref, "BindAddress", t.BindAddress, true),
			v.target(ref, t.Target),
			v.inactivityTimeout(ref, t.InactivityTimeout),
		); err != nil {
			return err
		}
	}
	for i, t := range v.c.STDIOTunnels {
		if err := v.target(sectionRef{kind: secSTDIOTunnel, index: i}, t.Target); err != nil {
			return err
		}
	}
	udpPorts := make(map[int]int)
	for i, t := range v.c.UDPServerTunnels {
		ref := sectionRef{kind: secUDPServerTunnel, index: i}
		if err := v.firstOf(
			v.listenPort(ref, t.ListenPort, udpPorts),
			v.target(ref, t.Target),
			v.inactivityTimeout(ref, t.InactivityTimeout),
		); err != nil {
			return err
		}
	}
	return nil
}

func (v *validator) checkSidecar() error {
	if r := v.c.Resolve; r != nil {
		switch r.ResolveStrategy {
		case "auto", "ipv4", "ipv6":
		case "":
			if v.parsed() {
				return v.errorf(sectionRef{kind: secResolve}, "ResolveStrategy", "empty value")
			}
		default:
			return v.errorf(sectionRef{kind: secResolve}, "ResolveStrategy", "%q is not one of auto, ipv4, ipv6", r.ResolveStrategy)
		}
	}
	if s := v.c.Serve; s != nil {
		for i, p := range s.Subnets {
			if !p.IsValid() {
				return v.errorf(sectionRef{kind: secServe}, "Subnets", "entry %d is not a valid prefix", i+1)
			}
		}
	}
	if f := v.c.FlowLog; f != nil {
		ref := sectionRef{kind: secFlowLog}
		if f.Window < 0 || f.Window > maxDuration || (f.Window == 0 && v.parsed()) {
			return v.errorf(ref, "Window", "%v is out of range", f.Window)
		}
		if err := v.firstOf(v.text(ref, "NodeID", f.NodeID, false), v.text(ref, "Output", f.Output, false)); err != nil {
			return err
		}
	}
	if l := v.c.LogStream; l != nil {
		if err := v.checkLogStream(l); err != nil {
			return err
		}
	}
	if c := v.c.Control; c != nil {
		if err := v.text(sectionRef{kind: secControl}, "Socket", c.Socket, false); err != nil {
			return err
		}
	}
	if m := v.c.Metrics; m != nil && (m.BindAddress != "" || v.parsed()) {
		if err := v.bind(sectionRef{kind: secMetrics}, "BindAddress", m.BindAddress, true); err != nil {
			return err
		}
	}
	if x := v.c.IPFIX; x != nil {
		return v.checkIPFIX(x)
	}
	return nil
}

func (v *validator) checkLogStream(l *LogStream) error {
	ref := sectionRef{kind: secLogStream}
	if l.URL == "" {
		return v.errorf(ref, "URL", "required key is missing")
	}
	if err := v.text(ref, "URL", l.URL, false); err != nil {
		return err
	}
	if u, err := url.Parse(l.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return v.errorf(ref, "URL", "%q is not an http:// or https:// URL", l.URL)
	}
	if l.Collection == "" {
		return v.errorf(ref, "Collection", "required key is missing")
	}
	if strings.Trim(l.Collection, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" {
		return v.errorf(ref, "Collection", "%q may only hold letters, digits, '.', '_' and '-'", l.Collection)
	}
	if l.PrivateID == "" {
		return v.errorf(ref, "PrivateID", "required key is missing (set PrivateID or PrivateIDFile)")
	}
	if !isStreamID(l.PrivateID) {
		return v.errorf(ref, "PrivateID", "not a private ID: want 64 hex digits (32 bytes)")
	}
	if l.CopyID != "" && !isStreamID(l.CopyID) {
		return v.errorf(ref, "CopyID", "not a private ID: want 64 hex digits (32 bytes)")
	}
	if err := v.text(ref, "BufferDir", l.BufferDir, false); err != nil {
		return err
	}
	if l.MaxBuffer < 0 || (l.MaxBuffer == 0 && v.parsed()) {
		return v.errorf(ref, "MaxBuffer", "%d is out of range", l.MaxBuffer)
	}
	return nil
}

func (v *validator) firstOf(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// bind checks a local listening address; an empty host means all
// interfaces and port 0 any port.
func (v *validator) bind(ref sectionRef, key, s string, required bool) error {
	if s == "" {
		if required {
			return v.errorf(ref, key, "required key is missing")
		}
		return nil
	}
	if err := checkHostPort(s, true, 0); err != nil {
		return v.errorf(ref, key, "%v", err)
	}
	return nil
}

func (v *validator) target(ref sectionRef, s string) error {
	if s == "" {
		return v.errorf(ref, "Target", "required key is missing")
	}
	if err := checkHostPort(s, false, 1); err != nil {
		return v.errorf(ref, "Target", "%v", err)
	}
	return nil
}

// inactivityTimeout checks a UDP tunnel's InactivityTimeout (0: never).
func (v *validator) inactivityTimeout(ref sectionRef, d time.Duration) error {
	if d < 0 || d > maxDuration {
		return v.errorf(ref, "InactivityTimeout", "%v is out of range", d)
	}
	return nil
}

// listenPort checks a port on the tunnel address, unique among the
// sections of one kind (used maps port to section index).
func (v *validator) listenPort(ref sectionRef, port int, used map[int]int) error {
	if !portInRange(port, 1) {
		if port == 0 && (v.pos == nil || v.pos.keyWhere(ref, "ListenPort") == nil) {
			return v.errorf(ref, "ListenPort", "required key is missing (1..65535)")
		}
		return v.errorf(ref, "ListenPort", "%d is out of range 1..65535", port)
	}
	if j, dup := used[port]; dup {
		return v.errorf(ref, "ListenPort", "%d is already used by %s", port, v.describe(sectionRef{kind: ref.kind, index: j}))
	}
	used[port] = ref.index
	return nil
}

// text checks that a free-form value can be written back.
func (v *validator) text(ref sectionRef, key, s string, secret bool) error {
	if err := checkText(s); err != nil {
		if secret {
			return v.errorf(ref, key, "value cannot be written back: %v", err)
		}
		return v.errorf(ref, key, "%q cannot be written back: %v", s, err)
	}
	return nil
}

func portInRange(n, min int) bool { return n >= min && n <= 65535 }

func isStreamID(s string) bool {
	return len(s) == 64 && strings.Trim(s, "0123456789abcdefABCDEF") == ""
}

// checkText reports whether Marshal can write s so that Parse reads it
// back unchanged.
func checkText(s string) error {
	if hasControl(s) {
		return errors.New("contains a control character")
	}
	if needsQuotes(s) && strings.ContainsRune(s, '"') && strings.ContainsRune(s, '\'') {
		return errors.New(`needs quotes but contains both ' and "`)
	}
	return nil
}

// checkRaw is checkText for the values kept verbatim, which cannot be
// quoted.
func checkRaw(s string) error {
	switch {
	case hasControl(s):
		return errors.New("contains a control character")
	case strings.ContainsRune(s, '#'):
		return errors.New("contains '#', which starts a comment")
	case s != strings.TrimSpace(s):
		return errors.New("has white space at either end")
	}
	return nil
}

func hasControl(s string) bool {
	for _, r := range s {
		if (r < 0x20 && r != '\t') || r == 0x7f {
			return true
		}
	}
	return false
}

// checkFwMark accepts what wg(8) accepts: off, a decimal number or a 0x
// hexadecimal one, up to 32 bits.
func checkFwMark(s string) error {
	if s == "" || strings.EqualFold(s, "off") {
		return nil
	}
	var err error
	switch {
	case strings.HasPrefix(s, "0x") && len(s) > 2:
		_, err = strconv.ParseUint(s[2:], 16, 32)
	case isDigits(s):
		_, err = strconv.ParseUint(s, 10, 32)
	default:
		err = strconv.ErrSyntax
	}
	if err != nil {
		return fmt.Errorf("%q is not a firewall mark: want off, or a number up to 32 bits (decimal or 0x hex)", s)
	}
	return nil
}

// checkHostname accepts DNS names: dot-separated labels of letters,
// digits, '-' and '_', with an optional final dot.
func checkHostname(s string) error {
	if len(s) > 253 {
		return errors.New("name too long")
	}
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 {
			return errors.New("not a host name: empty or over-long label")
		}
		if strings.Trim(label, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "" {
			return errors.New("not a host name: want letters, digits, '-' and '.'")
		}
	}
	return nil
}

// checkHostPort checks "host:port" with a numeric port from minPort to
// 65535; host is an IPv4 address, an IPv6 address in brackets or a host
// name, and may be empty only if emptyHost.
func checkHostPort(s string, emptyHost bool, minPort int) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port (write an IPv6 address in brackets)", s)
	}
	n, err := strconv.Atoi(port)
	if err != nil || !isDigits(port) || !portInRange(n, minPort) {
		return fmt.Errorf("%q: port must be a number from %d to 65535", s, minPort)
	}
	switch {
	case host == "":
		if !emptyHost {
			return fmt.Errorf("%q: missing host", s)
		}
	case s[0] == '[':
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() {
			return fmt.Errorf("%q: not an IPv6 address in brackets", s)
		}
	default:
		if _, err := netip.ParseAddr(host); err == nil {
			return nil
		}
		if err := checkHostname(host); err != nil {
			return fmt.Errorf("%q: %v", s, err)
		}
	}
	return nil
}
