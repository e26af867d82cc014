package wgconf

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// This file is the table of sections and keys: what each key is called,
// whether it may repeat, and how its value is read into the Config.

// sectionKind numbers the sections in the order Marshal writes them.
type sectionKind int

const (
	secInterface sectionKind = iota
	secPeer
	secSocks5
	secHTTP
	secSNI
	secTCPClientTunnel
	secTCPServerTunnel
	secUDPProxyTunnel
	secSTDIOTunnel
	secResolve
	secUDPServerTunnel
	secServe
	secFlowLog
	secLogStream
	secControl
	secMetrics
	secIPFIX
	numSections
)

// sectionSpec describes one kind of section and its keys.
type sectionSpec struct {
	name     string // canonical spelling, as written by Marshal
	repeated bool   // may appear more than once
	wgQuick  bool   // belongs to wg-quick: the only kind a WGConfig import may hold
	open     func(c *Config)
	keys     []keySpec
}

// keySpec describes one key of a section.
type keySpec struct {
	name string // canonical spelling
	slot string // keys sharing a slot exclude each other (PrivateKey, PrivateKeyFile); "" is name
	list bool   // may repeat; every occurrence appends
	raw  bool   // kept verbatim, as wg-quick reads it: no quotes, no $VAR
	warn string // warn once, on first use, with this message
	set  func(p *parser, v string) error
}

const (
	msgIgnored  = "accepted and ignored"
	msgNeverRun = "never executed"
)

// sections is indexed by sectionKind. It is filled by init to keep the key
// setters, which call parser methods, out of an initialization cycle.
var (
	sections      [numSections]sectionSpec
	sectionByName map[string]sectionKind
)

