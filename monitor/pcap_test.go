package monitor

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

type pcapRecord struct {
	t       time.Time
	origLen int
	data    []byte
}

// readPcap parses a little-endian, microsecond libpcap file.
func readPcap(t *testing.T, b []byte) (linkType uint32, recs []pcapRecord) {
	t.Helper()
	if len(b) < 24 {
		t.Fatalf("file header truncated: %d bytes", len(b))
	}
	le := binary.LittleEndian
	if m := le.Uint32(b); m != 0xa1b2c3d4 {
		t.Fatalf("magic %#x", m)
	}
	if maj, min := le.Uint16(b[4:]), le.Uint16(b[6:]); maj != 2 || min != 4 {
		t.Fatalf("version %d.%d", maj, min)
	}
	if s := le.Uint32(b[16:]); s != 65535 {
		t.Fatalf("snaplen %d", s)
	}
	linkType = le.Uint32(b[20:])
	for b = b[24:]; len(b) > 0; {
		if len(b) < 16 {
			t.Fatalf("record header truncated: %d bytes", len(b))
		}
		capLen, origLen := int(le.Uint32(b[8:])), int(le.Uint32(b[12:]))
		if len(b) < 16+capLen {
			t.Fatalf("record truncated: want %d bytes, have %d", capLen, len(b)-16)
		}
		recs = append(recs, pcapRecord{
			t:       time.Unix(int64(le.Uint32(b)), int64(le.Uint32(b[4:]))*1000),
			origLen: origLen,
			data:    b[16 : 16+capLen],
		})
		b = b[16+capLen:]
	}
	return linkType, recs
}

func TestPcapRoundTrip(t *testing.T) {
	pkts := [][]byte{
		tcpPacket("10.0.0.1", 2000, "10.0.0.2", 80, header.TCPFlagSyn, ""),
		udpPacket("2001:db8::1", 5353, "2001:db8::2", 53, "query"),
		echoPacket("fd00::1", "fd00::2", false, 1, 1),
		echoPacket("192.0.2.1", "192.0.2.2", true, 1, 1),
	}
	var buf bytes.Buffer
	w, err := NewPcapWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range pkts {
		if err := w.WritePacket(t0.Add(time.Duration(i)*time.Millisecond), p); err != nil {
			t.Fatal(err)
		}
	}
	link, recs := readPcap(t, buf.Bytes())
	if link != 101 {
		t.Errorf("link type %d, want 101 (LINKTYPE_RAW)", link)
	}
	if len(recs) != len(pkts) {
		t.Fatalf("%d records, want %d", len(recs), len(pkts))
	}
	wantSrc := []string{"10.0.0.1", "2001:db8::1", "fd00::1", "192.0.2.1"}
	for i, r := range recs {
		if !bytes.Equal(r.data, pkts[i]) || r.origLen != len(pkts[i]) {
			t.Errorf("record %d: %d/%d bytes, differs from the packet", i, len(r.data), r.origLen)
		}
		if want := t0.Add(time.Duration(i) * time.Millisecond); !r.t.Equal(want) {
			t.Errorf("record %d: time %v, want %v", i, r.t, want)
		}
		if src, _ := packetAddrs(r.data); src.String() != wantSrc[i] {
			t.Errorf("record %d: src %v, want %s", i, src, wantSrc[i])
		}
	}

	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Log("tshark not on PATH; skipping the cross-check")
		return
	}
	path := filepath.Join(t.TempDir(), "out.pcap")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tshark, "-r", path, "-T", "fields", "-e", "ip.src", "-e", "ipv6.src").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		got = append(got, strings.TrimSpace(line))
	}
	if !slices.Equal(got, wantSrc) {
		t.Errorf("tshark sources %q, want %q", got, wantSrc)
	}
}

func TestPcapTruncatesToSnapLen(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewPcapWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 70000)
	if err := w.WritePacket(t0, big); err != nil {
		t.Fatal(err)
	}
	_, recs := readPcap(t, buf.Bytes())
	if len(recs) != 1 || len(recs[0].data) != 65535 || recs[0].origLen != 70000 {
		t.Fatalf("got %d records; want one of 65535 captured of 70000", len(recs))
	}
}
