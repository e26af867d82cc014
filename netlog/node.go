package netlog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/wgsidecar/sidecar/classify"
	"github.com/wgsidecar/sidecar/ipfix"
	"github.com/wgsidecar/sidecar/logtail"
	"github.com/wgsidecar/sidecar/metrics"
	"github.com/wgsidecar/sidecar/wgconf"
)

// NodeConfig is what a node's flow log is made from: its file's
// [FlowLog], [LogStream] and [IPFIX] sections and what the node knows.
type NodeConfig struct {
	FlowLog   *wgconf.FlowLog   // nil: no [FlowLog] section
	LogStream *wgconf.LogStream // nil: no upload
	IPFIX     *wgconf.IPFIX     // nil: no IPFIX export
	// Extra, if set, receives the flow log too and turns it on by itself
	// (the embedding API's Options.FlowSink).
	Extra Sink
	// KeepLatest keeps the latest window's messages for Latest (the
	// control socket's flows).
	KeepLatest bool
	// NodeID is used when [FlowLog] sets none.
	NodeID string
	Routes classify.Routes
	// PeerEndpoints returns each peer's current UDP endpoint with its
	// AllowedIPs, to name the peers in physical-layer entries (see
	// peerNamer).
	PeerEndpoints func() map[netip.AddrPort][]netip.Prefix
	// StreamFlush is how long an entry may wait before its upload;
	// logtail's default when zero.
	StreamFlush time.Duration
	Log         *slog.Logger
	// At, if set, names the file, line and key of a section's key in
	// an error starting it (wgconf.Config.At).
	At func(section any, key string, err error) error
}

// NodeLog is the flow log of one node, as its configuration asks: the
// Logger over the node's two counting wrappers, its sinks (an NDJSON file
// or stdout, the log stream to a collector, the embedder's sink) and the
// record of recent windows. Its methods are safe for concurrent use.
type NodeLog struct {
	*Logger
	window time.Duration
	stream *logtail.Logger // nil without [LogStream]
	ipfix  *ipfix.Exporter // nil without [IPFIX]
	recent *Recent
}

// NodeID is the flow-log node ID derived from a public key, used when the
// file sets none: "n" and 16 hex digits of the key's SHA-256. It is stable
// for a key and reveals nothing of it beyond what the public key does.
func NodeID(pub wgconf.PublicKey) string {
	sum := sha256.Sum256(pub[:])
	return "n" + hex.EncodeToString(sum[:8])
}

// StartNode starts the flow log of a node over its virtual (tun) and
// physical (sock) counting wrappers. It returns nil, nil when the
// configuration asks for no flow log: no [FlowLog] or [LogStream] section
// and no Extra sink. A [FlowLog] section with no Output still turns it on:
// its windows are kept for Recent (the control socket's flows) and
// counted in the metrics.
func StartNode(c NodeConfig, tun, sock Device) (*NodeLog, error) {
	fl := c.FlowLog
	if fl == nil && c.Extra == nil && c.LogStream == nil && c.IPFIX == nil {
		return nil, nil
	}
	nl := &NodeLog{Logger: &Logger{}, window: DefaultWindow, recent: &Recent{Keep: c.KeepLatest}}
	sinks, err := nl.sinks(c)
	if err != nil {
		closeSinks(sinks)
		return nil, c.at(err)
	}
	outputs := len(sinks)
	sinks = append(sinks, nl.recent)
	names := &peerNamer{endpoints: c.PeerEndpoints}
	cfg := Config{NodeID: c.NodeID, Sink: Tee(sinks), Routes: c.Routes, PeerOf: names.name, LearnPeers: names.learn,
		OnError: func(err error) { c.Log.Warn("flow log", "err", err) }}
	if fl != nil {
		cfg.Window, cfg.LogExitFlows = fl.Window, fl.LogExitFlows
		if fl.NodeID != "" {
			cfg.NodeID = fl.NodeID
		}
		if fl.Window > 0 {
			nl.window = fl.Window
		}
	}
	if err := nl.Startup(cfg, tun, sock); err != nil {
		cfg.Sink.Close()
		return nil, fmt.Errorf("sidecar: flow log: %w", err)
	}
	c.Log.Info("flow log on", "node_id", cfg.NodeID, "window", nl.window.String(), "outputs", outputs)
	return nl, nil
}

// at places err, an error opening an output, in the file when c.At is
// set: a *sinkError names its section and key.
func (c NodeConfig) at(err error) error {
	var se *sinkError
	if c.At == nil || !errors.As(err, &se) {
		return err
	}
	return c.At(se.section, se.key, err)
}

// sinkError is an error opening the output that key of section names.
type sinkError struct {
	section any
	key     string
	err     error
}

func (e *sinkError) Error() string { return e.err.Error() }
func (e *sinkError) Unwrap() error { return e.err }