func init() {
	sections = [numSections]sectionSpec{
		secInterface: {name: "Interface", wgQuick: true, open: func(*Config) {}, keys: []keySpec{
			{name: "PrivateKey", set: func(p *parser, v string) error { return p.setPrivateKey(v, false) }},
			{name: "PrivateKeyFile", slot: "PrivateKey", set: func(p *parser, v string) error { return p.setPrivateKey(v, true) }},
			{name: "ListenPort", set: func(p *parser, v string) error { return setInt(&p.cfg.Interface.ListenPort, v) }},
			{name: "MTU", set: func(p *parser, v string) error { return setInt(&p.cfg.Interface.MTU, v) }},
			{name: "Address", list: true, set: func(p *parser, v string) error { return appendPrefixes(&p.cfg.Interface.Addresses, v, false) }},
			{name: "DNS", list: true, set: func(p *parser, v string) error { return p.appendDNS(v) }},
			{name: "Table", raw: true, warn: msgIgnored, set: func(p *parser, v string) error { p.cfg.Interface.Table = v; return nil }},
			{name: "FwMark", raw: true, warn: msgIgnored, set: func(p *parser, v string) error { p.cfg.Interface.FwMark = v; return checkFwMark(v) }},
			{name: "SaveConfig", raw: true, warn: msgIgnored, set: func(p *parser, v string) error { return setBool(&p.cfg.Interface.SaveConfig, v) }},
			{name: "PreUp", list: true, raw: true, warn: msgNeverRun, set: func(p *parser, v string) error { return appendHook(&p.cfg.Interface.PreUp, v) }},
			{name: "PostUp", list: true, raw: true, warn: msgNeverRun, set: func(p *parser, v string) error { return appendHook(&p.cfg.Interface.PostUp, v) }},
			{name: "PreDown", list: true, raw: true, warn: msgNeverRun, set: func(p *parser, v string) error { return appendHook(&p.cfg.Interface.PreDown, v) }},
			{name: "PostDown", list: true, raw: true, warn: msgNeverRun, set: func(p *parser, v string) error { return appendHook(&p.cfg.Interface.PostDown, v) }},
			{name: "CheckAlive", list: true, set: func(p *parser, v string) error { return appendAddrs(&p.cfg.Interface.CheckAlive, v) }},
			{name: "CheckAliveInterval", set: func(p *parser, v string) error {
				if err := setInt(&p.cfg.Interface.CheckAliveInterval, v); err != nil {
					return err
				}
				if p.cfg.Interface.CheckAliveInterval < 1 {
					return errors.New("must be at least 1 (seconds)")
				}
				return nil
			}},
		}},
		secPeer: {name: "Peer", repeated: true, wgQuick: true, open: func(c *Config) { c.Peers = append(c.Peers, Peer{}) }, keys: []keySpec{
			{name: "PublicKey", set: func(p *parser, v string) error {
				k, err := ParsePublicKey(v)
				if err != nil {
					return err
				}
				if k.IsZero() {
					return errors.New("the all-zero key is not a public key")
				}
				p.peer().PublicKey = k
				return nil
			}},
			{name: "PresharedKey", set: func(p *parser, v string) error { return p.setPresharedKey(v, false) }},
			{name: "PresharedKeyFile", slot: "PresharedKey", set: func(p *parser, v string) error { return p.setPresharedKey(v, true) }},
			{name: "AllowedIPs", list: true, set: func(p *parser, v string) error { return appendPrefixes(&p.peer().AllowedIPs, v, false) }},
			{name: "Endpoint", set: func(p *parser, v string) error { return setText(&p.peer().Endpoint, v, false) }},
			{name: "PersistentKeepalive", set: func(p *parser, v string) error {
				if strings.EqualFold(v, "off") {
					p.peer().PersistentKeepalive = 0
					return nil
				}
				return setInt(&p.peer().PersistentKeepalive, v)
			}},
		}},
		secSocks5: {name: "Socks5", repeated: true, open: func(c *Config) { c.Socks5 = append(c.Socks5, Socks5{}) }, keys: []keySpec{
			{name: "BindAddress", set: func(p *parser, v string) error { return setText(&last(p.cfg.Socks5).BindAddress, v, false) }},
			{name: "Username", set: func(p *parser, v string) error { return setText(&last(p.cfg.Socks5).Username, v, true) }},
			{name: "Password", set: func(p *parser, v string) error { return setText(&last(p.cfg.Socks5).Password, v, true) }},
		}},
		secHTTP: {name: "http", repeated: true, open: func(c *Config) { c.HTTP = append(c.HTTP, HTTPProxy{}) }, keys: []keySpec{
			{name: "BindAddress", set: func(p *parser, v string) error { return setText(&last(p.cfg.HTTP).BindAddress, v, false) }},
			{name: "Username", set: func(p *parser, v string) error { return setText(&last(p.cfg.HTTP).Username, v, true) }},
			{name: "Password", set: func(p *parser, v string) error { return setText(&last(p.cfg.HTTP).Password, v, true) }},
			{name: "CertFile", set: func(p *parser, v string) error { return setText(&last(p.cfg.HTTP).CertFile, v, true) }},
			{name: "KeyFile", set: func(p *parser, v string) error { return setText(&last(p.cfg.HTTP).KeyFile, v, true) }},
		}},
		secSNI: {name: "SNI", repeated: true, open: func(c *Config) { c.SNI = append(c.SNI, SNIProxy{}) }, keys: []keySpec{
			{name: "BindAddress", set: func(p *parser, v string) error { return setText(&last(p.cfg.SNI).BindAddress, v, false) }},
		}},
		secTCPClientTunnel: {name: "TCPClientTunnel", repeated: true, open: func(c *Config) { c.TCPClientTunnels = append(c.TCPClientTunnels, TCPClientTunnel{}) }, keys: []keySpec{
			{name: "BindAddress", set: func(p *parser, v string) error { return setText(&last(p.cfg.TCPClientTunnels).BindAddress, v, false) }},
			{name: "Target", set: func(p *parser, v string) error { return setText(&last(p.cfg.TCPClientTunnels).Target, v, false) }},
		}},
		secTCPServerTunnel: {name: "TCPServerTunnel", repeated: true, open: func(c *Config) { c.TCPServerTunnels = append(c.TCPServerTunnels, TCPServerTunnel{}) }, keys: []keySpec{
			{name: "ListenPort", set: func(p *parser, v string) error { return setInt(&last(p.cfg.TCPServerTunnels).ListenPort, v) }},
			{name: "Target", set: func(p *parser, v string) error { return setText(&last(p.cfg.TCPServerTunnels).Target, v, false) }},
		}},
		secUDPProxyTunnel: {name: "UDPProxyTunnel", repeated: true, open: func(c *Config) { c.UDPProxyTunnels = append(c.UDPProxyTunnels, UDPProxyTunnel{}) }, keys: []keySpec{
			{name: "BindAddress", set: func(p *parser, v string) error { return setText(&last(p.cfg.UDPProxyTunnels).BindAddress, v, false) }},
			{name: "Target", set: func(p *parser, v string) error { return setText(&last(p.cfg.UDPProxyTunnels).Target, v, false) }},
			{name: "InactivityTimeout", set: func(p *parser, v string) error {
				return setDuration(&last(p.cfg.UDPProxyTunnels).InactivityTimeout, v, true)
			}},
		}},
		secSTDIOTunnel: {name: "STDIOTunnel", repeated: true, open: func(c *Config) { c.STDIOTunnels = append(c.STDIOTunnels, STDIOTunnel{}) }, keys: []keySpec{
			{name: "Target", set: func(p *parser, v string) error { return setText(&last(p.cfg.STDIOTunnels).Target, v, false) }},
		}},
		secResolve: {name: "Resolve", open: func(c *Config) { c.Resolve = &Resolve{ResolveStrategy: DefaultResolveStrategy} }, keys: []keySpec{
			{name: "ResolveStrategy", set: func(p *parser, v string) error {
				return setText(&p.cfg.Resolve.ResolveStrategy, strings.ToLower(v), false)
			}},
		}},
		secUDPServerTunnel: {name: "UDPServerTunnel", repeated: true, open: func(c *Config) { c.UDPServerTunnels = append(c.UDPServerTunnels, UDPServerTunnel{}) }, keys: []keySpec{
			{name: "ListenPort", set: func(p *parser, v string) error { return setInt(&last(p.cfg.UDPServerTunnels).ListenPort, v) }},
			{name: "Target", set: func(p *parser, v string) error { return setText(&last(p.cfg.UDPServerTunnels).Target, v, false) }},
			{name: "InactivityTimeout", set: func(p *parser, v string) error {
				return setDuration(&last(p.cfg.UDPServerTunnels).InactivityTimeout, v, true)
			}},
		}},
		secServe: {name: "Serve", open: func(c *Config) { c.Serve = &Serve{} }, keys: []keySpec{
			{name: "Subnets", list: true, set: func(p *parser, v string) error { return appendPrefixes(&p.cfg.Serve.Subnets, v, true) }},
			{name: "Exit", set: func(p *parser, v string) error { return setBool(&p.cfg.Serve.Exit, v) }},
		}},
		secFlowLog: {name: "FlowLog", open: func(c *Config) { c.FlowLog = &FlowLog{Window: DefaultFlowWindow} }, keys: []keySpec{
			{name: "Window", set: func(p *parser, v string) error { return setDuration(&p.cfg.FlowLog.Window, v, false) }},
			{name: "NodeID", set: func(p *parser, v string) error { return setText(&p.cfg.FlowLog.NodeID, v, false) }},
			{name: "Output", set: func(p *parser, v string) error { return setText(&p.cfg.FlowLog.Output, v, false) }},
			{name: "LogExitFlows", set: func(p *parser, v string) error { return setBool(&p.cfg.FlowLog.LogExitFlows, v) }},
		}},
		secLogStream: {name: "LogStream", open: func(c *Config) { c.LogStream = &LogStream{MaxBuffer: DefaultMaxBuffer} }, keys: []keySpec{
			{name: "URL", set: func(p *parser, v string) error { return setText(&p.cfg.LogStream.URL, v, false) }},
			{name: "Collection", set: func(p *parser, v string) error { return setText(&p.cfg.LogStream.Collection, v, false) }},
			{name: "PrivateID", set: func(p *parser, v string) error { return setText(&p.cfg.LogStream.PrivateID, v, false) }},
			{name: "PrivateIDFile", slot: "PrivateID", set: func(p *parser, v string) error {
				s, err := p.readSecretFile(v)
				if err != nil {
					return err
				}
				return setText(&p.cfg.LogStream.PrivateID, s, false)
			}},
			{name: "CopyID", set: func(p *parser, v string) error { return setText(&p.cfg.LogStream.CopyID, v, false) }},
			{name: "BufferDir", set: func(p *parser, v string) error { return setText(&p.cfg.LogStream.BufferDir, v, false) }},
			{name: "MaxBuffer", set: func(p *parser, v string) error {
				n, err := parseSize(v)
				if err != nil {
					return err
				}
				if n == 0 {
					return errors.New("must be more than 0 bytes")
				}
				p.cfg.LogStream.MaxBuffer = n
				return nil
			}},
		}},
		secControl: {name: "Control", open: func(c *Config) { c.Control = &Control{} }, keys: []keySpec{
			{name: "Socket", set: func(p *parser, v string) error { return setText(&p.cfg.Control.Socket, v, false) }},
		}},
		secMetrics: {name: "Metrics", open: func(c *Config) { c.Metrics = &Metrics{BindAddress: DefaultMetricsAddress} }, keys: []keySpec{
			{name: "BindAddress", set: func(p *parser, v string) error { return setText(&p.cfg.Metrics.BindAddress, v, false) }},
		}},
		secIPFIX: ipfixSection(),
	}
	sectionByName = make(map[string]sectionKind, numSections)
	for k := range sections {
		sectionByName[strings.ToLower(sections[k].name)] = sectionKind(k)
	}
}

