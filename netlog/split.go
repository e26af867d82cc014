package netlog

import "encoding/json"

// The sizes of a message's JSON encoding are computed, not measured by
// encoding each candidate: the parts below are measured once, from
// encoding/json itself, and a message's size is their sum.
//
// A message is its header (nodeId, start, end: measured per window, as the
// times' encodings vary in length), then per kind with entries the field's
// frame (`,"virtualTraffic":[` and `]`), its entries, and a comma between
// entries. This holds because every traffic field follows the header's
// last field and is omitted when empty.
var (
	// entryBase is the size of an entry with every number 0 (one digit
	// each) and empty strings.
	entryBase = len(mustMarshal(ConnectionCounts{}))
	// fieldFrame is, by kind, what a non-empty field adds beside its
	// entries and commas.
	fieldFrame = func() (frame [numKinds]int) {
		empty := len(mustMarshal(Message{}))
		one := []ConnectionCounts{{}}
		for k, m := range []Message{
			kindVirtual:  {VirtualTraffic: one},
			kindSubnet:   {SubnetTraffic: one},
			kindExit:     {ExitTraffic: one},
			kindPhysical: {PhysicalTraffic: one},
		} {
			frame[k] = len(mustMarshal(m)) - empty - entryBase
		}
		return frame
	}()
)

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("netlog: " + err.Error())
	}
	return b
}

// entrySize returns the size of e's JSON encoding.
func entrySize(e *ConnectionCounts) int {
	// entryBase has one digit per number and "" per string.
	return entryBase +
		uintLen(uint64(e.Proto)) - 1 +
		uintLen(e.TxPackets) - 1 +
		uintLen(e.TxBytes) - 1 +
		uintLen(e.RxPackets) - 1 +
		uintLen(e.RxBytes) - 1 +
		stringLen(e.Src) + stringLen(e.Dst)
}

// uintLen returns the number of decimal digits of v.
func uintLen(v uint64) int {
	n := 1
	for v >= 10 {
		v /= 10
		n++
	}
	return n
}

// stringLen returns the size of s's JSON encoding without its quotes.
// Addresses need no escaping; anything else (an odd IPv6 zone) is measured
// by encoding it.
func stringLen(s string) int {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return len(mustMarshal(s)) - 2
		}
	}
	return len(s)
}

// split packs the entries of one window into as few messages as greedy
// filling allows, each at most limit bytes of JSON, in one pass. The
// messages' slices share the entries' backing arrays, capped so that an
// append to one cannot overwrite the next.
func split(header Message, entries [numKinds][]ConnectionCounts, limit int) []Message {
	headerSize := len(mustMarshal(header))

	var msgs []Message
	cur, size, empty := header, headerSize, true
	for k, es := range entries {
		from := 0 // first entry of kind k in cur
		for i := range es {
			add := entrySize(&es[i])
			if i == from {
				add += fieldFrame[k]
			} else {
				add++ // comma
			}
			if size+add > limit && !empty {
				setKind(&cur, k, es[from:i:i])
				msgs = append(msgs, cur)
				cur, size, from = header, headerSize, i
				add = entrySize(&es[i]) + fieldFrame[k]
			}
			size += add
			empty = false
		}
		setKind(&cur, k, es[from:len(es):len(es)])
	}
	if !empty {
		msgs = append(msgs, cur)
	}
	return msgs
}

// setKind sets m's field of kind k to es, or to nil when es is empty.
func setKind(m *Message, k int, es []ConnectionCounts) {
	if len(es) == 0 {
		es = nil
	}
	switch k {
	case kindVirtual:
		m.VirtualTraffic = es
	case kindSubnet:
		m.SubnetTraffic = es
	case kindExit:
		m.ExitTraffic = es
	case kindPhysical:
		m.PhysicalTraffic = es
	}
}