// sinks opens the outputs the configuration names.
func (nl *NodeLog) sinks(c NodeConfig) ([]Sink, error) {
	var sinks []Sink
	if c.Extra != nil {
		sinks = append(sinks, c.Extra)
	}
	if c.LogStream != nil {
		stream, key, err := openStream(c.LogStream, c.StreamFlush, c.Log)
		if err != nil {
			return sinks, &sinkError{c.LogStream, key, err}
		}
		nl.stream = stream
		sinks = append(sinks, NewStreamSink(stream, 5*time.Second))
	}
	if c.IPFIX != nil {
		nodeID := c.NodeID
		if c.FlowLog != nil && c.FlowLog.NodeID != "" {
			nodeID = c.FlowLog.NodeID
		}
		exp, sink, err := openIPFIX(c.IPFIX, nodeID, c.Log)
		if err != nil {
			return sinks, err
		}
		nl.ipfix = exp
		sinks = append(sinks, sink)
	}
	if fl := c.FlowLog; fl != nil {
		switch fl.Output {
		case "":
		case "-":
			sinks = append(sinks, NewNDJSONSink(os.Stdout))
		default:
			fs, err := NewFileSink(fl.Output)
			if err != nil {
				return sinks, &sinkError{fl, "Output", fmt.Errorf("sidecar: flow log: %w", err)}
			}
			sinks = append(sinks, fs)
		}
	}
	return sinks, nil
}

func closeSinks(sinks []Sink) {
	for _, s := range sinks {
		s.Close()
	}
}

// openStream starts the upload of the flow log to a collector
// ([LogStream]), with its disk buffer. On error it names the key at
// fault.
func openStream(ls *wgconf.LogStream, flush time.Duration, log *slog.Logger) (*logtail.Logger, string, error) {
	priv, err := logtail.ParsePrivateID(ls.PrivateID)
	if err != nil {
		return nil, "PrivateID", fmt.Errorf("sidecar: [LogStream] PrivateID: %w", err)
	}
	cfg := logtail.Config{
		BaseURL: ls.URL, Collection: ls.Collection, PrivateID: priv,
		BufferDir: ls.BufferDir, MaxBuffer: ls.MaxBuffer, FlushInterval: flush,
		Logger: log.With("component", "logtail"),
	}
	if ls.CopyID != "" {
		c, err := logtail.ParsePrivateID(ls.CopyID)
		if err != nil {
			return nil, "CopyID", fmt.Errorf("sidecar: [LogStream] CopyID: %w", err)
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
	l, err := logtail.New(cfg)
	if err != nil {
		return nil, "BufferDir", fmt.Errorf("sidecar: [LogStream]: %w", err)
	}
	log.Info("log stream on", "collector", ls.URL, "collection", ls.Collection, "stream", priv.Public().String(), "buffer", cfg.BufferDir)
	return l, "", nil
}

// Window is the length of the flow log's windows.
func (nl *NodeLog) Window() time.Duration { return nl.window }

// Recent is the record of the windows written so far.
func (nl *NodeLog) Recent() *Recent { return nl.recent }

// RegisterMetrics registers the flow log's and its log stream's counters
// on r.
func (nl *NodeLog) RegisterMetrics(r *metrics.Registry) {
	r.Register(func() []metrics.Family {
		windows, messages := nl.recent.Counts()
		w := metrics.One("wgsidecar_flowlog_windows_total", metrics.Counter, "Flow-log windows with traffic written (empty windows write nothing).", float64(windows))
		m := metrics.One("wgsidecar_flowlog_messages_total", metrics.Counter, "Flow-log messages written (a large window is split into several).", float64(messages))
		e := metrics.One("wgsidecar_flowlog_early_cuts_total", metrics.Counter, "Flow-log windows cut before their time because a flow table filled up.", float64(nl.EarlyCuts()))
		size := metrics.Family{Name: "wgsidecar_flowlog_window_flows", Type: metrics.Gauge, Help: "Flows in the current flow-log window so far (the size of its flow tables), by layer."}
		v, p := nl.Flows()
		size.Add(float64(v), "layer", "virtual")
		size.Add(float64(p), "layer", "physical")
		return []metrics.Family{w, m, e, size}
	})
	if nl.stream != nil {
		nl.stream.RegisterMetrics(r)
	}
	if exp := nl.ipfix; exp != nil {
		r.Register(func() []metrics.Family { return ipfixMetrics(exp) })
	}
}

// Tee is a sink that writes every message to each of its sinks.
type Tee []Sink

func (t Tee) Write(ctx context.Context, m *Message) error {
	var errs []error
	for _, s := range t {
		if err := s.Write(ctx, m); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (t Tee) Close() error {
	var errs []error
	for _, s := range t {
		if err := s.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ClassRoutes is what classifies a node's flows: its addresses and offered
// subnets ([Serve]), and each peer's AllowedIPs.
func ClassRoutes(cfg *wgconf.Config, peers []wgconf.Peer) classify.Routes {
	r := classify.Routes{Local: cfg.Interface.Addresses}
	for _, p := range peers {
		r.Peers = append(r.Peers, p.AllowedIPs)
	}
	if sv := cfg.Serve; sv != nil {
		r.Serve = sv.Subnets
		r.ServeExit = sv.Exit
	}
	return r
}
