package wgdev

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/wgsidecar/sidecar/wgnoise"
)

// SendOffset is the offset Send expects of each packet in its buffer: room
// for the transport header written in front of it.
const SendOffset = wgnoise.TransportHeaderSize

// SendTail is the room Send needs behind each packet in its buffer: up to
// 15 bytes of padding and the tag.
const SendTail = 15 + wgnoise.TagSize

// handshakeQueueSize bounds the queue of handshake messages waiting for the
// handshake goroutine; beyond it they are dropped.
const handshakeQueueSize = 1024

// ErrClosed is what Send and Up return once the device is closed.
var ErrClosed = errors.New("wgdev: device closed")

// Config is what a Device runs on.
type Config struct {
	TUN    tun.Device     // Write (inbound delivery) and Close; Read only with ReadTUN
	Bind   conn.Bind      // the UDP sockets
	Logger *device.Logger // nil: discard
	// ReadTUN makes the device read its outbound packets from TUN itself,
	// in one goroutine that hands each batch to Send, as wireguard-go
	// does: for a TUN that cannot push its packets to Send.
	ReadTUN bool
}

// localKeys is the device's static identity; replaced whole when the
// private key changes, read without a lock.
type localKeys struct {
	priv     wgnoise.PrivateKey
	identity *wgnoise.Identity
	guard    *wgnoise.Guard
}

// Device is a WireGuard device. The zero value is not usable; call New.
type Device struct {
	tun  tun.Device
	bind conn.Bind
	log  *device.Logger
	mtu  int // the TUN's, for padding: a packet is padded to 16 bytes but not beyond it

	ipcMu sync.Mutex // serialises IpcSet, Up, Down, BindUpdate and Close
	up    atomic.Bool
	shut  atomic.Bool // closed
	port  uint16      // under ipcMu: the port asked for, then the port bound
	mark  uint32      // under ipcMu
	recv  sync.WaitGroup

	keys atomic.Pointer[localKeys] // nil without a private key

	mu     sync.RWMutex // guards peers, byKey and owners
	peers  []*peer      // in the order added
	byKey  map[wgnoise.PublicKey]*peer
	owners map[netip.Prefix]*peer     // each allowed IP's peer
	routes atomic.Pointer[routeTable] // snapshot of owners for the packet paths

	indices indexTable

	hsQueue        chan handshakeMsg
	hsStop         chan struct{}
	hsDone         chan struct{}
	underLoadUntil atomic.Int64 // unix nanoseconds
	forceUnderLoad atomic.Bool  // test hook: always under load
	limit          limiter      // handshakes per source while under load

	scratch sync.Pool // *sendScratch

	readDone chan struct{} // closed when the ReadTUN goroutine ends; nil without it
}

// New returns a device that is down, with no key and no peers.
func New(cfg Config) *Device {
	log := cfg.Logger
	if log == nil {
		log = &device.Logger{Verbosef: device.DiscardLogf, Errorf: device.DiscardLogf}
	}
	d := &Device{
		tun:     cfg.TUN,
		bind:    cfg.Bind,
		log:     log,
		byKey:   map[wgnoise.PublicKey]*peer{},
		owners:  map[netip.Prefix]*peer{},
		hsQueue: make(chan handshakeMsg, handshakeQueueSize),
		hsStop:  make(chan struct{}),
		hsDone:  make(chan struct{}),
	}
	d.mtu = device.DefaultMTU
	if cfg.TUN != nil {
		if mtu, err := cfg.TUN.MTU(); err == nil && mtu > 0 {
			d.mtu = mtu
		}
	}
	d.indices.init()
	d.routes.Store(&routeTable{})
	d.scratch.New = func() any { return new(sendScratch) }
	go d.handshakeLoop()
	if cfg.ReadTUN {
		d.readDone = make(chan struct{})
		go d.readTUN()
	}
	return d
}

// Up opens the bind and starts the peers' timers; packets flow.
func (d *Device) Up() error {
	d.ipcMu.Lock()
	defer d.ipcMu.Unlock()
	if d.shut.Load() {
		return ErrClosed
	}
	if d.up.Load() {
		return nil
	}
	if err := d.openBindLocked(); err != nil {
		return err
	}
	d.up.Store(true)
	for _, p := range d.peerList() {
		p.start()
	}
	return nil
}

// Down closes the bind, stops the timers and forgets every session.
func (d *Device) Down() error {
	d.ipcMu.Lock()
	defer d.ipcMu.Unlock()
	d.downLocked()
	return nil
}

func (d *Device) downLocked() {
	if !d.up.Swap(false) {
		return
	}
	d.closeBindLocked()
	for _, p := range d.peerList() {
		p.stop()
	}
}

