package wgconf

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// IPFIX is the [IPFIX] section: the flow log's windows exported to an
// IPFIX (RFC 7011) collector as well.
type IPFIX struct {
	// Collector is "host:port" as written: an IP, [IPv6] or host name,
	// resolved by the caller when the node starts.
	Collector string
	// Transport is "udp" or "tcp"; Parse sets DefaultIPFIXTransport.
	Transport string
	// ObservationDomain is the IPFIX Observation Domain ID; 0 lets the
	// node derive one from its node ID.
	ObservationDomain uint32
	// TemplateRefresh is how often templates are sent again over UDP
	// (over TCP they go once per connection); Parse sets
	// DefaultTemplateRefresh.
	TemplateRefresh time.Duration
	// Layers are the flow-log traffic kinds exported, each one of
	// IPFIXLayers, in lower case; Parse sets DefaultIPFIXLayers.
	Layers []string
}

// Defaults of [IPFIX].
const (
	DefaultIPFIXTransport  = "udp"
	DefaultTemplateRefresh = 10 * time.Minute
)

// IPFIXLayers are the values [IPFIX] Layers accepts: the traffic kinds of
// a flow-log message.
var IPFIXLayers = []string{"virtual", "subnet", "exit", "physical"}

// DefaultIPFIXLayers is what [IPFIX] exports without a Layers key: every
// kind but the physical layer.
var DefaultIPFIXLayers = []string{"virtual", "subnet", "exit"}

// ipfixSection is the [IPFIX] entry of the section table.
func ipfixSection() sectionSpec {
	x := func(p *parser) *IPFIX { return p.cfg.IPFIX }
	return sectionSpec{
		name: "IPFIX",
		open: func(c *Config) {
			c.IPFIX = &IPFIX{Transport: DefaultIPFIXTransport, TemplateRefresh: DefaultTemplateRefresh, Layers: slices.Clone(DefaultIPFIXLayers)}
		},
		keys: []keySpec{
			{name: "Collector", set: func(p *parser, v string) error { return setText(&x(p).Collector, v, false) }},
			{name: "Transport", set: func(p *parser, v string) error { return setText(&x(p).Transport, strings.ToLower(v), false) }},
			{name: "ObservationDomain", set: func(p *parser, v string) error {
				n, err := strconv.ParseUint(v, 10, 32)
				if err != nil || !isDigits(v) || n == 0 {
					return fmt.Errorf("%q is not a number from 1 to 4294967295 (leave the key out to derive one from the node ID)", v)
				}
				x(p).ObservationDomain = uint32(n)
				return nil
			}},
			{name: "TemplateRefresh", set: func(p *parser, v string) error { return setDuration(&x(p).TemplateRefresh, v, false) }},
			{name: "Layers", set: func(p *parser, v string) error {
				var layers []string
				for _, l := range splitList(v) {
					if l = strings.ToLower(l); !slices.Contains(layers, l) {
						layers = append(layers, l)
					}
				}
				if len(layers) == 0 {
					return errors.New("empty value")
				}
				x(p).Layers = layers
				return nil
			}},
		},
	}
}

// checkIPFIX validates [IPFIX]. The collector's name is not resolved here.
func (v *validator) checkIPFIX(x *IPFIX) error {
	ref := sectionRef{kind: secIPFIX}
	if x.Collector == "" {
		return v.errorf(ref, "Collector", "required key is missing (host:port of the IPFIX collector)")
	}
	if err := checkHostPort(x.Collector, false, 1); err != nil {
		return v.errorf(ref, "Collector", "%v", err)
	}
	switch x.Transport {
	case "udp", "tcp":
	case "":
		if v.parsed() {
			return v.errorf(ref, "Transport", "empty value")
		}
	default:
		return v.errorf(ref, "Transport", "%q is not one of udp, tcp", x.Transport)
	}
	if x.TemplateRefresh < 0 || x.TemplateRefresh > maxDuration || (x.TemplateRefresh == 0 && v.parsed()) {
		return v.errorf(ref, "TemplateRefresh", "%v is out of range", x.TemplateRefresh)
	}
	for _, l := range x.Layers {
		if !slices.Contains(IPFIXLayers, l) {
			return v.errorf(ref, "Layers", "%q is not one of %s", l, strings.Join(IPFIXLayers, ", "))
		}
	}
	if len(x.Layers) == 0 && v.parsed() {
		return v.errorf(ref, "Layers", "empty value")
	}
	return nil
}

// ipfix writes [IPFIX], if any, with its defaults written out.
func (w *writer) ipfix(x *IPFIX) {
	if x == nil {
		return
	}
	w.section("IPFIX")
	w.kv("Collector", x.Collector)
	w.kv("Transport", cmp.Or(x.Transport, DefaultIPFIXTransport))
	if x.ObservationDomain != 0 {
		w.raw("ObservationDomain", strconv.FormatUint(uint64(x.ObservationDomain), 10))
	}
	w.kv("TemplateRefresh", formatSeconds(cmp.Or(x.TemplateRefresh, DefaultTemplateRefresh), "s"))
	layers := x.Layers
	if len(layers) == 0 {
		layers = DefaultIPFIXLayers
	}
	w.kv("Layers", strings.Join(layers, ", "))
}