func (s *sectionSpec) key(name string) *keySpec {
	for i := range s.keys {
		if strings.EqualFold(s.keys[i].name, name) {
			return &s.keys[i]
		}
	}
	return nil
}

func last[T any](s []T) *T { return &s[len(s)-1] }

// secret returns v itself, or with fromFile the contents of the secret
// file v names (the …File form of a key).
func (p *parser) secret(v string, fromFile bool) (string, error) {
	if !fromFile {
		return v, nil
	}
	return p.readSecretFile(v)
}

func (p *parser) setPrivateKey(v string, fromFile bool) error {
	v, err := p.secret(v, fromFile)
	if err != nil {
		return err
	}
	k, err := ParsePrivateKey(v)
	if err != nil {
		return err
	}
	if k.IsZero() {
		return errors.New("the all-zero key is not a private key")
	}
	p.cfg.Interface.PrivateKey = k
	return nil
}

func (p *parser) setPresharedKey(v string, fromFile bool) error {
	v, err := p.secret(v, fromFile)
	if err != nil {
		return err
	}
	k, err := ParsePresharedKey(v)
	if err != nil {
		return err
	}
	p.peer().PresharedKey = k
	return nil
}

func (p *parser) peer() *Peer { return last(p.cfg.Peers) }

// appendDNS sorts the DNS entries as wg-quick does: what looks like an IP
// (digits and dots, or a colon) is a resolver and must parse as one;
// anything else is a search domain.
func (p *parser) appendDNS(v string) error {
	ifc := &p.cfg.Interface
	for _, e := range splitList(v) {
		if strings.Trim(e, "0123456789.") == "" || strings.Contains(e, ":") {
			a, err := parseAddr(e)
			if err != nil {
				return err
			}
			ifc.DNS = append(ifc.DNS, a)
			continue
		}
		if err := checkHostname(e); err != nil {
			return fmt.Errorf("search domain %q: %w", e, err)
		}
		ifc.DNSSearch = append(ifc.DNSSearch, e)
	}
	return nil
}

