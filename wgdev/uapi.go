package wgdev

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/ipc"

	"github.com/wgsidecar/sidecar/wgconf"
	"github.com/wgsidecar/sidecar/wgnoise"
)

// IPCError is a UAPI error: a code (a negated errno, as wireguard-go's
// ipc package defines them) and a message that never holds a key.
type IPCError struct {
	Code int64
	err  error
}

func (e *IPCError) Error() string    { return fmt.Sprintf("IPC error %d: %v", e.Code, e.err) }
func (e *IPCError) Unwrap() error    { return e.err }
func (e *IPCError) ErrorCode() int64 { return e.Code }

func ipcErrorf(code int64, format string, args ...any) *IPCError {
	return &IPCError{Code: code, err: fmt.Errorf(format, args...)}
}

// ipcPeer is the peer an IpcSet is configuring.
type ipcPeer struct {
	p       *peer // nil: lines are parsed and ignored (our own key, update_only of a missing peer, removed)
	created bool
	pkaOn   bool // persistent keepalive turned on
}

// IpcSet applies wireguard-go's UAPI "set" text: device keys, then for each
// public_key line the keys of that peer. A blank line ends it.
func (d *Device) IpcSet(uapi string) (err error) {
	d.ipcMu.Lock()
	defer d.ipcMu.Unlock()
	defer func() {
		if err != nil {
			d.log.Errorf("%v", err)
		}
	}()
	if d.shut.Load() {
		return ipcErrorf(ipc.IpcErrorIO, "device closed")
	}
	defer d.publishRoutes()
	var cur *ipcPeer
	sc := bufio.NewScanner(strings.NewReader(uapi))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			break
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			return ipcErrorf(ipc.IpcErrorProtocol, "failed to parse line %d: no '='", n)
		}
		switch {
		case key == "public_key":
			d.finishPeer(cur)
			cur, err = d.selectPeer(value)
		case cur == nil:
			err = d.setDeviceKey(key, value)
		default:
			err = d.setPeerKey(cur, key, value)
		}
		if err != nil {
			return err
		}
	}
	d.finishPeer(cur)
	return nil
}

// setDeviceKey handles one line of the device section.
func (d *Device) setDeviceKey(key, value string) error {
	switch key {
	case "private_key":
		var k wgnoise.PrivateKey
		if err := wgconf.DecodeHex(k[:], value); err != nil {
			return ipcErrorf(ipc.IpcErrorInvalid, "failed to set private_key: %w", err)
		}
		d.log.Verbosef("UAPI: Updating private key")
		d.setPrivateKey(k)
	case "listen_port":
		port, err := strconv.ParseUint(value, 10, 16)
		if err != nil {
			return ipcErrorf(ipc.IpcErrorInvalid, "failed to parse listen_port: %w", err)
		}
		d.log.Verbosef("UAPI: Updating listen port")
		d.port = uint16(port)
		if err := d.bindUpdateLocked(); err != nil {
			return ipcErrorf(ipc.IpcErrorPortInUse, "failed to set listen_port: %w", err)
		}
	case "fwmark":
		mark, err := strconv.ParseUint(value, 10, 32)
		if err != nil {
			return ipcErrorf(ipc.IpcErrorInvalid, "invalid fwmark: %w", err)
		}
		d.log.Verbosef("UAPI: Updating fwmark")
		if err := d.setMarkLocked(uint32(mark)); err != nil {
			return ipcErrorf(ipc.IpcErrorPortInUse, "failed to update fwmark: %w", err)
		}
	case "replace_peers":
		if value != "true" {
			return ipcErrorf(ipc.IpcErrorInvalid, "failed to set replace_peers, invalid value: %v", value)
		}
		d.log.Verbosef("UAPI: Removing all peers")
		d.removeAllPeers()
	default:
		return ipcErrorf(ipc.IpcErrorInvalid, "invalid UAPI device key: %v", key)
	}
	return nil
}

