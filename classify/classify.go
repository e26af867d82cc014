// Package classify owns deciding the traffic class of a flow (virtual,
// subnet or exit) from this node's routes: its own tunnel addresses, its
// peers' AllowedIPs and the subnets and exit service it offers.
//
// It knows nothing of gVisor, WireGuard, counting or logging: it deals in
// netip addresses and prefixes only, and depends on the standard library
// alone.
//
// # Rules
//
// A tunnel node address is
//   - an address of this node's own Address entries;
//   - any address inside one of this node's Address prefixes when that prefix
//     is wider than a single address (Address = 10.0.0.1/24, as wg-quick users
//     write it, makes 10.0.0.0/24 the tunnel network);
//   - a peer's single-address AllowedIPs entry (/32 or /128).
//
// A subnet address is one that is not a tunnel node address and lies inside
// a non-default routed prefix: a peer's AllowedIPs entry wider than a single
// address (the peer is a subnet router this node uses), or one of this node's
// [Serve] subnets of any size (this node is the subnet router).
//
// Default routes (0.0.0.0/0, ::/0, a peer that is an exit node or this node
// serving as one) add nothing: what is neither a node nor a subnet address is
// reached through a default route. So do routes that only spell a default
// route out in pieces: when one peer's (or the [Serve] section's) non-default
// prefixes of one address family together cover a sixteenth of that family
// or more (a /4's worth), they are taken as a default route, not as subnets.
// This catches split defaults (0.0.0.0/1, 128.0.0.0/1) and the "all but
// private ranges" lists that WireGuard clients generate, which would
// otherwise log exit traffic in detail as subnet traffic; no real subnet is
// that large (the widest private IPv4 block is a /8).
//
// A flow is then
//   - Virtual when both ends are tunnel node addresses;
//   - Subnet, otherwise, when either end is a subnet address;
//   - Exit otherwise.
//
// IPv4-mapped IPv6 addresses (and prefixes) are unmapped first; IPv6 zones
// are ignored.
package classify

import (
	"net/netip"
	"strconv"
)

// Class is the traffic class of a flow on the virtual layer.
type Class uint8

const (
	// Virtual traffic has tunnel node addresses at both ends.
	Virtual Class = iota + 1
	// Subnet traffic has one end inside a non-default routed prefix (an
	// offered subnet), whether this node uses a subnet router or is one.
	Subnet
	// Exit traffic is anything else: it goes through a default route
	// (0.0.0.0/0 or ::/0), this node using an exit node or being one.
	Exit
)

// String returns "virtual", "subnet" or "exit", and "class(N)" for a value
// that is none of them.
func (c Class) String() string {
	switch c {
	case Virtual:
		return "virtual"
	case Subnet:
		return "subnet"
	case Exit:
		return "exit"
	}
	return "class(" + strconv.Itoa(int(c)) + ")"
}

// Routes is this node's view of the network: the routes as the sender of
// this node's packets sees them (SPEC §5). Invalid prefixes are ignored.
type Routes struct {
	// Local are this node's own Address entries. Their addresses are tunnel
	// node addresses; a prefix wider than a single address (other than /0)
	// makes every address in it a tunnel node address.
	Local []netip.Prefix
	// Peers holds each peer's AllowedIPs. Single-address entries (/32,
	// /128) are tunnel node addresses; other non-default prefixes are
	// subnets routed through that peer; /0 entries make that peer an exit
	// node.
	Peers [][]netip.Prefix
	// Serve are the subnets this node offers to peers ([Serve] Subnets).
	Serve []netip.Prefix
	// ServeExit reports that this node serves as an exit node ([Serve]
	// Exit = true). It changes no class: traffic that is neither virtual nor
	// subnet is exit traffic either way. It is kept so that Routes says
	// everything the configuration says.
	ServeExit bool
}

