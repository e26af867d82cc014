package ipfix

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"
)

// recordsFrom makes records from arbitrary bytes, 48 bytes a record:
// addresses of either family (or none), any ports, protocol, counts,
// direction and observation point.
func recordsFrom(data []byte) []Record {
	var out []Record
	for len(data) >= 48 {
		b := data[:48]
		data = data[48:]
		addr := func(kind byte, raw []byte) netip.Addr {
			switch kind % 4 {
			case 0:
				return netip.Addr{}
			case 1:
				return netip.AddrFrom4([4]byte(raw[:4]))
			case 2:
				return netip.AddrFrom4([4]byte(raw[:4])) // IPv4 is the common case
			}
			return netip.AddrFrom16([16]byte(raw[:16]))
		}
		start := time.UnixMilli(int64(binary.BigEndian.Uint32(b[40:]))*1000 + int64(b[44])).Add(time.Duration(b[45]) * time.Microsecond)
		out = append(out, Record{
			Start:            start,
			End:              start.Add(time.Duration(b[46]) * time.Second),
			Src:              netip.AddrPortFrom(addr(b[0], b[2:18]), binary.BigEndian.Uint16(b[18:])),
			Dst:              netip.AddrPortFrom(addr(b[1], b[20:36]), binary.BigEndian.Uint16(b[36:])),
			Proto:            b[38],
			Octets:           binary.BigEndian.Uint64(b[30:]),
			Packets:          uint64(binary.BigEndian.Uint32(b[24:])),
			Direction:        b[39] % 2,
			ObservationPoint: uint32(b[47]),
		})
	}
	return out
}

// checkRoundTrip encodes recs into messages of at most max bytes, with the
// templates first when templates is set, decodes them with a decoder that
// knows no template before, and checks what it reads.
func checkRoundTrip(t *testing.T, recs []Record, max int, templates bool, seq0 uint32) {
	t.Helper()
	e := encoder{max: max, domain: 7, seq: seq0}
	now := time.Unix(1_800_000_000, 0)
	e.reset(now)
	if templates {
		e.templates()
	}
	for i := range recs {
		e.add(&recs[i])
	}
	e.finish()

	d := newDecoder()
	if !templates {
		d.templates[TemplateIPv4], d.templates[TemplateIPv6] = fields4, fields6
	}
	var got []Record
	seq := seq0
	end := 0
	for i, m := range e.msgs {
		if m.start != end {
			t.Fatalf("message %d starts at %d, the one before ended at %d", i, m.start, end)
		}
		end = m.end
		msg := e.buf[m.start:m.end]
		if len(msg) > max {
			t.Fatalf("message %d is %d bytes, more than %d", i, len(msg), max)
		}
		dm, err := d.decode(msg)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if dm.seq != seq || dm.domain != 7 || dm.export != uint32(now.Unix()) {
			t.Fatalf("message %d: sequence %d domain %d export %d, want %d, 7, %d", i, dm.seq, dm.domain, dm.export, seq, now.Unix())
		}
		if i == 0 && templates && (dm.templates != 2 || len(dm.records) != 0) {
			t.Fatalf("first message: %d templates and %d records, want the 2 templates alone", dm.templates, len(dm.records))
		}
		if uint32(len(dm.records)) != m.records {
			t.Fatalf("message %d: %d records decoded, the encoder counted %d", i, len(dm.records), m.records)
		}
		seq += uint32(len(dm.records))
		got = append(got, dm.records...)
	}
	if end != len(e.buf) || e.seq != seq {
		t.Fatalf("messages end at %d of %d; encoder sequence %d, want %d", end, len(e.buf), e.seq, seq)
	}
	want := make([]Record, len(recs))
	for i, r := range recs {
		want[i] = onWire(r)
	}
	checkRecords(t, got, want)
	// Every data message but the last is full: the next record would
	// not have fitted.
	first := 0
	if templates {
		first = 1
	}
	for i := first; i+1 < len(e.msgs); i++ {
		if room := max - (e.msgs[i].end - e.msgs[i].start); room >= setHeaderLen+recordLen(16) {
			t.Errorf("message %d left %d bytes unused", i, room)
		}
	}
}

