package collector

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strconv"
	"time"
)

// A Class is the traffic class of a flow, named by the member of the
// flow-log message that carried it (SPEC §5, §6).
type Class uint8

// The classes. The zero Class means "any" in a FlowQuery.
const (
	ClassVirtual  Class = 1
	ClassSubnet   Class = 2
	ClassExit     Class = 3
	ClassPhysical Class = 4
)

var classNames = [...]string{"", "virtual", "subnet", "exit", "physical"}

// classMembers are the flow-log message's members, in Class order.
var classMembers = [...]string{"", "virtualTraffic", "subnetTraffic", "exitTraffic", "physicalTraffic"}

func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return "class" + strconv.Itoa(int(c))
}

// ParseClass parses a class name: virtual, subnet, exit or physical.
func ParseClass(s string) (Class, bool) {
	for i, n := range classNames {
		if i > 0 && n == s {
			return Class(i), true
		}
	}
	return 0, false
}

// A Window is what a flow-log entry says about one node's window: its
// bounds and its flows. The collector parses it from the entry, so that a
// Storage need not parse JSON.
type Window struct {
	// Start and End are the entry's "start" and "end", in UTC.
	Start, End time.Time
	// Flows are the entry's traffic entries, every class, in the order of
	// the message. An entry whose src or dst is not an address and port
	// (or empty) is left out.
	Flows []Flow
}

// A Flow is one traffic entry of a window.
type Flow struct {
	Class Class
	Proto uint8
	// Src and Dst are the entry's ends. An end removed by anonymisation
	// (the empty string in the message) has the zero Addr. IPv4-mapped
	// IPv6 addresses are unmapped and zones dropped, so that every
	// storage stores the same value.
	Src, Dst Endpoint

	TxPkts, TxBytes, RxPkts, RxBytes uint64
}

// An Endpoint is an address and port; the zero Addr stands for an end
// the message left empty.
type Endpoint struct {
	Addr netip.Addr
	Port uint16
}

// String returns "ip:port" as netip.AddrPort prints it, or "" for an end
// without an address.
func (e Endpoint) String() string {
	if !e.Addr.IsValid() {
		return ""
	}
	return netip.AddrPortFrom(e.Addr, e.Port).String()
}

// parseEndpoint parses a message's "ip:port" or "".
func parseEndpoint(s string) (Endpoint, bool) {
	if s == "" {
		return Endpoint{}, true
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return Endpoint{}, false
	}
	return Endpoint{Addr: normAddr(ap.Addr()), Port: ap.Port()}, true
}

// normAddr unmaps an IPv4-mapped address and drops a zone.
func normAddr(a netip.Addr) netip.Addr { return a.Unmap().WithZone("") }

// Peer is the flow's peer: for physical traffic the source (the peer's
// tunnel address), for the other classes the destination's address.
func (f *Flow) Peer() netip.Addr {
	if f.Class == ClassPhysical {
		return f.Src.Addr
	}
	return f.Dst.Addr
}

// windowMembers holds the raw values of a message's window members, as
// the stamper finds them.
type windowMembers struct {
	start, end []byte
	traffic    [len(classMembers)][]byte
}

// note records member key/val if it is one of a window's.
func (w *windowMembers) note(key, val []byte) bool {
	switch {
	case keyIs(key, "start"):
		w.start = val
	case keyIs(key, "end"):
		w.end = val
	default:
		for c := ClassVirtual; c <= ClassPhysical; c++ {
			if keyIs(key, classMembers[c]) {
				w.traffic[c] = val
				return true
			}
		}
		return false
	}
	return true
}

// window returns the entry's Window, or nil if it is no flow-log
// message: "start" and "end" must be RFC 3339 times. A traffic member
// that is not an array of entries is ignored, as is an entry in it whose
// ends do not parse or whose known members do not decode as
// encoding/json would decode them into trafficEntry.
func (w *windowMembers) window() *Window {
	start, ok1 := parseTimeValue(w.start)
	end, ok2 := parseTimeValue(w.end)
	if !ok1 || !ok2 {
		return nil
	}
	win := &Window{Start: start, End: end}
	n := 0
	for c := ClassVirtual; c <= ClassPhysical; c++ {
		n += countElements(w.traffic[c])
	}
	if n > 0 {
		win.Flows = make([]Flow, 0, n)
	}
	for c := ClassVirtual; c <= ClassPhysical; c++ {
		win.Flows = appendTraffic(win.Flows, c, w.traffic[c])
	}
	return win
}

// countElements is an upper bound of the elements of raw, a compact JSON
// value: its commas at depth one, plus one (0 if it is no array).
func countElements(raw []byte) int {
	if len(raw) < 2 || raw[0] != '[' {
		return 0
	}
	n := 0
	for i := 1; i < len(raw)-1; {
		j := skipValue(raw, i)
		if j < 0 {
			break
		}
		n++
		i = j + 1
	}
	return n
}