// Value parsers. The typed ones quote the value in their errors, so no
// secret goes through them: secrets are read by the key parsers of
// keys.go or by setText, whose only error says the value is empty.

func splitList(v string) []string {
	var out []string
	for _, e := range strings.Split(v, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

func setText(dst *string, v string, allowEmpty bool) error {
	if v == "" && !allowEmpty {
		return errors.New("empty value")
	}
	*dst = v
	return nil
}

func setInt(dst *int, v string) error {
	n, err := strconv.Atoi(v)
	if err != nil || !isDigits(strings.TrimPrefix(v, "-")) {
		return fmt.Errorf("%q is not an integer", v)
	}
	*dst = n
	return nil
}

func isDigits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

func setBool(dst *bool, v string) error {
	switch strings.ToLower(v) {
	case "true", "yes", "on", "1":
		*dst = true
	case "false", "no", "off", "0":
		*dst = false
	default:
		return fmt.Errorf("%q is not a boolean: want true or false", v)
	}
	return nil
}

// setDuration reads Go duration syntax ("1m30s") or a bare number of
// seconds, as wireproxy writes InactivityTimeout.
func setDuration(dst *time.Duration, v string, zeroOK bool) error {
	var d time.Duration
	if isDigits(v) {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n > int64(maxDuration/time.Second) {
			return fmt.Errorf("%q is too long a duration", v)
		}
		d = time.Duration(n) * time.Second
	} else {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			return fmt.Errorf("%q is not a duration: want e.g. 30s, 5m, 1h30m, or a number of seconds", v)
		}
		if d < 0 {
			return fmt.Errorf("%q is negative", v)
		}
		if d > maxDuration {
			return fmt.Errorf("%q is too long a duration", v)
		}
	}
	if d == 0 && !zeroOK {
		return errors.New("must be more than 0")
	}
	*dst = d
	return nil
}

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	// Longest suffixes first, so that "KiB" is not read as "B".
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40},
	{"b", 1},
}

