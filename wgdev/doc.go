// Package wgdev owns the node's own WireGuard device: the peer table, the
// routing of packets by AllowedIPs, the transport data path, the handshake
// state machine's timers, cookies under load and the UAPI "set"/"get" text
// that configures and reports it (the same keys and semantics as
// wireguard-go's device). The cryptography and message formats are
// wgnoise's; wgdev does the I/O and keeps the state. It knows nothing of
// the stack, the flow log or the monitor (it logs the drop lines the
// monitor matches through the caller's device.Logger).
//
// Concurrency: packets move in the goroutine that has them. Send encrypts
// and sends in the caller's goroutine and may be called from any number
// of goroutines at once. Each of the bind's receive functions runs in one
// goroutine of the device that receives a batch, decrypts it in place and
// hands it to the TUN with one Write; a batch of 8 packets or more is
// written by that goroutine's deliverer instead, while the next batch is
// received (in order: a later batch waits for a delivery under way). The
// TUN's Write may call Send in the same goroutine, so no lock is held
// across it. Handshake messages go through a bounded queue to one
// handshake goroutine; under load, those that pass mac2 are rate-limited
// per source. Protocol timers are one time.AfterFunc timer each, per
// peer. With Config.ReadTUN one more goroutine reads the TUN and calls
// Send. IpcSet, IpcGet, Up, Down, BindUpdate and Close may be called from
// any goroutine; they are serialised by the device.
//
// Locks, in the order they may be taken: Device.ipcMu, Device.mu, then a
// peer's hsMu, kpMu and stageMu (never two peers' at once); indexTable.mu
// is a leaf. Timer callbacks and the packet paths never take ipcMu or
// Device.mu for writing, so stopping a timer under them cannot deadlock.
package wgdev
