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
// ends do not parse.
func (w *windowMembers) window() *Window {
	start, ok1 := parseTimeValue(w.start)
	end, ok2 := parseTimeValue(w.end)
	if !ok1 || !ok2 {
		return nil
	}
	win := &Window{Start: start, End: end}
	for c := ClassVirtual; c <= ClassPhysical; c++ {
		raw := w.traffic[c]
		if len(raw) == 0 || raw[0] != '[' {
			continue
		}
		var entries []trafficEntry
		if json.Unmarshal(raw, &entries) != nil {
			// One bad entry spoils the whole array for Unmarshal; take the
			// good ones one by one.
			entries = entries[:0]
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.Token() // [
			for dec.More() {
				var one json.RawMessage
				if dec.Decode(&one) != nil {
					break
				}
				var e trafficEntry
				if json.Unmarshal(one, &e) == nil {
					entries = append(entries, e)
				}
			}
		}
		for _, e := range entries {
			src, ok1 := parseEndpoint(e.Src)
			dst, ok2 := parseEndpoint(e.Dst)
			if !ok1 || !ok2 {
				continue
			}
			win.Flows = append(win.Flows, Flow{
				Class: c, Proto: e.Proto, Src: src, Dst: dst,
				TxPkts: e.TxPkts, TxBytes: e.TxBytes, RxPkts: e.RxPkts, RxBytes: e.RxBytes,
			})
		}
	}
	return win
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
