package netlog

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/wgsidecar/sidecar/ipfix"
	"github.com/wgsidecar/sidecar/metrics"
	"github.com/wgsidecar/sidecar/wgconf"
)

// The observationPointId of an exported record: the kind of flow-log
// traffic it comes from (the field of the message it is in).
const (
	PointVirtual  = 1 // virtualTraffic
	PointSubnet   = 2 // subnetTraffic
	PointExit     = 3 // exitTraffic
	PointPhysical = 4 // physicalTraffic
)

// layerKinds maps the names of [IPFIX] Layers to message kinds.
var layerKinds = map[string]int{"virtual": kindVirtual, "subnet": kindSubnet, "exit": kindExit, "physical": kindPhysical}

// IPFIXSink exports the flows of each message to an IPFIX collector, as
// the messages are (exit traffic anonymised unless detailed exit logging
// is on): one data record for each direction of an entry that has traffic
// in it. The record of what this node sent has the entry's Src and Dst and
// flowDirection egress (1); the record of what it received has them
// swapped and flowDirection ingress (0). Both span the window
// (flowStartMilliseconds, flowEndMilliseconds), and the
// observationPointId says which traffic the entry is in (PointVirtual,
// PointSubnet, PointExit, PointPhysical). An address removed by
// anonymisation goes as the unspecified address.
//
// An IPFIXSink is for one goroutine at a time.
type IPFIXSink struct {
	exp    *ipfix.Exporter
	layers [numKinds]bool
	recs   []ipfix.Record // reused by every Write
}

var _ Sink = (*IPFIXSink)(nil)

// NewIPFIXSink makes a sink of exp that exports the traffic of the named
// layers (wgconf.IPFIXLayers; wgconf.DefaultIPFIXLayers when empty). The
// sink closes exp when it is closed.
func NewIPFIXSink(exp *ipfix.Exporter, layers []string) (*IPFIXSink, error) {
	s := &IPFIXSink{exp: exp}
	if len(layers) == 0 {
		layers = wgconf.DefaultIPFIXLayers
	}
	for _, l := range layers {
		k, ok := layerKinds[l]
		if !ok {
			return nil, fmt.Errorf("ipfix: unknown layer %q", l)
		}
		s.layers[k] = true
	}
	return s, nil
}

// Write exports m's flows.
func (s *IPFIXSink) Write(ctx context.Context, m *Message) error {
	s.recs = s.recs[:0]
	for k, entries := range [numKinds][]ConnectionCounts{m.VirtualTraffic, m.SubnetTraffic, m.ExitTraffic, m.PhysicalTraffic} {
		if !s.layers[k] {
			continue
		}
		for i := range entries {
			s.add(m, &entries[i], uint32(k+1))
		}
	}
	return s.exp.Export(ctx, s.recs)
}

// add adds the records of one entry.
func (s *IPFIXSink) add(m *Message, e *ConnectionCounts, point uint32) {
	// An anonymised address is "", which parses to the zero AddrPort.
	src, _ := netip.ParseAddrPort(e.Src)
	dst, _ := netip.ParseAddrPort(e.Dst)
	r := ipfix.Record{Start: m.Start, End: m.End, Proto: e.Proto, ObservationPoint: point}
	if e.TxPackets != 0 || e.TxBytes != 0 {
		r.Src, r.Dst, r.Octets, r.Packets, r.Direction = src, dst, e.TxBytes, e.TxPackets, ipfix.Egress
		s.recs = append(s.recs, r)
	}
	if e.RxPackets != 0 || e.RxBytes != 0 {
		r.Src, r.Dst, r.Octets, r.Packets, r.Direction = dst, src, e.RxBytes, e.RxPackets, ipfix.Ingress
		s.recs = append(s.recs, r)
	}
}

// Close closes the exporter.
func (s *IPFIXSink) Close() error { return s.exp.Close() }

// ObservationDomain is the Observation Domain ID derived from a node ID,
// used when [IPFIX] sets none: the first 4 bytes of its SHA-256 (1 if
// those are 0, which RFC 7011 keeps for "no domain").
func ObservationDomain(nodeID string) uint32 {
	sum := sha256.Sum256([]byte(nodeID))
	return max(binary.BigEndian.Uint32(sum[:4]), 1)
}

// openIPFIX starts the export that [IPFIX] asks for: it resolves the
// collector (an error is a *sinkError naming the Collector key).
func openIPFIX(x *wgconf.IPFIX, nodeID string, log *slog.Logger) (*ipfix.Exporter, *IPFIXSink, error) {
	domain := x.ObservationDomain
	if domain == 0 {
		domain = ObservationDomain(nodeID)
	}
	exp, err := ipfix.New(ipfix.Config{
		Collector: x.Collector, Transport: x.Transport,
		ObservationDomain: domain, TemplateRefresh: x.TemplateRefresh,
	})
	if err != nil {
		return nil, nil, &sinkError{x, "Collector", fmt.Errorf("[IPFIX] Collector: %w", err)}
	}
	sink, err := NewIPFIXSink(exp, x.Layers)
	if err != nil {
		exp.Close()
		return nil, nil, &sinkError{x, "Layers", fmt.Errorf("[IPFIX] Layers: %w", err)}
	}
	log.Info("ipfix export on", "collector", x.Collector, "address", exp.Collector().String(), "transport", x.Transport, "observation_domain", domain, "layers", x.Layers)
	return exp, sink, nil
}

// ipfixMetrics are the export's counters.
func ipfixMetrics(exp *ipfix.Exporter) []metrics.Family {
	st := exp.Stats()
	m := metrics.One("wgsidecar_ipfix_messages_total", metrics.Counter, "IPFIX messages sent to the collector, template messages included.", float64(st.Messages))
	r := metrics.One("wgsidecar_ipfix_records_total", metrics.Counter, "IPFIX data records sent to the collector (one per direction of a flow in a window).", float64(st.Records))
	e := metrics.One("wgsidecar_ipfix_export_errors_total", metrics.Counter, "Flow-log messages whose IPFIX export failed in whole or in part.", float64(st.Errors))
	return []metrics.Family{m, r, e}
}