// Close takes the device down, stops its goroutines and closes the TUN.
func (d *Device) Close() {
	d.ipcMu.Lock()
	defer d.ipcMu.Unlock()
	if d.shut.Swap(true) {
		return
	}
	d.downLocked()
	close(d.hsStop)
	<-d.hsDone
	d.mu.Lock()
	for _, p := range d.peers {
		p.remove()
	}
	d.peers, d.byKey, d.owners = nil, map[wgnoise.PublicKey]*peer{}, map[netip.Prefix]*peer{}
	d.routes.Store(&routeTable{})
	d.mu.Unlock()
	if d.tun != nil {
		_ = d.tun.Close()
	}
	if d.readDone != nil {
		<-d.readDone // closing the TUN ends its Read
	}
}

// BindUpdate reopens the bind on the same port (a no-op while down).
func (d *Device) BindUpdate() error {
	d.ipcMu.Lock()
	defer d.ipcMu.Unlock()
	return d.bindUpdateLocked()
}

func (d *Device) bindUpdateLocked() error {
	if !d.up.Load() {
		return nil
	}
	d.closeBindLocked()
	if err := d.openBindLocked(); err != nil {
		return err
	}
	d.clearSources()
	return nil
}

// setMarkLocked sets the firewall mark of the bind's sockets (0: none),
// now if the device is up and whenever the bind is opened. As in
// wireguard-go, the mark is kept even if the bind refuses it, and a
// change makes every peer forget its sticky source: the mark can change
// the route, and with it the local address. Under ipcMu.
func (d *Device) setMarkLocked(mark uint32) error {
	if mark == d.mark {
		return nil
	}
	d.mark = mark
	if d.up.Load() {
		if err := d.bind.SetMark(mark); err != nil {
			return err
		}
	}
	d.clearSources()
	return nil
}

// clearSources makes every peer's endpoint forget its sticky source.
func (d *Device) clearSources() {
	for _, p := range d.peerList() {
		p.clearEndpointSrc()
	}
}

// openBindLocked opens the bind, gives it the firewall mark if there is
// one, and starts one receive goroutine per receive function.
func (d *Device) openBindLocked() error {
	fns, port, err := d.bind.Open(d.port)
	if err != nil {
		return err
	}
	if d.mark != 0 {
		if err := d.bind.SetMark(d.mark); err != nil {
			// As wireguard-go: a mark that cannot be set fails the
			// opening; the sockets must not go out unmarked.
			if cerr := d.bind.Close(); cerr != nil {
				d.log.Errorf("Unable to close bind: %v", cerr)
			}
			return err
		}
	}
	d.port = port
	for _, fn := range fns {
		d.recv.Add(1)
		go d.receiveLoop(fn)
	}
	return nil
}

func (d *Device) closeBindLocked() {
	if err := d.bind.Close(); err != nil {
		d.log.Errorf("Unable to close bind: %v", err)
	}
	d.recv.Wait()
}

// Handshake starts a handshake with peer now, if the device has it.
func (d *Device) Handshake(key wgnoise.PublicKey) {
	d.mu.RLock()
	p := d.byKey[key]
	d.mu.RUnlock()
	if p != nil && d.up.Load() {
		p.sendInitiation(false)
	}
}

// peerList is a copy of the peers, to act on without holding d.mu.
func (d *Device) peerList() []*peer {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return append([]*peer(nil), d.peers...)
}

func (d *Device) lookupPeer(key wgnoise.PublicKey) *peer {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.byKey[key]
}

// isUnderLoad says whether handshake messages must carry a valid mac2:
// the handshake queue is at least an eighth full, or was within the last
// underLoadAfter.
func (d *Device) isUnderLoad(now time.Time) bool {
	if d.forceUnderLoad.Load() {
		return true
	}
	if len(d.hsQueue) >= cap(d.hsQueue)/8 {
		d.underLoadUntil.Store(now.Add(underLoadAfter).UnixNano())
		return true
	}
	return now.UnixNano() < d.underLoadUntil.Load()
}

// sendTo sends msgs to ep with the bind, at most BatchSize at a time.
func (d *Device) sendTo(msgs [][]byte, ep conn.Endpoint) error {
	n := max(1, d.bind.BatchSize())
	for len(msgs) > 0 {
		k := min(n, len(msgs))
		if err := d.bind.Send(msgs[:k], ep); err != nil {
			return err
		}
		msgs = msgs[k:]
	}
	return nil
}

// isClosedErr says whether err is the bind's closing.
func isClosedErr(err error) bool { return errors.Is(err, net.ErrClosed) }