// appendTraffic appends the flows of class c in raw, a compact, valid
// JSON value, to flows. It reads the usual entry (known members with
// plain unsigned numbers and unescaped strings) directly; anything else
// goes through encoding/json, so that the result is what json.Unmarshal
// into a trafficEntry gives, entry by entry.
func appendTraffic(flows []Flow, c Class, raw []byte) []Flow {
	if len(raw) < 2 || raw[0] != '[' {
		return flows
	}
	for i := 1; i < len(raw)-1; {
		j := skipValue(raw, i)
		if j < 0 {
			break
		}
		elem := raw[i:j]
		i = j + 1
		var e trafficEntry
		srcRaw, dstRaw, ok := readEntry(elem, &e)
		if !ok {
			if json.Unmarshal(elem, &e) != nil {
				continue
			}
			srcRaw, dstRaw = []byte(e.Src), []byte(e.Dst)
		}
		src, ok1 := parseEndpointBytes(srcRaw)
		dst, ok2 := parseEndpointBytes(dstRaw)
		if !ok1 || !ok2 {
			continue
		}
		flows = append(flows, Flow{
			Class: c, Proto: e.Proto, Src: src, Dst: dst,
			TxPkts: e.TxPkts, TxBytes: e.TxBytes, RxPkts: e.RxPkts, RxBytes: e.RxBytes,
		})
	}
	return flows
}

// readEntry reads a traffic entry's counters into e and returns its src
// and dst strings' bytes, if elem is an object whose members are all
// plain: a known name spelled exactly, a number of digits alone that fits
// its field, a string without escapes. Otherwise it reports false (the
// caller then asks encoding/json, which also matches names without
// regard to case and accepts null).
func readEntry(elem []byte, e *trafficEntry) (src, dst []byte, ok bool) {
	if len(elem) < 2 || elem[0] != '{' {
		return nil, nil, false
	}
	ok = true
	err := forEachMember(elem, func(key, val []byte) {
		if !ok {
			return
		}
		k := key[1 : len(key)-1]
		switch string(k) {
		case "proto":
			var v uint64
			if v, ok = plainUint(val); ok && v > 0xff {
				ok = false
			}
			e.Proto = uint8(v)
		case "src":
			src, ok = plainString(val)
		case "dst":
			dst, ok = plainString(val)
		case "txPkts":
			e.TxPkts, ok = plainUint(val)
		case "txBytes":
			e.TxBytes, ok = plainUint(val)
		case "rxPkts":
			e.RxPkts, ok = plainUint(val)
		case "rxBytes":
			e.RxBytes, ok = plainUint(val)
		default:
			// Another member: encoding/json ignores it unless it names a
			// field in another case or spelling.
			if bytes.IndexByte(k, '\\') >= 0 || foldsToField(k) {
				ok = false
			}
		}
	})
	return src, dst, ok && err == nil
}

var trafficFields = []string{"proto", "src", "dst", "txPkts", "txBytes", "rxPkts", "rxBytes"}

// foldsToField reports whether k matches a trafficEntry field's name
// without regard to case (encoding/json's rule, Unicode folding aside:
// the caller's fallback handles any non-ASCII name).
func foldsToField(k []byte) bool {
	for _, c := range k {
		if c >= 0x80 {
			return true
		}
	}
	for _, f := range trafficFields {
		if bytes.EqualFold(k, []byte(f)) {
			return true
		}
	}
	return false
}

// plainUint parses a JSON number of digits alone that fits a uint64.
func plainUint(v []byte) (uint64, bool) {
	if len(v) == 0 || len(v) > 20 {
		return 0, false
	}
	var n uint64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (1<<64-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// plainString is the contents of a JSON string without escapes.
func plainString(v []byte) ([]byte, bool) {
	if len(v) < 2 || v[0] != '"' || bytes.IndexByte(v, '\\') >= 0 {
		return nil, false
	}
	return v[1 : len(v)-1], true
}

// parseEndpointBytes is parseEndpoint of s, reading the common
// "a.b.c.d:port" without allocating.
func parseEndpointBytes(s []byte) (Endpoint, bool) {
	if ep, ok := parseIPv4Port(s); ok {
		return ep, true
	}
	return parseEndpoint(string(s))
}

// parseIPv4Port parses "a.b.c.d:port" in the form netip.ParseAddrPort
// accepts (no leading zeros in an octet; a port of at most five digits),
// or reports false for anything else, which the caller hands to netip.
func parseIPv4Port(s []byte) (Endpoint, bool) {
	var ip [4]byte
	i := 0
	for k := range 4 {
		j := i
		v := 0
		for j < len(s) && j-i < 3 && '0' <= s[j] && s[j] <= '9' {
			v = v*10 + int(s[j]-'0')
			j++
		}
		if j == i || v > 255 || (s[i] == '0' && j-i > 1) {
			return Endpoint{}, false
		}
		ip[k] = byte(v)
		want := byte('.')
		if k == 3 {
			want = ':'
		}
		if j >= len(s) || s[j] != want {
			return Endpoint{}, false
		}
		i = j + 1
	}
	if p := s[i:]; len(p) > 0 && len(p) <= 5 {
		if port, ok := plainUint(p); ok && port <= 0xffff {
			return Endpoint{Addr: netip.AddrFrom4(ip), Port: uint16(port)}, true
		}
	}
	return Endpoint{}, false
}

// trafficEntry is one entry of a traffic member, as the message has it.
type trafficEntry struct {
	Proto   uint8  `json:"proto"`
	Src     string `json:"src"`
	Dst     string `json:"dst"`
	TxPkts  uint64 `json:"txPkts"`
	TxBytes uint64 `json:"txBytes"`
	RxPkts  uint64 `json:"rxPkts"`
	RxBytes uint64 `json:"rxBytes"`
}

// parseTimeValue parses a JSON string holding an RFC 3339 time.
func parseTimeValue(v []byte) (time.Time, bool) {
	if len(v) < 2 || v[0] != '"' {
		return time.Time{}, false
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, false
	}
	return t.UTC(), true
}