// selectPeer finds or creates the peer of a public_key line.
func (d *Device) selectPeer(value string) (*ipcPeer, error) {
	var key wgnoise.PublicKey
	if err := wgconf.DecodeHex(key[:], value); err != nil {
		return nil, ipcErrorf(ipc.IpcErrorInvalid, "failed to get peer by public key: %w", err)
	}
	if k := d.keys.Load(); k != nil && k.identity.Public() == key {
		return &ipcPeer{}, nil // our own key: ignored, as wireguard-go does
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if p := d.byKey[key]; p != nil {
		return &ipcPeer{p: p}, nil
	}
	p := newPeer(d, key)
	d.byKey[key] = p
	d.peers = append(d.peers, p)
	d.log.Verbosef("%s - UAPI: Created", p)
	return &ipcPeer{p: p, created: true}, nil
}

// finishPeer starts a configured peer on an up device: its keepalive if
// just turned on, and any staged packets.
func (d *Device) finishPeer(cur *ipcPeer) {
	if cur == nil || cur.p == nil || !d.up.Load() {
		return
	}
	cur.p.start()
	if cur.pkaOn {
		cur.p.sendKeepalive()
	}
	cur.p.sendStaged()
}

// setPeerKey handles one line of a peer section.
func (d *Device) setPeerKey(cur *ipcPeer, key, value string) error {
	switch key {
	case "update_only", "remove":
		if value != "true" {
			return ipcErrorf(ipc.IpcErrorInvalid, "failed to set %s, invalid value: %v", key, value)
		}
		if cur.p != nil && (key == "remove" || cur.created) {
			d.removePeer(cur.p)
		}
		if key == "remove" || cur.created {
			cur.p = nil
		}
	case "preshared_key":
		var psk wgnoise.PresharedKey
		if err := wgconf.DecodeHex(psk[:], value); err != nil {
			return ipcErrorf(ipc.IpcErrorInvalid, "failed to set preshared key: %w", err)
		}
		if cur.p != nil {
			cur.p.setPresharedKey(psk)
		}
	case "endpoint":
		ep, err := d.bind.ParseEndpoint(value)
		if err != nil {
			return ipcErrorf(ipc.IpcErrorInvalid, "failed to set endpoint %v: %w", value, err)
		}
		if cur.p != nil {
			cur.p.endpoint.Store(&endpointRef{ep: ep})
		}
	case "persistent_keepalive_interval":
		secs, err := strconv.ParseUint(value, 10, 16)
		if err != nil {
			return ipcErrorf(ipc.IpcErrorInvalid, "failed to set persistent keepalive interval: %w", err)
		}
		if cur.p != nil {
			old := cur.p.keepaliveInterval.Swap(uint32(secs))
			cur.pkaOn = old == 0 && secs != 0
		}
	default:
		return d.setPeerAllowedIPs(cur, key, value)
	}
	return nil
}

// setPeerAllowedIPs handles replace_allowed_ips, allowed_ip and
// protocol_version.
func (d *Device) setPeerAllowedIPs(cur *ipcPeer, key, value string) error {
	switch key {
	case "replace_allowed_ips":
		if value != "true" {
			return ipcErrorf(ipc.IpcErrorInvalid, "failed to replace allowedips, invalid value: %v", value)
		}
		if cur.p != nil {
			d.mu.Lock()
			for _, pfx := range cur.p.allowed {
				delete(d.owners, pfx)
			}
			cur.p.allowed = nil
			d.mu.Unlock()
		}
	case "allowed_ip":
		remove := strings.HasPrefix(value, "-")
		pfx, err := netip.ParsePrefix(strings.TrimPrefix(value, "-"))
		if err != nil {
			return ipcErrorf(ipc.IpcErrorInvalid, "failed to set allowed ip: %w", err)
		}
		if cur.p != nil {
			d.mu.Lock()
			d.setAllowedLocked(cur.p, pfx.Masked(), remove)
			d.mu.Unlock()
		}
	case "protocol_version":
		if value != "1" {
			return ipcErrorf(ipc.IpcErrorInvalid, "invalid protocol version: %v", value)
		}
	default:
		return ipcErrorf(ipc.IpcErrorInvalid, "invalid UAPI peer key: %v", key)
	}
	return nil
}

// setAllowedLocked gives pfx to p (taking it from its owner) or, with
// remove, takes it from p if p has it.
func (d *Device) setAllowedLocked(p *peer, pfx netip.Prefix, remove bool) {
	owner := d.owners[pfx]
	if remove && owner != p {
		return
	}
	if owner != nil {
		owner.allowed = deletePrefix(owner.allowed, pfx)
		delete(d.owners, pfx)
	}
	if !remove {
		d.owners[pfx] = p
		p.allowed = append(p.allowed, pfx)
	}
}

func deletePrefix(list []netip.Prefix, pfx netip.Prefix) []netip.Prefix {
	for i, q := range list {
		if q == pfx {
			return append(list[:i], list[i+1:]...)
		}
	}
	return list
}

// publishRoutes makes the packet paths see the current allowed IPs.
func (d *Device) publishRoutes() {
	d.mu.RLock()
	t := buildRoutes(d.owners)
	d.mu.RUnlock()
	d.routes.Store(t)
}

// removePeer stops p and drops it from the tables (under ipcMu).
func (d *Device) removePeer(p *peer) {
	d.log.Verbosef("%s - UAPI: Removing", p)
	d.mu.Lock()
	delete(d.byKey, p.key)
	for i, q := range d.peers {
		if q == p {
			d.peers = append(d.peers[:i], d.peers[i+1:]...)
			break
		}
	}
	for _, pfx := range p.allowed {
		delete(d.owners, pfx)
	}
	p.allowed = nil
	d.mu.Unlock()
	d.routes.Store(buildRoutesLocked(d))
	p.remove()
}

func buildRoutesLocked(d *Device) *routeTable {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return buildRoutes(d.owners)
}

func (d *Device) removeAllPeers() {
	for _, p := range d.peerList() {
		d.removePeer(p)
	}
}

// setPrivateKey changes the device's key: every peer's handshake is made
// anew (dropping its sessions), and a peer with the new public key is
// removed. The zero key clears it.
func (d *Device) setPrivateKey(k wgnoise.PrivateKey) {
	if cur := d.keys.Load(); cur != nil && cur.priv == k {
		return
	}
	var keys *localKeys
	if k != (wgnoise.PrivateKey{}) {
		id := wgnoise.NewIdentity(k)
		keys = &localKeys{priv: k, identity: id, guard: wgnoise.NewGuard(id)}
		if p := d.lookupPeer(id.Public()); p != nil {
			d.removePeer(p)
		}
	}
	d.keys.Store(keys)
	for _, p := range d.peerList() {
		p.resetHandshake(keys)
	}
}

// IpcGet returns the UAPI "get" text, as wireguard-go writes it.
func (d *Device) IpcGet() (string, error) {
	d.ipcMu.Lock()
	defer d.ipcMu.Unlock()
	var b strings.Builder
	if k := d.keys.Load(); k != nil {
		fmt.Fprintf(&b, "private_key=%s\n", hex.EncodeToString(k.priv[:]))
	}
	if d.port != 0 {
		fmt.Fprintf(&b, "listen_port=%d\n", d.port)
	}
	if d.mark != 0 {
		fmt.Fprintf(&b, "fwmark=%d\n", d.mark)
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	for _, p := range d.peers {
		p.writeStatus(&b)
	}
	return b.String(), nil
}

// writeStatus writes the peer's lines of IpcGet (under d.mu).
func (p *peer) writeStatus(b *strings.Builder) {
	p.hsMu.Lock()
	psk := p.psk
	p.hsMu.Unlock()
	fmt.Fprintf(b, "public_key=%s\npreshared_key=%s\nprotocol_version=1\n", hex.EncodeToString(p.key[:]), hex.EncodeToString(psk[:]))
	if ep := p.endpointOf(); ep != nil {
		fmt.Fprintf(b, "endpoint=%s\n", ep.DstToString())
	}
	ns := p.lastHandshake.Load()
	fmt.Fprintf(b, "last_handshake_time_sec=%d\nlast_handshake_time_nsec=%d\n", ns/int64(time.Second), ns%int64(time.Second))
	fmt.Fprintf(b, "tx_bytes=%d\nrx_bytes=%d\npersistent_keepalive_interval=%d\n", p.txBytes.Load(), p.rxBytes.Load(), p.keepaliveInterval.Load())
	for _, pfx := range p.allowed {
		fmt.Fprintf(b, "allowed_ip=%s\n", pfx)
	}
}
