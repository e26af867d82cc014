// Package wgconf owns reading and writing the sidecar's configuration file:
// a wg-quick file ([Interface] and [Peer]), plus the sections of a
// wireproxy config file ([Socks5], [http], [SNI], [TCPClientTunnel],
// [TCPServerTunnel], [UDPProxyTunnel], [STDIOTunnel], [Resolve], a root
// WGConfig import and $VAR values), plus the sidecar's own sections
// ([UDPServerTunnel], [Serve], [FlowLog], [LogStream], [Control],
// [Metrics], [IPFIX]).
//
// It parses into plain values (keys, netip prefixes and addresses, strings,
// durations), reports every problem as an *Error naming file, line and key,
// writes a canonical file back (Marshal) and the wg-quick part alone
// (WGQuick). It knows nothing of gVisor, WireGuard devices, proxies or
// networking beyond parsing addresses: it never resolves a name or opens a
// socket.
//
// # File format
//
// Lines are "Key = Value", "[Section]" headers, blank lines or comments. A
// '#' starts a comment anywhere on a line; a line whose first character is
// ';' is a comment too (a ';' inside a value is kept, as wg-quick hooks need
// it). Section names and keys are case-insensitive, as in wg(8) and wg-quick(8).
// Surrounding white space is trimmed and CRLF line ends are accepted.
//
// A value wholly inside matching "double" or 'single' quotes is taken
// verbatim between them, '#' included (wireproxy reads quoted values the
// same way). A value "$NAME" or "${NAME}" is replaced by that environment
// variable, trimmed; "$$" at the start stands for a literal "$". The hooks
// (PreUp, PostUp, PreDown, PostDown) and the ignored keys Table, FwMark and
// SaveConfig are kept verbatim, exactly as wg-quick reads them: no quotes, no
// variables.
//
// Address, DNS, AllowedIPs, CheckAlive and Subnets take comma lists and may
// repeat (each occurrence appends), as may the hooks. Every other key may be
// given once per section. Relative paths in WGConfig, PrivateKeyFile,
// PresharedKeyFile and PrivateIDFile are relative to the directory of the
// file that names them; other paths (Output, BufferDir, Socket, CertFile,
// KeyFile) are kept as written.
package wgconf

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Defaults, filled in by Parse when a key is absent. A Config built in code
// may leave these fields zero: Validate accepts zero as "the default" and
// Marshal writes the default.
const (
	DefaultMTU                = 1420                   // [Interface] MTU, as wg-quick
	DefaultCheckAliveInterval = 5                      // [Interface] CheckAliveInterval (seconds), as wireproxy
	DefaultResolveStrategy    = "auto"                 // [Resolve] ResolveStrategy, as wireproxy
	DefaultFlowWindow         = 5 * time.Second        // [FlowLog] Window
	DefaultMaxBuffer          = 64 << 20               // [LogStream] MaxBuffer: 64 MiB
	DefaultMetricsAddress     = "127.0.0.1:9586"       // [Metrics] BindAddress: loopback, the Prometheus port registered for WireGuard exporters
	MinMTU                    = 576                    // smallest MTU accepted: the IPv4 datagram every host must take (RFC 791)
	MinMTUIPv6                = 1280                   // smallest MTU accepted when Address has an IPv6 address (RFC 8200)
	MaxMTU                    = 65535                  // largest MTU accepted
	maxDuration               = time.Duration(1 << 62) // bound on durations, far beyond any useful timeout
)

// Config is a parsed configuration file.
type Config struct {
	Path string // file it was read from ("" if parsed from bytes with no name)

	Interface Interface
	Peers     []Peer

	// wireproxy-compatible sections; each may repeat except Resolve.
	Socks5           []Socks5
	HTTP             []HTTPProxy // section [http]
	SNI              []SNIProxy  // section [SNI]
	TCPClientTunnels []TCPClientTunnel
	TCPServerTunnels []TCPServerTunnel
	UDPProxyTunnels  []UDPProxyTunnel
	STDIOTunnels     []STDIOTunnel
	Resolve          *Resolve // nil when the file has no [Resolve]

	// The sidecar's own sections. UDPServerTunnel may repeat; each other
	// section appears at most once and is nil when absent.
	UDPServerTunnels []UDPServerTunnel
	Serve            *Serve
	FlowLog          *FlowLog
	LogStream        *LogStream
	Control          *Control
	Metrics          *Metrics
	IPFIX            *IPFIX

	// Warnings about keys that were accepted but have no effect here. Parse
	// returns them for the caller to log; they are not errors.
	Warnings []Warning

	pos *positions // where Parse found each section and key, for At; nil when built in code
}

