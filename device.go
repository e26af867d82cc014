package sidecar

import (
	"golang.zx2c4.com/wireguard/device"

	"github.com/wgsidecar/sidecar/monitor"
	"github.com/wgsidecar/sidecar/wgdev"
	"github.com/wgsidecar/sidecar/wgnoise"
)

// wgDevice is what the node uses of its WireGuard device.
type wgDevice interface {
	IpcSet(uapi string) error
	IpcGet() (string, error)
	Up() error
	BindUpdate() error
	Close()
	Handshake(peer wgnoise.PublicKey) // start one now, if the peer exists
}

// stockDevice is wireguard-go's device as a wgDevice.
type stockDevice struct{ *device.Device }

func (d stockDevice) Handshake(key wgnoise.PublicKey) {
	if peer := d.LookupPeer(device.NoisePublicKey(key)); peer != nil {
		peer.SendHandshakeInitiation(false)
	}
}

// newDevice makes the node's WireGuard device on its counting tunnel and
// bind: wireguard-go's, or wgdev's when Options.OwnWireGuard asks for it.
// wgdev takes the stack's packets in push mode, unless the user's WrapTUN
// must see them: then it reads them from the tunnel device as
// wireguard-go does.
func (n *Node) newDevice(routed func(dst []byte) bool) wgDevice {
	logger := monitor.DeviceLogger(n.log, &n.mon)
	if !n.opts.OwnWireGuard {
		return stockDevice{device.NewDevice(n.tun, n.bind, logger)}
	}
	read := n.opts.WrapTUN != nil
	d := wgdev.New(wgdev.Config{TUN: n.tun, Bind: n.bind, Logger: logger, ReadTUN: read})
	if !read {
		n.stack.SetSender(n.tun.Outbound(monitor.TapSend(d.Send, &n.mon, routed)), wgdev.SendOffset, wgdev.SendTail)
	}
	return d
}
