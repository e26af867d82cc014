// Package forward owns the port forwards between the host network and the
// tunnel, both ways, and serving peers as a subnet router or exit node:
// local-to-tunnel (a host port relays to a tunnel address), tunnel-to-local
// (a port on the node's tunnel address relays to a host app) and served
// destinations (a peer's packets for a non-local address in an offered
// prefix are dialed on the host network).
//
// It relays bytes and datagrams; it knows nothing of WireGuard, counting or
// logging, and of gVisor only through package netstack's requests.
package forward
