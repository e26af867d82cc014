package wgconf

import (
	"errors"
	"fmt"
	"slices"
)

// At returns err as an *Error naming where the file configures key of
// section: for a problem that only shows when the node starts what the
// file asks for (a port already taken, an output file that cannot be
// opened), so that the refusal names file, line and key as a parse error
// does. section is one of the Config's own section values (a
// TCPClientTunnel from c.TCPClientTunnels, c.FlowLog, &c.Interface, …).
// On a Config that was not parsed, or for a section it does not hold, the
// message names the section instead of a line. An err that is already an
// *Error is returned as it is.
func (c *Config) At(section any, key string, err error) error {
	if err == nil {
		return nil
	}
	if e, ok := errors.AsType[*Error](err); ok {
		return e
	}
	ref, ok := c.refOf(section)
	if !ok {
		return &Error{File: c.Path, Key: key, Err: err}
	}
	v := &validator{c: c, pos: c.pos}
	return v.errorf(ref, key, "%w", err)
}

// refOf finds section among c's sections.
func (c *Config) refOf(section any) (sectionRef, bool) {
	switch s := section.(type) {
	case *Interface:
		return sectionRef{kind: secInterface}, s == &c.Interface
	case Socks5:
		return indexIn(secSocks5, c.Socks5, s)
	case HTTPProxy:
		return indexIn(secHTTP, c.HTTP, s)
	case TCPClientTunnel:
		return indexIn(secTCPClientTunnel, c.TCPClientTunnels, s)
	case TCPServerTunnel:
		return indexIn(secTCPServerTunnel, c.TCPServerTunnels, s)
	case UDPProxyTunnel:
		return indexIn(secUDPProxyTunnel, c.UDPProxyTunnels, s)
	case UDPServerTunnel:
		return indexIn(secUDPServerTunnel, c.UDPServerTunnels, s)
	case STDIOTunnel:
		return indexIn(secSTDIOTunnel, c.STDIOTunnels, s)
	case *Serve:
		return sectionRef{kind: secServe}, s != nil && s == c.Serve
	case *FlowLog:
		return sectionRef{kind: secFlowLog}, s != nil && s == c.FlowLog
	case *LogStream:
		return sectionRef{kind: secLogStream}, s != nil && s == c.LogStream
	case *Control:
		return sectionRef{kind: secControl}, s != nil && s == c.Control
	case *Metrics:
		return sectionRef{kind: secMetrics}, s != nil && s == c.Metrics
	case *IPFIX:
		return sectionRef{kind: secIPFIX}, s != nil && s == c.IPFIX
	default:
		panic(fmt.Sprintf("wgconf: At: %T is not a section", section))
	}
}

// indexIn finds s among the sections of a repeated kind.
func indexIn[T comparable](kind sectionKind, list []T, s T) (sectionRef, bool) {
	i := slices.Index(list, s)
	return sectionRef{kind: kind, index: i}, i >= 0
}
