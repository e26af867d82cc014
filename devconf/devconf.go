// Package devconf translates between the node's configuration and
// wireguard-go's device: the UAPI text that sets the interface and applies
// the difference between two peer lists, the device's status text read
// back, and the device's own AllowedIPs table filled from a peer list.
//
// Every function is pure: it resolves no names, opens nothing and keeps no
// state. It knows the wgconf types and wireguard-go's UAPI keys, and
// nothing of the stack, the flow log or the monitor.
package devconf

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"golang.zx2c4.com/wireguard/device"

	"github.com/wgsidecar/sidecar/wgconf"
)

// Interface is the UAPI text that sets the device's private key and
// listen port (0: the OS chooses).
func Interface(key wgconf.PrivateKey, listenPort int) string {
	return fmt.Sprintf("private_key=%s\nlisten_port=%d\n", key.Hex(), listenPort)
}

// Equal reports whether two peers configure the device alike.
func Equal(a, b wgconf.Peer) bool {
	return a.PublicKey == b.PublicKey && a.PresharedKey == b.PresharedKey && slices.Equal(a.AllowedIPs, b.AllowedIPs) &&
		a.Endpoint == b.Endpoint && a.PersistentKeepalive == b.PersistentKeepalive
}

// EndpointChanges lists the peers of next whose Endpoint is new or changed
// from was: the ones whose endpoint must be resolved before Diff.
func EndpointChanges(was, next []wgconf.Peer) []wgconf.Peer {
	old := byKey(was)
	var out []wgconf.Peer
	for _, p := range next {
		if prev, ok := old[p.PublicKey]; p.Endpoint != "" && (!ok || prev.Endpoint != p.Endpoint) {
			out = append(out, p)
		}
	}
	return out
}

// Diff is the UAPI text that turns a device configured with the peers was
// into one configured with next, touching only what changed: peers no
// longer listed are removed, new ones added, and of a changed peer only the
// changed keys are set (update_only), so untouched peers and a changed
// peer's session carry on.
//
// endpoints holds the resolved address of each peer listed by
// EndpointChanges; a peer missing from it (its name does not resolve yet)
// gets no endpoint line. With announce, every new peer with an Endpoint
// gets a persistent keepalive of at least 1 s, which makes wireguard-go
// send a keepalive (and so start a handshake) at once; restore is then the
// UAPI text that sets those peers' keepalive back to what the file asks,
// to be applied after set. Both are empty when nothing changes.
func Diff(was, next []wgconf.Peer, endpoints map[wgconf.PublicKey]netip.AddrPort, announce bool) (set, restore string, err error) {
	old := byKey(was)
	seen := make(map[wgconf.PublicKey]bool, len(next))
	var b, r strings.Builder
	for _, p := range next {
		if seen[p.PublicKey] {
			return "", "", fmt.Errorf("peer %s listed twice", p.PublicKey)
		}
		seen[p.PublicKey] = true
		prev, existed := old[p.PublicKey]
		if existed && Equal(prev, p) {
			continue
		}
		keepalive := p.PersistentKeepalive
		if announce && !existed && p.Endpoint != "" {
			keepalive = max(keepalive, 1)
		}
		peerLines(&b, prev, p, existed, endpoints, keepalive)
		if keepalive != p.PersistentKeepalive {
			fmt.Fprintf(&r, "public_key=%s\nupdate_only=true\npersistent_keepalive_interval=%d\n", p.PublicKey.Hex(), p.PersistentKeepalive)
		}
	}
	for _, p := range was {
		if !seen[p.PublicKey] {
			fmt.Fprintf(&b, "public_key=%s\nremove=true\n", p.PublicKey.Hex())
		}
	}
	return b.String(), r.String(), nil
}

// peerLines writes the lines that configure p, given what the device has
// for it (prev, when existed).
func peerLines(b *strings.Builder, prev, p wgconf.Peer, existed bool, endpoints map[wgconf.PublicKey]netip.AddrPort, keepalive int) {
	fmt.Fprintf(b, "public_key=%s\n", p.PublicKey.Hex())
	if existed {
		b.WriteString("update_only=true\n")
	}
	if !existed || prev.PresharedKey != p.PresharedKey {
		fmt.Fprintf(b, "preshared_key=%s\n", p.PresharedKey.Hex())
	}
	if !existed || !slices.Equal(prev.AllowedIPs, p.AllowedIPs) {
		b.WriteString("replace_allowed_ips=true\n")
		for _, a := range p.AllowedIPs {
			fmt.Fprintf(b, "allowed_ip=%s\n", a.Masked())
		}
	}
	if ep, ok := endpoints[p.PublicKey]; ok && p.Endpoint != "" && (!existed || prev.Endpoint != p.Endpoint) {
		fmt.Fprintf(b, "endpoint=%s\n", ep)
	}
	if !existed || prev.PersistentKeepalive != p.PersistentKeepalive || keepalive != p.PersistentKeepalive {
		fmt.Fprintf(b, "persistent_keepalive_interval=%d\n", keepalive)
	}
}

// Endpoint is the UAPI text that points an existing peer at ep.
func Endpoint(key wgconf.PublicKey, ep netip.AddrPort) string {
	return fmt.Sprintf("public_key=%s\nupdate_only=true\nendpoint=%s\n", key.Hex(), ep)
}

// Count says how many peers of next are new, gone or changed from was.
func Count(was, next []wgconf.Peer) (added, removed, changed int) {
	old := byKey(was)
	for _, p := range next {
		prev, ok := old[p.PublicKey]
		switch {
		case !ok:
			added++
		case !Equal(prev, p):
			changed++
		}
		delete(old, p.PublicKey)
	}
	return added, len(old), changed
}

func byKey(peers []wgconf.Peer) map[wgconf.PublicKey]wgconf.Peer {
	m := make(map[wgconf.PublicKey]wgconf.Peer, len(peers))
	for _, p := range peers {
		m[p.PublicKey] = p
	}
	return m
}

// Routes is wireguard-go's own AllowedIPs table (the longest-prefix trie
// the device routes outgoing packets with) filled from a peer list, with
// one stand-in device.Peer per configured peer: it answers which peer the
// device, configured with the same peers, sends a packet for an address
// to. The table is not the device's and is never handed to it. It is
// read-only once made and safe for concurrent use.
type Routes struct {
	table device.AllowedIPs
	keys  map[*device.Peer]wgconf.PublicKey
}

// AllowedIPs makes the Routes of peers.
func AllowedIPs(peers []wgconf.Peer) *Routes {
	r := &Routes{keys: make(map[*device.Peer]wgconf.PublicKey, len(peers))}
	for _, p := range peers {
		stand := &device.Peer{}
		r.keys[stand] = p.PublicKey
		for _, a := range p.AllowedIPs {
			r.table.Insert(a.Masked(), stand)
		}
	}
	return r
}

// Covers reports whether a peer takes packets for dst, an address as 4
// or 16 bytes.
func (r *Routes) Covers(dst []byte) bool { return r.table.Lookup(dst) != nil }

// PeerFor names the peer that takes packets for a.
func (r *Routes) PeerFor(a netip.Addr) (wgconf.PublicKey, bool) {
	key, ok := r.keys[r.table.Lookup(a.Unmap().AsSlice())]
	return key, ok
}
