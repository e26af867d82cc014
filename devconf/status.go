package devconf

import (
	"bufio"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/wgsidecar/sidecar/wgconf"
)

// PeerStatus is what the WireGuard device knows of one peer.
type PeerStatus struct {
	PublicKey     wgconf.PublicKey
	Endpoint      netip.AddrPort // invalid until the peer has one
	LastHandshake time.Time      // zero if none yet
	RxBytes       uint64
	TxBytes       uint64
}

// Status is the device's state as its UAPI "get" reports it.
type Status struct {
	ListenPort int
	Peers      map[wgconf.PublicKey]PeerStatus
}

// ParseStatus reads the text of the device's UAPI "get" operation. Keys it
// does not use are skipped; a value it uses that does not parse is an
// error naming the key (the text holds the private key, which never
// appears in an error).
func ParseStatus(text string) (Status, error) {
	st := Status{Peers: map[wgconf.PublicKey]PeerStatus{}}
	var cur *PeerStatus
	var sec, nsec int64
	flush := func() {
		if cur == nil {
			return
		}
		if sec != 0 || nsec != 0 {
			cur.LastHandshake = time.Unix(sec, nsec)
		}
		st.Peers[cur.PublicKey] = *cur
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		var err error
		switch k {
		case "listen_port":
			st.ListenPort, err = strconv.Atoi(v)
		case "public_key":
			flush()
			cur, sec, nsec = &PeerStatus{}, 0, 0
			err = wgconf.DecodeHex(cur.PublicKey[:], v)
		case "endpoint", "last_handshake_time_sec", "last_handshake_time_nsec", "rx_bytes", "tx_bytes":
			if cur == nil {
				return Status{}, fmt.Errorf("devconf: status: %s before any public_key", k)
			}
			err = peerField(cur, k, v, &sec, &nsec)
		}
		if err != nil {
			return Status{}, fmt.Errorf("devconf: status: bad %s: %w", k, err)
		}
	}
	flush()
	return st, sc.Err()
}

// peerField sets one field of a peer's status from its UAPI key and value.
func peerField(p *PeerStatus, k, v string, sec, nsec *int64) (err error) {
	switch k {
	case "endpoint":
		p.Endpoint, err = netip.ParseAddrPort(v)
	case "last_handshake_time_sec":
		*sec, err = strconv.ParseInt(v, 10, 64)
	case "last_handshake_time_nsec":
		*nsec, err = strconv.ParseInt(v, 10, 64)
	case "rx_bytes":
		p.RxBytes, err = strconv.ParseUint(v, 10, 64)
	case "tx_bytes":
		p.TxBytes, err = strconv.ParseUint(v, 10, 64)
	}
	return err
}
