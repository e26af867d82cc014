// Package wgnoise owns WireGuard's messages and cryptography: the static
// and ephemeral keys, the Noise_IKpsk2 handshake (initiation, response,
// their replay and flood checks), the transport keys of a session with
// their send counter and replay window, and the MAC and cookie machinery
// (mac1, mac2, cookie replies) of both the sender and the receiver.
//
// It is pure: no I/O, no goroutines, no clock reads (callers pass the time
// in), and it knows nothing of sockets, TUN devices, peers' endpoints or
// timers — those belong to the device (package wgdev) built on it. The only
// outside input it reads is the message bytes it is handed; every parser
// has a fuzz target.
//
// Concurrency: Identity is immutable and may be shared. Keypair and Guard
// are safe for concurrent use (Keypair.Seal and Keypair.Open run on many
// goroutines at once; Guard's cookie secret rotates under its own lock).
// Handshake and Cookies are not: their owner (one per peer) serialises
// calls, typically under the peer's handshake lock.
//
// Secrets: private keys, chaining keys, ephemeral keys and transport keys
// are zeroed when dropped (Handshake.BeginSession, Handshake.Clear,
// Keypair.Wipe). No error message of this package carries key material.
//
// Written from the protocol paper (Donenfeld, "WireGuard: Next Generation
// Kernel Network Tunnel") and wireguard.com/protocol; crypto from
// golang.org/x/crypto (ChaCha20-Poly1305, XChaCha20-Poly1305, BLAKE2s,
// Curve25519).
package wgnoise
