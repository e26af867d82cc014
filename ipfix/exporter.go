// Package ipfix exports flow records to an IPFIX collector (RFC 7011), over
// UDP or TCP.
//
// An Exporter sends each batch of Records it is given as data records of
// two templates, one for IPv4 and one for IPv6 flows, with the IANA
// elements flowStartMilliseconds, flowEndMilliseconds, the source and
// destination address and transport port, protocolIdentifier,
// octetDeltaCount, packetDeltaCount, flowDirection and observationPointId.
// Each message header's sequence number counts the data records of the
// messages sent before it in the session, so a collector sees what was
// lost. Over UDP the templates are sent at the start, again every
// TemplateRefresh, and at the next export after a send failed (a collector
// that was down and came back knows them again at once); over TCP once per
// connection, with a new connection (and sequence numbers from 0) after
// one fails.
//
// The exporter knows nothing of gVisor, WireGuard or the flow log: records
// are plain addresses, ports and counts.
package ipfix

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

// Defaults of Config.
const (
	DefaultTemplateRefresh = 10 * time.Minute
	// DefaultUDPMessageSize keeps each datagram, with IPv6 and UDP
	// headers, within a 1,500-byte path MTU.
	DefaultUDPMessageSize = 1400
	// minMessageSize fits the template message and one IPv6 record.
	minMessageSize = 256
	dialTimeout    = 5 * time.Second
)

// Config configures an Exporter.
type Config struct {
	// Collector is the collector's "host:port".
	Collector string
	// Transport is "udp" (also when empty) or "tcp".
	Transport string
	// ObservationDomain is the Observation Domain ID of every message.
	ObservationDomain uint32
	// TemplateRefresh is how often templates are sent again over UDP;
	// DefaultTemplateRefresh when zero.
	TemplateRefresh time.Duration
	// MaxMessageSize bounds each message: DefaultUDPMessageSize over UDP
	// and MaxMessageSize over TCP when zero.
	MaxMessageSize int
	// Now is the clock of export times and template refreshes; time.Now
	// when nil.
	Now func() time.Time
}

// Stats counts what an Exporter did since it started.
type Stats struct {
	Messages uint64 // IPFIX messages sent, template messages included
	Records  uint64 // data records sent
	Errors   uint64 // exports that failed, wholly or in part
}

// An Exporter sends records to one collector. Export and Close are for one
// goroutine at a time; Stats is safe for concurrent use.
type Exporter struct {
	cfg  Config
	tcp  bool
	addr netip.AddrPort // the collector, resolved once (UDP)
	conn net.Conn       // nil: not connected (TCP)
	enc  encoder

	templatesDue bool      // send the templates before the next data
	templatesAt  time.Time // when they were last sent (UDP)

	messages, records, errs atomic.Uint64
	closed                  bool
}

