package ipfix

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// A small IPFIX decoder for the tests: it reads what a collector would,
// from the bytes alone, keeping the templates it has seen.

type header struct {
	length uint16
	export uint32
	seq    uint32
	domain uint32
}

type decoded struct {
	header
	templates int // template records in the message
	records   []Record
}

type decoder struct {
	templates map[uint16][]field
}

func newDecoder() *decoder { return &decoder{templates: map[uint16][]field{}} }

var errNoTemplate = errors.New("data set for an unknown template")

// decode reads one message.
func (d *decoder) decode(b []byte) (decoded, error) {
	var m decoded
	if len(b) < headerLen {
		return m, errors.New("short header")
	}
	if v := binary.BigEndian.Uint16(b); v != version {
		return m, fmt.Errorf("version %d", v)
	}
	m.length = binary.BigEndian.Uint16(b[2:])
	m.export = binary.BigEndian.Uint32(b[4:])
	m.seq = binary.BigEndian.Uint32(b[8:])
	m.domain = binary.BigEndian.Uint32(b[12:])
	if int(m.length) != len(b) {
		return m, fmt.Errorf("length field %d, message %d bytes", m.length, len(b))
	}
	rest := b[headerLen:]
	for len(rest) > 0 {
		if len(rest) < setHeaderLen {
			return m, errors.New("short set header")
		}
		id, n := binary.BigEndian.Uint16(rest), int(binary.BigEndian.Uint16(rest[2:]))
		if n < setHeaderLen || n > len(rest) {
			return m, fmt.Errorf("set length %d of %d", n, len(rest))
		}
		body := rest[setHeaderLen:n]
		rest = rest[n:]
		switch {
		case id == templateSetID:
			k, err := d.templateSet(body)
			if err != nil {
				return m, err
			}
			m.templates += k
		case id >= 256:
			fields, ok := d.templates[id]
			if !ok {
				return m, errNoTemplate
			}
			size := 0
			for _, f := range fields {
				size += int(f.length)
			}
			if size == 0 {
				return m, errors.New("empty template")
			}
			for len(body) >= size {
				m.records = append(m.records, decodeRecord(fields, body[:size]))
				body = body[size:]
			}
			if len(body) >= 4 { // RFC 7011 allows padding shorter than a record
				return m, fmt.Errorf("%d bytes left over in a data set", len(body))
			}
		default:
			return m, fmt.Errorf("set ID %d", id)
		}
	}
	return m, nil
}

func (d *decoder) templateSet(b []byte) (int, error) {
	k := 0
	for len(b) >= 4 {
		id, count := binary.BigEndian.Uint16(b), int(binary.BigEndian.Uint16(b[2:]))
		b = b[4:]
		if len(b) < 4*count {
			return k, errors.New("short template")
		}
		var fields []field
		for i := range count {
			f := field{binary.BigEndian.Uint16(b[4*i:]), binary.BigEndian.Uint16(b[4*i+2:])}
			if f.id&0x8000 != 0 {
				return k, errors.New("enterprise element")
			}
			fields = append(fields, f)
		}
		b = b[4*count:]
		d.templates[id] = fields
		k++
	}
	return k, nil
}

func decodeRecord(fields []field, b []byte) Record {
	var r Record
	var src, dst netip.Addr
	var sport, dport uint16
	for _, f := range fields {
		v := b[:f.length]
		b = b[f.length:]
		var u uint64
		if f.length <= 8 {
			for _, c := range v {
				u = u<<8 | uint64(c)
			}
		}
		switch f.id {
		case ieFlowStartMilliseconds:
			r.Start = time.UnixMilli(int64(u))
		case ieFlowEndMilliseconds:
			r.End = time.UnixMilli(int64(u))
		case ieSourceIPv4Address, ieSourceIPv6Address:
			src, _ = netip.AddrFromSlice(v)
		case ieDestinationIPv4Address, ieDestinationIPv6Address:
			dst, _ = netip.AddrFromSlice(v)
		case ieSourceTransportPort:
			sport = uint16(u)
		case ieDestinationTransportPort:
			dport = uint16(u)
		case ieProtocolIdentifier:
			r.Proto = uint8(u)
		case ieOctetDeltaCount:
			r.Octets = u
		case iePacketDeltaCount:
			r.Packets = u
		case ieFlowDirection:
			r.Direction = uint8(u)
		case ieObservationPointID:
			r.ObservationPoint = uint32(u)
		}
	}
	r.Src, r.Dst = netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport)
	return r
}

// onWire is what a record becomes on the wire: times in whole
// milliseconds, a missing address the unspecified one of the other end's
// family (IPv4 when both are missing), and both IPv6 when the families
// differ (the IPv4 one mapped).
func onWire(r Record) Record {
	s, d := r.Src.Addr().Unmap(), r.Dst.Addr().Unmap()
	zero := func(like netip.Addr) netip.Addr {
		if like.Is6() {
			return netip.IPv6Unspecified()
		}
		return netip.IPv4Unspecified()
	}
	if !s.IsValid() {
		s = zero(d)
	}
	if !d.IsValid() {
		d = zero(s)
	}
	if s.Is4() != d.Is4() {
		s, d = netip.AddrFrom16(s.As16()), netip.AddrFrom16(d.As16())
	}
	r.Src, r.Dst = netip.AddrPortFrom(s, r.Src.Port()), netip.AddrPortFrom(d, r.Dst.Port())
	r.Start, r.End = time.UnixMilli(r.Start.UnixMilli()), time.UnixMilli(r.End.UnixMilli())
	return r
}