// Interface is the [Interface] section.
type Interface struct {
	PrivateKey PrivateKey     // PrivateKey, or read from PrivateKeyFile
	ListenPort int            // UDP port; 0 picks any
	MTU        int            // Parse sets DefaultMTU when absent
	Addresses  []netip.Prefix // Address; a bare IP means /32 or /128
	DNS        []netip.Addr   // the IP entries of DNS: resolvers reached through the tunnel
	DNSSearch  []string       // the other entries of DNS: search domains

	// wg-quick keys that do nothing here. Parse warns once for each; they
	// are kept so that WGQuick and Marshal write them back.
	Table      string
	FwMark     string
	SaveConfig bool
	PreUp      []string // hooks are never executed
	PostUp     []string
	PreDown    []string
	PostDown   []string

	// wireproxy's health check: addresses pinged through the tunnel every
	// CheckAliveInterval seconds (default DefaultCheckAliveInterval when
	// CheckAlive is set, 0 otherwise).
	CheckAlive         []netip.Addr
	CheckAliveInterval int
}

// Peer is one [Peer] section.
type Peer struct {
	PublicKey    PublicKey
	PresharedKey PresharedKey // PresharedKey, or read from PresharedKeyFile; zero means none
	AllowedIPs   []netip.Prefix
	// Endpoint is "host:port" as written: an IP, [IPv6] or host name,
	// resolved by the caller. Empty means the peer has no fixed endpoint.
	Endpoint            string
	PersistentKeepalive int // seconds; 0 ("off") disables
}

// Socks5 is a [Socks5] section: a SOCKS5 proxy into the tunnel.
type Socks5 struct {
	BindAddress string // local host:port
	Username    string // with Password, enables authentication
	Password    string // secret: prints redacted
}

// HTTPProxy is an [http] section: an HTTP proxy into the tunnel.
type HTTPProxy struct {
	BindAddress string
	Username    string
	Password    string // secret: prints redacted
	CertFile    string // with KeyFile, serve the proxy over TLS (wireproxy)
	KeyFile     string
}

// SNIProxy is an [SNI] section (wireproxy): a transparent TLS proxy that
// dials the server named by each connection's Server Name Indication.
type SNIProxy struct {
	BindAddress string
}

// TCPClientTunnel relays a local TCP port to Target through the tunnel.
type TCPClientTunnel struct {
	BindAddress string
	Target      string
}

// TCPServerTunnel relays ListenPort on the tunnel address to the local
// Target.
type TCPServerTunnel struct {
	ListenPort int
	Target     string
}

// UDPProxyTunnel relays a local UDP port to Target through the tunnel.
type UDPProxyTunnel struct {
	BindAddress       string
	Target            string
	InactivityTimeout time.Duration // 0: never (wireproxy); a bare number in the file is seconds
}

// STDIOTunnel connects standard input and output to Target through the
// tunnel.
type STDIOTunnel struct {
	Target string
}

// Resolve is the [Resolve] section (wireproxy).
type Resolve struct {
	// ResolveStrategy is "auto", "ipv4" (prefer A records) or "ipv6"
	// (prefer AAAA records). "auto" means ipv4 when the interface has only
	// IPv4 addresses, ipv6 otherwise. Parse stores it in lower case.
	ResolveStrategy string
}

// UDPServerTunnel relays UDP ListenPort on the tunnel address to the local
// Target.
type UDPServerTunnel struct {
	ListenPort        int
	Target            string
	InactivityTimeout time.Duration // 0: never
}

// Serve is the [Serve] section: what this node offers its peers.
type Serve struct {
	Subnets []netip.Prefix // routed for peers; stored masked
	Exit    bool           // serve as an exit node
}

// FlowLog is the [FlowLog] section.
type FlowLog struct {
	Window       time.Duration // Parse sets DefaultFlowWindow when absent
	NodeID       string        // "" derives the ID from the public key
	Output       string        // "-" for stdout, a file path (NDJSON), or "" for no local output
	LogExitFlows bool          // log exit traffic in detail instead of anonymised
}

