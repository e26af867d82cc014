package monitor

import (
	"encoding/binary"
	"io"
	"sync"
	"time"
)

// The classic libpcap file format, with raw IP link-layer headers so that
// IPv4 and IPv6 packets share one file.
const (
	pcapMagic        = 0xa1b2c3d4 // microsecond timestamps
	pcapVersionMajor = 2
	pcapVersionMinor = 4
	pcapSnapLen      = 65535
	pcapLinkTypeRaw  = 101 // LINKTYPE_RAW: each packet starts with an IPv4 or IPv6 header
)

// PcapWriter writes packets to a libpcap file. It is safe for concurrent
// use.
type PcapWriter struct {
	mu  sync.Mutex
	w   io.Writer
	hdr [16]byte // record header scratch; guarded by mu
}

// NewPcapWriter writes the file header to w and returns a writer for the
// packet records.
func NewPcapWriter(w io.Writer) (*PcapWriter, error) {
	var h [24]byte
	binary.LittleEndian.PutUint32(h[0:], pcapMagic)
	binary.LittleEndian.PutUint16(h[4:], pcapVersionMajor)
	binary.LittleEndian.PutUint16(h[6:], pcapVersionMinor)
	// h[8:16]: thiszone and sigfigs, both zero.
	binary.LittleEndian.PutUint32(h[16:], pcapSnapLen)
	binary.LittleEndian.PutUint32(h[20:], pcapLinkTypeRaw)
	if _, err := w.Write(h[:]); err != nil {
		return nil, err
	}
	return &PcapWriter{w: w}, nil
}

// WritePacket appends one IP packet captured at t, truncated to the snap
// length.
func (p *PcapWriter) WritePacket(t time.Time, pkt []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	capLen := min(len(pkt), pcapSnapLen)
	binary.LittleEndian.PutUint32(p.hdr[0:], uint32(t.Unix()))
	binary.LittleEndian.PutUint32(p.hdr[4:], uint32(t.Nanosecond()/1000))
	binary.LittleEndian.PutUint32(p.hdr[8:], uint32(capLen))
	binary.LittleEndian.PutUint32(p.hdr[12:], uint32(len(pkt)))
	if _, err := p.w.Write(p.hdr[:]); err != nil {
		return err
	}
	_, err := p.w.Write(pkt[:capLen])
	return err
}
