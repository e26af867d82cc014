// Package control is the local control API of a running sidecar: JSON over
// HTTP on a unix socket that only the owner may use (mode 0600). A Server
// answers from a Provider (the node); a Client (the "sidecar status" and
// "sidecar flows" commands) asks.
//
// The API, version 1:
//
//	GET /v1/status   Status: the node, its peers, its listeners, its flow log
//	GET /v1/flows    Flows: the flow log's most recent window
//	POST /v1/reload  Reload: read the node's file again and apply the difference
//
// Errors are JSON too: {"error": "..."} with a 4xx or 5xx status.
//
// The socket's default place is DefaultSocket. control knows the node only
// through Provider and shares nothing else with it: no WireGuard, no
// netstack. The flow-log window travels as netlog messages, the same
// records the flow log writes.
package control

import (
	"context"
	"time"

	"github.com/wgsidecar/sidecar/netlog"
)

// API paths.
const (
	PathStatus  = "/v1/status"
	PathFlows   = "/v1/flows"
	PathMonitor = "/v1/monitor" // a stream of JSON lines, one per event
	PathReload  = "/v1/reload"  // POST
)

// Reloader is what a Provider also implements to serve PathReload: it
// reads the node's configuration file again and applies it. An error
// (a file that does not parse, a forward that could not start) is sent to
// the client as the answer's error, with status 422; its text must hold no
// secret.
type Reloader interface {
	Reload(ctx context.Context) (*Reload, error)
}

// Reload is the answer to POST /v1/reload: what was applied.
type Reload struct {
	PeersAdded   int `json:"peersAdded"`
	PeersRemoved int `json:"peersRemoved"`
	PeersChanged int `json:"peersChanged"`
	// Started and Stopped name the proxies and forwards started and
	// stopped ("[Socks5] 127.0.0.1:1080").
	Started []string `json:"started"`
	Stopped []string `json:"stopped"`
	// NeedRestart names the sections whose changes a running node cannot
	// apply.
	NeedRestart []string `json:"needRestart"`
}

// Streamer is what a Provider also implements to serve PathMonitor: it
// calls emit with one JSON line per event until ctx ends or emit fails.
// query is the request's query string (filters).
type Streamer interface {
	Stream(ctx context.Context, query map[string][]string, emit func(line []byte) error) error
}

// Provider answers the API's questions. Its methods are called
// concurrently, one call per request; ctx ends when the client goes away
// or the server closes.
type Provider interface {
	Status(ctx context.Context) (*Status, error)
	Flows(ctx context.Context) (*Flows, error)
}

// Status is the answer to GET /v1/status.
type Status struct {
	// Time is when the node answered, by its clock: handshake ages and
	// the uptime are relative to it.
	Time      time.Time `json:"time"`
	PublicKey string    `json:"publicKey"`
	// NodeID is the node's ID in its flow log ([FlowLog] NodeID, or
	// derived from the public key).
	NodeID string `json:"nodeId"`
	// Addresses are the node's tunnel addresses with their prefix
	// lengths, as the file's Address gives them ("10.0.0.1/32").
	Addresses  []string  `json:"addresses"`
	ListenPort int       `json:"listenPort"`
	Started    time.Time `json:"started"`
	// UptimeSeconds is Time - Started.
	UptimeSeconds float64    `json:"uptimeSeconds"`
	Peers         []Peer     `json:"peers"`
	Listeners     []Listener `json:"listeners"`
	FlowLog       FlowLog    `json:"flowLog"`
}

// Peer is one peer as the WireGuard device sees it, with its configuration.
type Peer struct {
	PublicKey string `json:"publicKey"`
	// Endpoint is the peer's current UDP endpoint ("ip:port"); empty
	// until one is known.
	Endpoint   string   `json:"endpoint,omitempty"`
	AllowedIPs []string `json:"allowedIPs"`
	// LatestHandshake is the time of the latest completed handshake;
	// absent when there was none.
	LatestHandshake time.Time `json:"latestHandshake,omitzero"`
	RxBytes         uint64    `json:"rxBytes"`
	TxBytes         uint64    `json:"txBytes"`
	// PersistentKeepalive is the keepalive interval in seconds; 0 is off.
	PersistentKeepalive int `json:"persistentKeepalive,omitempty"`
}

// Listener is a forward or proxy accepting connections.
type Listener struct {
	// Kind says what it is: "tcp local-to-tunnel", "udp tunnel-to-local",
	// "socks5", "http", …
	Kind string `json:"kind"`
	// Listen is where it accepts: a host address ("127.0.0.1:8080"), or
	// a port on the tunnel addresses (":80").
	Listen string `json:"listen"`
	// Target is where it relays to; empty for proxies, whose clients
	// choose.
	Target string `json:"target,omitempty"`
	// Conns counts its connections (UDP: sessions); absent when it does
	// not count them.
	Conns *Conns `json:"conns,omitempty"`
}

// Conns counts a listener's connections.
type Conns struct {
	Open     int    `json:"open"`     // open now
	Accepted uint64 `json:"accepted"` // accepted since it started
}

// FlowLog is the state of the node's flow log.
type FlowLog struct {
	Enabled bool `json:"enabled"`
	// Window is the window length ("5s"); empty when off.
	Window string `json:"window,omitempty"`
	// Windows and Messages count the windows with traffic and the
	// messages (a window may be split into several) written since start.
	Windows  uint64 `json:"windows"`
	Messages uint64 `json:"messages"`
}

// Flows is the answer to GET /v1/flows.
type Flows struct {
	FlowLog FlowLog `json:"flowLog"`
	// Messages are the most recent completed window with traffic, as the
	// flow log wrote it (several messages when it was split); empty
	// before the first such window and when the flow log is off.
	Messages []netlog.Message `json:"messages"`
}

// errorBody is the JSON body of an error answer.
type errorBody struct {
	Error string `json:"error"`
}
