package sidecar

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/wgsidecar/sidecar/netlog"
	"github.com/wgsidecar/sidecar/wgconf"
	"github.com/wgsidecar/sidecar/wrap"
)

// startFlowLog starts the flow log (package netlog) when the file has a
// [FlowLog], [LogStream] or [IPFIX] section or Options.FlowSink is set.
func (n *Node) startFlowLog() error {
	fl, err := netlog.StartNode(netlog.NodeConfig{
		FlowLog: n.cfg.FlowLog, LogStream: n.cfg.LogStream, IPFIX: n.cfg.IPFIX, Extra: n.opts.FlowSink,
		KeepLatest: n.cfg.Control != nil, NodeID: NodeID(n.public),
		Routes: netlog.ClassRoutes(n.cfg, n.PeerConfig()), PeerEndpoints: n.peerEndpoints,
		StreamFlush: n.opts.LogStreamFlush, Log: n.log, At: n.cfg.At,
	}, n.tun, n.bind)
	if err != nil {
		return err
	}
	n.flows = fl
	return nil
}

// shutdownFlowLog writes the last window; the tunnel must still be up.
func (n *Node) shutdownFlowLog() {
	if n.flows == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.flows.Shutdown(ctx); err != nil {
		n.log.Warn("flow log: last window not written", "err", err)
	}
}

// NodeID is the flow-log node ID derived from a public key, used when the
// file sets none (see netlog.NodeID).
func NodeID(pub wgconf.PublicKey) string { return netlog.NodeID(pub) }

// flowNodeID is the node's ID in its flow log.
func (n *Node) flowNodeID() string {
	if fl := n.cfg.FlowLog; fl != nil && fl.NodeID != "" {
		return fl.NodeID
	}
	return NodeID(n.public)
}

// peerEndpoints is each peer's current UDP endpoint with its AllowedIPs,
// for the flow log's names of peers.
func (n *Node) peerEndpoints() map[netip.AddrPort][]netip.Prefix {
	status, err := n.deviceStatus()
	if err != nil {
		return nil
	}
	m := map[netip.AddrPort][]netip.Prefix{}
	for _, p := range n.PeerConfig() {
		if st, ok := status.Peers[p.PublicKey]; ok && st.Endpoint.IsValid() {
			m[st.Endpoint] = p.AllowedIPs
		}
	}
	return m
}

// CutFlows ends the current flow-log window now and writes its messages
// before returning. It fails when flow logging is off.
func (n *Node) CutFlows(ctx context.Context) error {
	if n.flows == nil {
		return errors.New("sidecar: flow logging is off")
	}
	return n.flows.Cut(ctx)
}

// Messages counts WireGuard handshake and keepalive messages this node's
// socket sent and received since it started.
func (n *Node) Messages() (sent, received wrap.MessageCounts) { return n.bind.Messages() }