func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte{}, uint16(1400), true, uint32(0))
	f.Add(make([]byte, 48*3), uint16(256), false, uint32(5))
	seed := make([]byte, 48*64)
	for i := range seed {
		seed[i] = byte(i * 37)
	}
	f.Add(seed, uint16(1400), true, uint32(0xfffffff0)) // the sequence number wraps
	f.Add(seed, uint16(256), true, uint32(1))
	f.Add(seed, uint16(65535), false, uint32(0))
	f.Fuzz(func(t *testing.T, data []byte, max uint16, templates bool, seq uint32) {
		if max < minMessageSize {
			max = minMessageSize
		}
		checkRoundTrip(t, recordsFrom(data), int(max), templates, seq)
	})
}

func TestEncodeExample(t *testing.T) {
	start := time.Date(2026, 11, 22, 10, 1, 38, 388901453, time.UTC)
	end := start.Add(5*time.Second - time.Nanosecond)
	recs := []Record{
		{Start: start, End: end, Src: netip.MustParseAddrPort("10.99.0.1:40312"), Dst: netip.MustParseAddrPort("10.99.0.2:80"), Proto: 6, Octets: 306, Packets: 4, Direction: Egress, ObservationPoint: 1},
		{Start: start, End: end, Src: netip.MustParseAddrPort("[fd00::2]:80"), Dst: netip.MustParseAddrPort("[fd00::1]:40312"), Proto: 6, Octets: 318, Packets: 3, Direction: Ingress, ObservationPoint: 1},
		{Start: start, End: end, Src: netip.MustParseAddrPort("10.99.0.2:0"), Dst: netip.MustParseAddrPort("[::1]:51820"), Proto: 0, Octets: 732, Packets: 7, Direction: Egress, ObservationPoint: 4},
		{Start: start, End: end, Src: netip.MustParseAddrPort("10.99.0.1:0"), Proto: 0, Octets: 1000, Packets: 10, Direction: Egress, ObservationPoint: 3},
	}
	e := encoder{max: 1400, domain: 1}
	e.reset(end)
	for i := range recs {
		e.add(&recs[i])
	}
	e.finish()
	if len(e.msgs) != 1 {
		t.Fatalf("%d messages, want 1", len(e.msgs))
	}
	// The header, then sets IPv4 (1 record), IPv6 (2), IPv4 (1).
	want := headerLen + 3*setHeaderLen + 2*recordLen(4) + 2*recordLen(16)
	if len(e.buf) != want {
		t.Errorf("message of %d bytes, want %d", len(e.buf), want)
	}
	if got := binary.BigEndian.Uint16(e.buf[headerLen:]); got != TemplateIPv4 {
		t.Errorf("first set ID %d", got)
	}
	// The first record, byte by byte after the set header.
	r := e.buf[headerLen+setHeaderLen:]
	wantRec := []byte{
		0, 0, 0x01, 0xa2, 0x02, 0xb4, 0x45, 0x54, // flowStartMilliseconds 1795341698388
		0, 0, 0x01, 0xa2, 0x02, 0xb4, 0x58, 0xdc, // flowEndMilliseconds 1795341703388
		10, 99, 0, 1, 10, 99, 0, 2, // addresses
		0x9d, 0x78, 0, 80, // ports 40312, 80
		6,                         // TCP
		0, 0, 0, 0, 0, 0, 1, 0x32, // 306 octets
		0, 0, 0, 0, 0, 0, 0, 4, // 4 packets
		1,          // egress
		0, 0, 0, 1, // observation point 1
	}
	if got := r[:len(wantRec)]; !bytes.Equal(got, wantRec) {
		t.Errorf("first record:\n got  % x\n want % x", got, wantRec)
	}
	checkRoundTrip(t, recs, 1400, true, 0)
}

// checkRecords fails the test at the first record of got that differs
// from want (times compared as instants).
func checkRecords(t testing.TB, got, want []Record) {
	t.Helper()
	for i := range min(len(got), len(want)) {
		g, w := got[i], want[i]
		if !g.Start.Equal(w.Start) || !g.End.Equal(w.End) {
			t.Fatalf("record %d: times %v..%v, want %v..%v", i, g.Start, g.End, w.Start, w.End)
		}
		g.Start, g.End, w.Start, w.End = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		if g != w {
			t.Fatalf("record %d:\n got  %+v\n want %+v", i, g, w)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d", len(got), len(want))
	}
}
