package sidecar

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/wgsidecar/sidecar/classify"
	"github.com/wgsidecar/sidecar/logtail"
	"github.com/wgsidecar/sidecar/netlog"
	"github.com/wgsidecar/sidecar/wgconf"
	"github.com/wgsidecar/sidecar/wrap"
)

// startFlowLog starts the flow logger when the file has a [FlowLog]
// section or Options.FlowSink is set.
func (n *Node) startFlowLog() error {
	fl := n.cfg.FlowLog
	if fl == nil && n.opts.FlowSink == nil && n.cfg.LogStream == nil {
		return nil
	}
	var sinks []netlog.Sink
	if n.opts.FlowSink != nil {
		sinks = append(sinks, n.opts.FlowSink)
	}
	if ls := n.cfg.LogStream; ls != nil {
		stream, err := n.openLogStream(ls)
		n.logStream = stream
		if err != nil {
			return err
		}
		sinks = append(sinks, netlog.NewStreamSink(stream, 5*time.Second))
	}
	cfg := netlog.Config{NodeID: NodeID(n.public), PeerOf: n.peerOfEndpoint}
	if fl != nil {
		cfg.Window = fl.Window
		cfg.LogExitFlows = fl.LogExitFlows
		if fl.NodeID != "" {
			cfg.NodeID = fl.NodeID
		}
		switch fl.Output {
		case "":
		case "-":
			sinks = append(sinks, netlog.NewNDJSONSink(os.Stdout))
		default:
			fs, err := netlog.NewFileSink(fl.Output)
			if err != nil {
				return fmt.Errorf("sidecar: flow log: %w", err)
			}
			sinks = append(sinks, fs)
		}
	}
	if len(sinks) == 0 {
		n.log.Warn("flow log has no output: set [FlowLog] Output or [LogStream]")
		return nil
	}
	// The control socket's latest window and the metrics' window counts;
	// added last, it never turns the flow log on by itself.
	sinks = append(sinks, n.controlSink())
	cfg.Sink = teeSink(sinks)
	n.mu.Lock()
	peers := n.peers
	n.mu.Unlock()
	cfg.Routes = n.classRoutes(peers)
	cfg.OnError = func(err error) { n.log.Warn("flow log", "err", err) }
	n.flows = &netlog.Logger{}
	if err := n.flows.Startup(cfg, n.tun, n.bind); err != nil {
		return fmt.Errorf("sidecar: flow log: %w", err)
	}
	n.log.Info("flow log on", "node_id", cfg.NodeID, "window", cfg.Window.String())
	return nil
}

// openLogStream starts the upload of the flow log to a collector
// ([LogStream]), with its disk buffer.
func (n *Node) openLogStream(ls *wgconf.LogStream) (*logtail.Logger, error) {
	priv, err := logtail.ParsePrivateID(ls.PrivateID)
	if err != nil {
		return nil, fmt.Errorf("sidecar: [LogStream] PrivateID: %w", err)
	}
	cfg := logtail.Config{
		BaseURL: ls.URL, Collection: ls.Collection, PrivateID: priv,
		BufferDir: ls.BufferDir, MaxBuffer: ls.MaxBuffer,
		Logger: n.log.With("component", "logtail"),
	}
	if ls.CopyID != "" {
		c, err := logtail.ParsePrivateID(ls.CopyID)
		if err != nil {
			return nil, fmt.Errorf("sidecar: [LogStream] CopyID: %w", err)
		}
		cfg.CopyID = &c
	}
	if cfg.BufferDir == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			dir = os.TempDir()
		}
		cfg.BufferDir = filepath.Join(dir, "wgsidecar", "logtail")
	}
	if n.opts.LogStreamFlush > 0 {
		cfg.FlushInterval = n.opts.LogStreamFlush
	}
	l, err := logtail.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("sidecar: [LogStream]: %w", err)
	}
	n.log.Info("log stream on", "collector", ls.URL, "collection", ls.Collection, "stream", priv.Public().String(), "buffer", cfg.BufferDir)
	return l, nil
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
// file sets none: "n" and 16 hex digits of the key's SHA-256. It is stable
// for a key and reveals nothing of it beyond what the public key does.
func NodeID(pub wgconf.PublicKey) string {
	sum := sha256.Sum256(pub[:])
	return "n" + hex.EncodeToString(sum[:8])
}

// classRoutes is what classifies flows: this node's addresses and offered
// subnets, and each peer's AllowedIPs.
func (n *Node) classRoutes(peers []wgconf.Peer) classify.Routes {
	r := classify.Routes{Local: n.cfg.Interface.Addresses}
	for _, p := range peers {
		r.Peers = append(r.Peers, p.AllowedIPs)
	}
	if sv := n.cfg.Serve; sv != nil {
		r.Serve = sv.Subnets
		r.ServeExit = sv.Exit
	}
	return r
}

// peerOfEndpoint names the peer behind a UDP endpoint by its tunnel
// address, for the source of physical-layer entries. Endpoints a peer used
// earlier are remembered, so a peer that roamed mid-window is still named.
func (n *Node) peerOfEndpoint(ep netip.AddrPort) netip.Addr {
	if m := n.peerOf.Load(); m != nil {
		if a, ok := (*m)[ep]; ok {
			return a
		}
	}
	status, err := n.peerStatus()
	if err != nil {
		return netip.Addr{}
	}
	n.mu.Lock()
	peers := n.peers
	n.mu.Unlock()
	m := map[netip.AddrPort]netip.Addr{}
	if old := n.peerOf.Load(); old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	for _, p := range peers {
		if st, ok := status[p.PublicKey]; ok && st.Endpoint.IsValid() {
			m[st.Endpoint] = tunnelAddr(p)
		}
	}
	n.peerOf.Store(&m)
	return m[ep]
}

// tunnelAddr is the address that names a peer: its first single-address
// AllowedIP (IPv4 first), else the first AllowedIP's address.
func tunnelAddr(p wgconf.Peer) netip.Addr {
	var v6 netip.Addr
	for _, a := range p.AllowedIPs {
		if a.IsSingleIP() {
			if a.Addr().Is4() {
				return a.Addr()
			}
			if !v6.IsValid() {
				v6 = a.Addr()
			}
		}
	}
	if v6.IsValid() {
		return v6
	}
	if len(p.AllowedIPs) > 0 {
		return p.AllowedIPs[0].Addr()
	}
	return netip.Addr{}
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

// teeSink writes every message to each of its sinks.
type teeSink []netlog.Sink

func (t teeSink) Write(ctx context.Context, m *netlog.Message) error {
	var errs []error
	for _, s := range t {
		if err := s.Write(ctx, m); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (t teeSink) Close() error {
	var errs []error
	for _, s := range t {
		if err := s.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