// Resolve resolves a collector's "host:port" to one address, as New does.
func Resolve(ctx context.Context, collector string) (netip.AddrPort, error) {
	host, portStr, err := net.SplitHostPort(collector)
	if err != nil {
		return netip.AddrPort{}, err
	}
	port, err := net.DefaultResolver.LookupPort(ctx, "udp", portStr)
	if err != nil || port == 0 {
		return netip.AddrPort{}, fmt.Errorf("%q: bad port", collector)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(a.Unmap(), uint16(port)), nil
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if len(addrs) == 0 {
		return netip.AddrPort{}, fmt.Errorf("%s: no address", host)
	}
	return netip.AddrPortFrom(addrs[0].Unmap(), uint16(port)), nil
}

// New makes an Exporter. It resolves the collector's name and, over UDP,
// opens the socket (connected, so that the kernel reports a collector that
// is not listening); over TCP it connects at the first Export, and again
// after a connection fails.
func New(cfg Config) (*Exporter, error) {
	e := &Exporter{cfg: cfg, templatesDue: true}
	switch cfg.Transport {
	case "", "udp":
	case "tcp":
		e.tcp = true
	default:
		return nil, fmt.Errorf("ipfix: transport %q is not udp or tcp", cfg.Transport)
	}
	if e.cfg.TemplateRefresh <= 0 {
		e.cfg.TemplateRefresh = DefaultTemplateRefresh
	}
	if e.cfg.Now == nil {
		e.cfg.Now = time.Now
	}
	size := e.cfg.MaxMessageSize
	if size == 0 {
		size = DefaultUDPMessageSize
		if e.tcp {
			size = MaxMessageSize
		}
	}
	if size < minMessageSize || size > MaxMessageSize {
		return nil, fmt.Errorf("ipfix: message size %d is out of range %d..%d", size, minMessageSize, MaxMessageSize)
	}
	e.enc = encoder{max: size, domain: cfg.ObservationDomain}

	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	addr, err := Resolve(ctx, cfg.Collector)
	if err != nil {
		return nil, err
	}
	e.addr = addr
	if !e.tcp {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
		if err != nil {
			return nil, err
		}
		e.conn = c
	}
	return e, nil
}

// Collector is the collector's resolved address.
func (e *Exporter) Collector() netip.AddrPort { return e.addr }

// Stats returns the counts so far.
func (e *Exporter) Stats() Stats {
	return Stats{Messages: e.messages.Load(), Records: e.records.Load(), Errors: e.errs.Load()}
}

// ErrClosed is returned by Export after Close.
var ErrClosed = errors.New("ipfix: exporter closed")

// Export sends recs as data records, after the templates when they are
// due. ctx bounds a TCP connect and write. It keeps no reference to recs.
// What could not be sent is lost (and counted in the sequence numbers, so
// the collector sees the gap): an exporter does not buffer.
func (e *Exporter) Export(ctx context.Context, recs []Record) error {
	if e.closed {
		return ErrClosed
	}
	if len(recs) == 0 {
		return nil
	}
	now := e.cfg.Now()
	if e.tcp && e.conn == nil {
		if err := e.connect(ctx); err != nil {
			e.errs.Add(1)
			return fmt.Errorf("ipfix: %w", err)
		}
	}
	if !e.tcp && now.Sub(e.templatesAt) >= e.cfg.TemplateRefresh {
		e.templatesDue = true
	}
	e.enc.reset(now)
	sendTemplates := e.templatesDue
	if sendTemplates {
		e.enc.templates()
	}
	for i := range recs {
		e.enc.add(&recs[i])
	}
	e.enc.finish()

	var err error
	if e.tcp {
		err = e.sendTCP(ctx)
	} else {
		err = e.sendUDP()
	}
	if err != nil {
		e.errs.Add(1)
		e.templatesDue = true
		return fmt.Errorf("ipfix: %w", err)
	}
	if sendTemplates {
		e.templatesDue = false
		e.templatesAt = now
	}
	return nil
}

// sendUDP sends each message as one datagram. A send that fails (the
// kernel reporting the collector unreachable, from an earlier datagram's
// ICMP error) is tried once more, after the templates, since a collector
// that restarted has forgotten them; a second failure ends the export.
func (e *Exporter) sendUDP() error {
	retried := false
	for _, m := range e.enc.msgs {
		msg := e.enc.buf[m.start:m.end]
		_, err := e.conn.Write(msg)
		if err != nil && !retried {
			retried = true
			if m.records > 0 {
				if err = e.write(e.templateMessage(msg)); err != nil {
					return err
				}
			}
			_, err = e.conn.Write(msg)
		}
		if err != nil {
			return err
		}
		e.sent(m.records)
	}
	return nil
}

// write sends one message that holds no data records.
func (e *Exporter) write(msg []byte) error {
	if _, err := e.conn.Write(msg); err != nil {
		return err
	}
	e.sent(0)
	return nil
}

// templateMessage is a message with only the templates, to go before msg:
// it has msg's sequence number. It has a buffer of its own.
func (e *Exporter) templateMessage(msg []byte) []byte {
	t := encoder{max: e.enc.max, domain: e.enc.domain, seq: binary.BigEndian.Uint32(msg[8:])}
	t.reset(e.cfg.Now())
	t.templates()
	return t.buf
}

// sendTCP writes every message in one write.
func (e *Exporter) sendTCP(ctx context.Context) error {
	if d, ok := ctx.Deadline(); ok {
		e.conn.SetWriteDeadline(d)
	} else {
		e.conn.SetWriteDeadline(time.Time{})
	}
	if _, err := e.conn.Write(e.enc.buf); err != nil {
		e.conn.Close()
		e.conn = nil
		return err
	}
	for _, m := range e.enc.msgs {
		e.sent(m.records)
	}
	return nil
}

// connect opens a TCP connection: a new transport session, whose sequence
// numbers start at 0 and which needs the templates first.
func (e *Exporter) connect(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", e.addr.String())
	if err != nil {
		return err
	}
	e.conn = c
	e.enc.seq = 0
	e.templatesDue = true
	return nil
}

// sent counts a message of n data records as sent.
func (e *Exporter) sent(n uint32) {
	e.messages.Add(1)
	e.records.Add(uint64(n))
}

// Close closes the socket or connection. Closing twice returns ErrClosed.
func (e *Exporter) Close() error {
	if e.closed {
		return ErrClosed
	}
	e.closed = true
	if e.conn == nil {
		return nil
	}
	err := e.conn.Close()
	e.conn = nil
	return err
}
