// Package forward owns the port forwards between the host network and the
// tunnel, both ways, and serving peers as a subnet router or exit node:
// local-to-tunnel (a host port relays to a tunnel address), tunnel-to-local
// (a port on the node's tunnel address relays to a host app) and served
// destinations (a peer's packets for a non-local address in an offered
// prefix are dialed on the host network).
//
// It also owns a node's Set of running proxies and forwards: it starts and
// stops those (package proxy's included) that a file's sections ask for,
// applying only the difference on a reload, and reports them, with their
// connection counts, for status and metrics.
//
// Each forward bounds and counts its connections (relay.Limiter), logs
// through slog and records its connections to a monitor. It reaches the
// tunnel through a relay.Dialer (the node); it knows nothing of WireGuard
// or of flow statistics, and of gVisor only through package netstack's
// requests.
package forward