// LogStream is the [LogStream] section: where flow logs are uploaded.
type LogStream struct {
	URL        string // collector base URL, http or https
	Collection string
	PrivateID  string // 64 hex digits; secret: prints redacted
	CopyID     string // optional second stream's private ID; secret too
	BufferDir  string // "" lets the sidecar choose
	MaxBuffer  int64  // bytes; Parse sets DefaultMaxBuffer when absent
}

// Control is the [Control] section.
type Control struct {
	Socket string // unix socket path; "" means the binary's default
}

// Metrics is the [Metrics] section.
type Metrics struct {
	BindAddress string // Parse sets DefaultMetricsAddress when absent
}

// Warning is a key that was accepted but does nothing here.
type Warning struct {
	File string
	Line int
	Key  string
	Msg  string
}

// String returns "file:line: Key: msg".
func (w Warning) String() string {
	return location(w.File, w.Line, w.Key) + w.Msg
}

// Error is every error returned by Parse, ParseFile and Validate. Its text
// is "FILE:LINE: KEY: message", without the parts that are unknown, and
// never contains a secret.
type Error struct {
	File string // "<config>" is printed when empty
	Line int    // 1-based; 0 when the problem has no line
	Key  string // canonical key name, "[Section]", or ""
	Err  error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return location(e.File, e.Line, e.Key) + "invalid configuration"
	}
	return location(e.File, e.Line, e.Key) + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

func location(file string, line int, key string) string {
	var b strings.Builder
	b.WriteString(displayName(file))
	if line > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(line))
	}
	b.WriteString(": ")
	if key != "" {
		b.WriteString(key)
		b.WriteString(": ")
	}
	return b.String()
}

func displayName(file string) string {
	if file == "" {
		return "<config>"
	}
	return file
}

// The proxy sections and LogStream hold secrets in plain strings; their
// Format and MarshalJSON methods redact them, so that neither fmt (any
// verb) nor encoding/json nor log/slog shows them.

func redactString(s string) string {
	if s == "" {
		return ""
	}
	return redacted
}

// formatRedacted prints v, a method-less copy of a section with its secrets
// already replaced, under the name of the public type.
func formatRedacted(f fmt.State, verb rune, shadow, public string, v any) {
	s := fmt.Sprintf(fmt.FormatString(f, verb), v)
	if verb == 'v' && f.Flag('#') {
		s = strings.Replace(s, "wgconf."+shadow+"{", "wgconf."+public+"{", 1)
	}
	fmt.Fprint(f, s)
}

type socks5Shadow Socks5

func (s Socks5) redacted() socks5Shadow {
	r := socks5Shadow(s)
	r.Password = redactString(r.Password)
	return r
}

// Format prints s with Password redacted.
func (s Socks5) Format(f fmt.State, verb rune) {
	formatRedacted(f, verb, "socks5Shadow", "Socks5", s.redacted())
}

// MarshalJSON encodes s with Password redacted.
func (s Socks5) MarshalJSON() ([]byte, error) { return json.Marshal(s.redacted()) }

type httpProxyShadow HTTPProxy

func (h HTTPProxy) redacted() httpProxyShadow {
	r := httpProxyShadow(h)
	r.Password = redactString(r.Password)
	return r
}

// Format prints h with Password redacted.
func (h HTTPProxy) Format(f fmt.State, verb rune) {
	formatRedacted(f, verb, "httpProxyShadow", "HTTPProxy", h.redacted())
}

// MarshalJSON encodes h with Password redacted.
func (h HTTPProxy) MarshalJSON() ([]byte, error) { return json.Marshal(h.redacted()) }

type logStreamShadow LogStream

func (l LogStream) redacted() logStreamShadow {
	r := logStreamShadow(l)
	r.PrivateID = redactString(r.PrivateID)
	r.CopyID = redactString(r.CopyID)
	return r
}

// Format prints l with PrivateID and CopyID redacted.
func (l LogStream) Format(f fmt.State, verb rune) {
	formatRedacted(f, verb, "logStreamShadow", "LogStream", l.redacted())
}

// MarshalJSON encodes l with PrivateID and CopyID redacted.
func (l LogStream) MarshalJSON() ([]byte, error) { return json.Marshal(l.redacted()) }

// String returns l with its secrets redacted.
func (l LogStream) String() string { return fmt.Sprint(l) }
