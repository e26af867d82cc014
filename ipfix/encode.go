package ipfix

import (
	"encoding/binary"
	"net/netip"
	"time"
)

// Record is one flow in one direction over one interval: what one data
// record carries.
type Record struct {
	// Start and End bound the interval (flowStartMilliseconds,
	// flowEndMilliseconds).
	Start, End time.Time
	// Src and Dst are the flow's ends (sourceIPv4Address or
	// sourceIPv6Address with sourceTransportPort, and the destination
	// elements). A zero Addr is sent as the unspecified address of the
	// other end's family; when the families differ, the IPv4 address is
	// sent IPv4-mapped in the IPv6 template.
	Src, Dst netip.AddrPort
	// Proto is the IP protocol number (protocolIdentifier).
	Proto uint8
	// Octets and Packets are the counts (octetDeltaCount,
	// packetDeltaCount).
	Octets, Packets uint64
	// Direction is Ingress or Egress (flowDirection).
	Direction uint8
	// ObservationPoint is the observationPointId.
	ObservationPoint uint32
}

// Directions of a Record: the values of flowDirection (IANA element 61).
const (
	Ingress uint8 = 0
	Egress  uint8 = 1
)

// The wire format (RFC 7011).
const (
	version       = 10
	headerLen     = 16 // message header
	setHeaderLen  = 4
	templateSetID = 2

	// TemplateIPv4 and TemplateIPv6 are the IDs of the two templates; data
	// sets carry them as their set ID.
	TemplateIPv4 = 256
	TemplateIPv6 = 257

	// MaxMessageSize is the largest IPFIX message: its length field has 16
	// bits.
	MaxMessageSize = 65535
)

// IANA information element IDs used by the templates.
const (
	ieOctetDeltaCount          = 1
	iePacketDeltaCount         = 2
	ieProtocolIdentifier       = 4
	ieSourceTransportPort      = 7
	ieSourceIPv4Address        = 8
	ieDestinationTransportPort = 11
	ieDestinationIPv4Address   = 12
	ieSourceIPv6Address        = 27
	ieDestinationIPv6Address   = 28
	ieFlowDirection            = 61
	ieObservationPointID       = 138
	ieFlowStartMilliseconds    = 152
	ieFlowEndMilliseconds      = 153
)

// field is one template field: an IANA element and its encoded length.
type field struct{ id, length uint16 }

// templateFields returns a template's fields for addresses of addrLen
// bytes. The order is the order of appendRecord. observationPointId is
// unsigned64 in the IANA registry and sent in 4 bytes, a reduced-size
// encoding (RFC 7011 §6.2).
func templateFields(addrLen uint16) []field {
	src, dst := uint16(ieSourceIPv4Address), uint16(ieDestinationIPv4Address)
	if addrLen == 16 {
		src, dst = ieSourceIPv6Address, ieDestinationIPv6Address
	}
	return []field{
		{ieFlowStartMilliseconds, 8}, {ieFlowEndMilliseconds, 8},
		{src, addrLen}, {dst, addrLen},
		{ieSourceTransportPort, 2}, {ieDestinationTransportPort, 2},
		{ieProtocolIdentifier, 1},
		{ieOctetDeltaCount, 8}, {iePacketDeltaCount, 8},
		{ieFlowDirection, 1}, {ieObservationPointID, 4},
	}
}

// recordLen is the size of a data record of the template for addresses of
// addrLen bytes.
func recordLen(addrLen int) int { return 8 + 8 + 2*addrLen + 2 + 2 + 1 + 8 + 8 + 1 + 4 }

var (
	fields4 = templateFields(4)
	fields6 = templateFields(16)
)

// templateSetLen is the size of the template set holding both templates.
var templateSetLen = setHeaderLen + 2*4 + 4*len(fields4) + 4*len(fields6)

// appendTemplateSet appends the template set that defines both templates.
func appendTemplateSet(b []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, templateSetID)
	b = binary.BigEndian.AppendUint16(b, uint16(templateSetLen))
	for _, t := range []struct {
		id     uint16
		fields []field
	}{{TemplateIPv4, fields4}, {TemplateIPv6, fields6}} {
		b = binary.BigEndian.AppendUint16(b, t.id)
		b = binary.BigEndian.AppendUint16(b, uint16(len(t.fields)))
		for _, f := range t.fields {
			b = binary.BigEndian.AppendUint16(b, f.id)
			b = binary.BigEndian.AppendUint16(b, f.length)
		}
	}
	return b
}