// A Classifier answers class queries for one set of Routes. It is immutable
// and safe for concurrent use; build a new one with New when routes change.
// A nil or zero Classifier knows no routes: every flow is Exit.
type Classifier struct {
	node4, node6     spanSet // tunnel node addresses
	subnet4, subnet6 spanSet // routed non-default prefixes
}

// New builds a Classifier for r. It does not keep r or its slices.
func New(r Routes) *Classifier {
	var node, subnet [2][]span // by family: 0 IPv4, 1 IPv6

	for _, p := range r.Local {
		p, ok := unmapPrefix(p)
		if !ok {
			continue
		}
		f := family(p.Addr())
		if p.Bits() == 0 {
			node[f] = append(node[f], singleSpan(p.Addr()))
		} else {
			node[f] = append(node[f], prefixSpan(p))
		}
	}

	// Each peer and the [Serve] section is one route source; the coverage
	// rule (see the package comment) applies per source and family.
	addSubnets := func(ps []netip.Prefix, singlesAreNodes bool) {
		var routed [2][]span
		for _, p := range ps {
			p, ok := unmapPrefix(p)
			if !ok || p.Bits() == 0 {
				continue
			}
			f := family(p.Addr())
			if singlesAreNodes && p.IsSingleIP() {
				node[f] = append(node[f], singleSpan(p.Addr()))
				continue
			}
			routed[f] = append(routed[f], prefixSpan(p))
		}
		for f, spans := range routed {
			if len(spans) == 0 {
				continue
			}
			merged := mergeSpans(spans)
			if merged.size() >= defaultLike[f] {
				continue // a default route written in pieces
			}
			subnet[f] = append(subnet[f], merged...)
		}
	}
	for _, ps := range r.Peers {
		addSubnets(ps, true)
	}
	addSubnets(r.Serve, false)

	return &Classifier{
		node4:   mergeSpans(node[0]),
		node6:   mergeSpans(node[1]),
		subnet4: mergeSpans(subnet[0]),
		subnet6: mergeSpans(subnet[1]),
	}
}

// defaultLike is, by family, how many addresses one route source's
// non-default prefixes may cover before they count as a default route: a
// sixteenth of the family.
var defaultLike = [2]float64{0x1p28, 0x1p124}

// Classify returns the class of a flow between src and dst. The order of the
// two does not matter. It allocates nothing.
func (c *Classifier) Classify(src, dst netip.Addr) Class {
	if c == nil {
		return Exit
	}
	src, dst = src.Unmap(), dst.Unmap()
	srcNode, dstNode := c.isNode(src), c.isNode(dst)
	switch {
	case srcNode && dstNode:
		return Virtual
	case !srcNode && c.inSubnet(src), !dstNode && c.inSubnet(dst):
		return Subnet
	}
	return Exit
}

// IsNode reports whether a is a tunnel node address: one of this node's
// addresses, an address in its tunnel network, or a peer's single-address
// AllowedIPs entry.
func (c *Classifier) IsNode(a netip.Addr) bool {
	if c == nil {
		return false
	}
	return c.isNode(a.Unmap())
}

// isNode is IsNode for an unmapped address.
func (c *Classifier) isNode(a netip.Addr) bool {
	switch {
	case a.Is4():
		return c.node4.contains(addrKey(a))
	case a.Is6():
		return c.node6.contains(addrKey(a))
	}
	return false
}

// inSubnet reports whether the unmapped address a lies in a routed
// non-default prefix.
func (c *Classifier) inSubnet(a netip.Addr) bool {
	switch {
	case a.Is4():
		return c.subnet4.contains(addrKey(a))
	case a.Is6():
		return c.subnet6.contains(addrKey(a))
	}
	return false
}

// unmapPrefix returns p with an IPv4-mapped IPv6 prefix of at least 96
// bits turned into its IPv4 prefix. ok is false for an invalid prefix.
func unmapPrefix(p netip.Prefix) (q netip.Prefix, ok bool) {
	if !p.IsValid() {
		return netip.Prefix{}, false
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p, true
}

// family is 0 for an IPv4 address and 1 for an IPv6 one.
func family(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}
