// Package netlog is the flow logger: it cuts the flow statistics of both
// layers into windows, turns each window into flow-log messages and writes
// them to sinks.
//
// A Logger switches counting on in the wrappers it is given (any Device,
// such as package wrap's TUN and Bind), keeps the window's tables in a
// stats.Stats and cuts them every Window, early when a table fills. It
// classifies each virtual-layer flow by the Routes (package classify) when
// the flow is first seen in a window, and names the peer behind each
// physical endpoint (PeerOf). Build makes the messages of one window from
// these plain flows: it sorts them, sorts virtual-layer flows into
// virtual, subnet and exit traffic by their class, anonymises exit traffic
// unless detailed exit logging is on, and splits a window that would not
// fit in MaxMessageSize into several messages. A Sink writes the messages
// out: NDJSONSink (a stream or a file), MemorySink (kept in process) or
// StreamSink (a log stream, through an EntryWriter such as
// *logtail.Logger).
//
// netlog depends on packages stats and classify and on plain addresses; it
// knows nothing of gVisor or WireGuard (the wrappers are Devices to it),
// nor of the log stream's protocol.
package netlog

import (
	"net/netip"
	"time"

	"github.com/wgsidecar/sidecar/classify"
)

// Message is one node's flow log for one window (SPEC §6). The JSON field
// names are those of the flow-log API.
type Message struct {
	// NodeID is the stable ID of the node that wrote the message.
	NodeID string `json:"nodeId"`
	// Logged is when the collector stored the message; nil when the node
	// writes it.
	Logged *time.Time `json:"logged,omitempty"`
	// Start and End bound the window, both inclusive, in UTC. The next
	// window starts 1 ns after End.
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`

	// VirtualTraffic is traffic between tunnel node addresses. Src is
	// always one of this node's addresses.
	VirtualTraffic []ConnectionCounts `json:"virtualTraffic,omitempty"`
	// SubnetTraffic is traffic with one end in an offered subnet. When this
	// node uses a subnet router, Src is this node's address and Dst is in
	// the subnet; when it is the subnet router, Src is the subnet address it
	// acts for and Dst is the node that uses the subnet.
	SubnetTraffic []ConnectionCounts `json:"subnetTraffic,omitempty"`
	// ExitTraffic is traffic through a default route: this node using an
	// exit node or being one. Unless detailed exit logging is on it is
	// anonymised: protocol 0, no ports, no address but tunnel node
	// addresses, and counts summed per tunnel node address (see Build).
	ExitTraffic []ConnectionCounts `json:"exitTraffic,omitempty"`
	// PhysicalTraffic is what the UDP socket carried: Src is a peer's
	// tunnel address, Dst the peer's UDP endpoint; protocol and source
	// port are 0.
	PhysicalTraffic []ConnectionCounts `json:"physicalTraffic,omitempty"`
}

// ConnectionCounts is one connection and its counts in one window. Tx counts
// what this node sent, Rx what it received.
type ConnectionCounts struct {
	// Proto is the IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6),
	// 0 at the physical layer and in anonymised exit traffic.
	Proto uint8 `json:"proto"`
	// Src and Dst are "ip:port", as netip.AddrPort prints it:
	// "100.11.22.33:4567", "[fd00::1]:80". Port 0 stands for no port (a
	// physical-layer source, ICMP, an anonymised exit entry). An address
	// removed by anonymisation is the empty string.
	Src string `json:"src"`
	Dst string `json:"dst"`

	TxPackets uint64 `json:"txPkts"`
	TxBytes   uint64 `json:"txBytes"`
	RxPackets uint64 `json:"rxPkts"`
	RxBytes   uint64 `json:"rxBytes"`
}

// Flow is one flow of one window as the statistics layer hands it over.
type Flow struct {
	Proto uint8
	// Src is always this node's side of the flow, Dst the other side.
	Src, Dst netip.AddrPort
	// Class is the class the flow was given when first seen in the window;
	// 0 for physical flows, where it is ignored.
	Class classify.Class

	TxPackets, TxBytes, RxPackets, RxBytes uint64
}

// MaxMessageSize bounds a message's JSON encoding (json.Marshal of the
// Message, without a trailing newline): Build splits a window that would
// exceed it.
const MaxMessageSize = 256 << 10