// parseSize reads a byte count: a whole number with an optional unit, B,
// kB/MB/GB/TB (powers of 1000) or KiB/MiB/GiB/TiB and K/M/G/T (powers of
// 1024), case-insensitive.
func parseSize(v string) (int64, error) {
	num, mult := strings.ToLower(v), int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(num[:len(num)-len(u.suffix)]), u.mult
			break
		}
	}
	if !isDigits(num) {
		return 0, fmt.Errorf("%q is not a size: want e.g. 64MiB, 10MB or a number of bytes", v)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is too large", v)
	}
	return n * mult, nil
}

// parseAddr reads an IP address without a zone.
func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q: an IPv6 zone is not allowed here", s)
	}
	return a, nil
}

func appendAddrs(dst *[]netip.Addr, v string) error {
	for _, e := range splitList(v) {
		a, err := parseAddr(e)
		if err != nil {
			return err
		}
		*dst = append(*dst, a)
	}
	return nil
}

// appendPrefixes reads a comma list of prefixes; a bare address is a
// single-address prefix (/32 or /128), as wg(8) reads AllowedIPs.
func appendPrefixes(dst *[]netip.Prefix, v string, mask bool) error {
	for _, e := range splitList(v) {
		var pfx netip.Prefix
		if strings.Contains(e, "/") {
			var err error
			if pfx, err = netip.ParsePrefix(e); err != nil {
				return fmt.Errorf("%q is not an IP prefix (want e.g. 10.0.0.0/24 or fd00::/64)", e)
			}
		} else {
			a, err := parseAddr(e)
			if err != nil {
				return err
			}
			pfx = netip.PrefixFrom(a, a.BitLen())
		}
		if mask {
			pfx = pfx.Masked()
		}
		*dst = append(*dst, pfx)
	}
	return nil
}

func appendHook(dst *[]string, v string) error {
	if v == "" {
		return errors.New("empty value")
	}
	*dst = append(*dst, v)
	return nil
}

// Section is one section of the file format and the canonical names of
// its keys, for documentation and for checking it.
type Section struct {
	Name string
	Keys []string
}

// Reference lists every section the parser accepts, in the order Marshal
// writes them, with its keys. (The root-level WGConfig key is not in a
// section.)
func Reference() []Section {
	out := make([]Section, 0, len(sections))
	for _, s := range sections {
		sec := Section{Name: s.name}
		for _, k := range s.keys {
			sec.Keys = append(sec.Keys, k.name)
		}
		out = append(out, sec)
	}
	return out
}