// family returns the template a record goes in and its two addresses as
// that template sends them.
func family(r *Record) (template uint16, src, dst netip.Addr) {
	src, dst = r.Src.Addr().Unmap(), r.Dst.Addr().Unmap()
	switch {
	case !src.IsValid() && !dst.IsValid():
		return TemplateIPv4, netip.IPv4Unspecified(), netip.IPv4Unspecified()
	case !src.IsValid():
		src = unspecified(dst)
	case !dst.IsValid():
		dst = unspecified(src)
	}
	if src.Is4() && dst.Is4() {
		return TemplateIPv4, src, dst
	}
	return TemplateIPv6, netip.AddrFrom16(src.As16()), netip.AddrFrom16(dst.As16())
}

func unspecified(like netip.Addr) netip.Addr {
	if like.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

// appendRecord appends r's data record for the given template and
// addresses (from family).
func appendRecord(b []byte, r *Record, template uint16, src, dst netip.Addr) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(r.Start.UnixMilli()))
	b = binary.BigEndian.AppendUint64(b, uint64(r.End.UnixMilli()))
	if template == TemplateIPv4 {
		s, d := src.As4(), dst.As4()
		b = append(b, s[:]...)
		b = append(b, d[:]...)
	} else {
		s, d := src.As16(), dst.As16()
		b = append(b, s[:]...)
		b = append(b, d[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, r.Src.Port())
	b = binary.BigEndian.AppendUint16(b, r.Dst.Port())
	b = append(b, r.Proto)
	b = binary.BigEndian.AppendUint64(b, r.Octets)
	b = binary.BigEndian.AppendUint64(b, r.Packets)
	b = append(b, r.Direction)
	return binary.BigEndian.AppendUint32(b, r.ObservationPoint)
}

// encoder writes IPFIX messages back to back into one buffer, each at
// most max bytes, and remembers where each ends. Its zero value needs max
// and domain set.
type encoder struct {
	max    int    // largest message
	domain uint32 // Observation Domain ID
	seq    uint32 // data records in messages finished so far (mod 2^32)

	buf  []byte
	msgs []message // the finished messages in buf

	msgStart   int    // start of the open message; -1 when none
	setStart   int    // start of the open set; -1 when none
	setID      uint16 // template of the open set
	msgRecords uint32 // data records in the open message
	export     uint32 // export time of the messages, in seconds
}

// reset empties the buffer for the messages of one export at time now.
func (e *encoder) reset(now time.Time) {
	e.buf = e.buf[:0]
	e.msgs = e.msgs[:0]
	e.msgStart, e.setStart = -1, -1
	e.export = uint32(now.Unix())
}

// templates adds a message that holds only the template set.
func (e *encoder) templates() {
	e.finish()
	e.open()
	e.buf = appendTemplateSet(e.buf)
	e.finish()
}

// add adds r as a data record, in the open message if it fits, else in a
// new one.
func (e *encoder) add(r *Record) {
	tmpl, src, dst := family(r)
	n := recordLen(src.BitLen() / 8)
	need := n
	if e.setStart < 0 || e.setID != tmpl {
		need += setHeaderLen
	}
	if e.msgStart >= 0 && len(e.buf)-e.msgStart+need > e.max {
		e.finish()
	}
	if e.msgStart < 0 {
		e.open()
	}
	if e.setStart < 0 || e.setID != tmpl {
		e.closeSet()
		e.setStart, e.setID = len(e.buf), tmpl
		e.buf = append(e.buf, 0, 0, 0, 0) // set header, filled by closeSet
	}
	e.buf = appendRecord(e.buf, r, tmpl, src, dst)
	e.msgRecords++
}

// open starts a message; its header is written by finish.
func (e *encoder) open() {
	e.msgStart = len(e.buf)
	e.buf = append(e.buf, make([]byte, headerLen)...)
	e.msgRecords = 0
}

func (e *encoder) closeSet() {
	if e.setStart < 0 {
		return
	}
	binary.BigEndian.PutUint16(e.buf[e.setStart:], e.setID)
	binary.BigEndian.PutUint16(e.buf[e.setStart+2:], uint16(len(e.buf)-e.setStart))
	e.setStart = -1
}

// finish closes the open message, if any: its header's sequence number
// counts the data records of the messages before it.
func (e *encoder) finish() {
	if e.msgStart < 0 {
		return
	}
	e.closeSet()
	h := e.buf[e.msgStart:]
	binary.BigEndian.PutUint16(h[0:], version)
	binary.BigEndian.PutUint16(h[2:], uint16(len(e.buf)-e.msgStart))
	binary.BigEndian.PutUint32(h[4:], e.export)
	binary.BigEndian.PutUint32(h[8:], e.seq)
	binary.BigEndian.PutUint32(h[12:], e.domain)
	e.seq += e.msgRecords
	e.msgs = append(e.msgs, message{start: e.msgStart, end: len(e.buf), records: e.msgRecords})
	e.msgStart = -1
}

// message is one finished message of an encoder: buf[start:end].
type message struct {
	start, end int
	records    uint32 // data records in it
}
