package watchdog

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wgsidecar/sidecar/devconf"
	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/wgconf"
)

// sessionNode is a node with one peer whose last handshake and last
// initiation the test sets.
type sessionNode struct {
	fakeNode
	mu2     sync.Mutex
	lastHS  time.Time
	initAt  time.Time
	allowed []netip.Prefix
}

func (s *sessionNode) set(lastHS, initAt time.Time) {
	s.mu2.Lock()
	defer s.mu2.Unlock()
	s.lastHS, s.initAt = lastHS, initAt
}

func (s *sessionNode) Status() (devconf.Status, error) {
	s.mu2.Lock()
	defer s.mu2.Unlock()
	return devconf.Status{Peers: map[wgconf.PublicKey]devconf.PeerStatus{
		s.peer.PublicKey: {PublicKey: s.peer.PublicKey, Endpoint: s.endpoint, LastHandshake: s.lastHS},
	}}, nil
}

func (s *sessionNode) Peers() ([]wgconf.Peer, time.Time) {
	p := s.peer
	p.AllowedIPs = s.allowed
	return []wgconf.Peer{p}, s.started
}

func (s *sessionNode) Trouble(netip.AddrPort) (time.Time, time.Time) {
	s.mu2.Lock()
	defer s.mu2.Unlock()
	return s.initAt, time.Time{}
}

func (s *sessionNode) PeerFor(a netip.Addr) (wgconf.PublicKey, bool) {
	peers, _ := s.Peers()
	return devconf.AllowedIPs(peers).PeerFor(a)
}

func newSessionNode() *sessionNode {
	n := &sessionNode{fakeNode: *newFake(), allowed: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}}
	return n
}

// TestSessionLog: a peer that never answers gets one hint after Hint (not
// before, not twice); its first handshake logs "peer up" with the
// endpoint; the session's expiry logs "peer down"; a new handshake "peer
// up" again.
func TestSessionLog(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs testnet.Buffer
		n := newSessionNode()
		start := time.Now()
		n.set(time.Time{}, start)
		w := Start(n, Config{Timeout: -1, Log: slog.New(slog.NewTextHandler(&logs, nil))})
		defer w.Close()
		count := func(msg string) int { return strings.Count(logs.String(), msg) }
		const hint = "peer does not answer handshakes"

		time.Sleep(DefaultHint - 2*time.Second)
		if count(hint) != 0 {
			t.Fatalf("hint before %v:\n%s", DefaultHint, logs.String())
		}
		n.set(time.Time{}, time.Now()) // WireGuard retries: still unanswered
		time.Sleep(5 * time.Second)
		if count(hint) != 1 || !strings.Contains(logs.String(), "endpoint=127.0.0.1:5000") {
			t.Fatalf("after %v unanswered: %d hints:\n%s", time.Since(start), count(hint), logs.String())
		}
		time.Sleep(20 * time.Second)
		if count(hint) != 1 {
			t.Errorf("the hint was repeated:\n%s", logs.String())
		}

		hs := time.Now()
		n.set(hs, hs.Add(-time.Second)) // answered
		time.Sleep(2 * time.Second)
		if count(`msg="peer up"`) != 1 || !strings.Contains(logs.String(), `msg="peer up" peer="`+n.peer.PublicKey.String()+`" endpoint=127.0.0.1:5000`) {
			t.Fatalf("no peer up after the handshake:\n%s", logs.String())
		}
		time.Sleep(SessionLife)
		if count("peer down") != 1 {
			t.Fatalf("no peer down after the session expired:\n%s", logs.String())
		}
		n.set(time.Now(), hs)
		time.Sleep(2 * time.Second)
		if count(`msg="peer up"`) != 2 || count("peer down") != 1 {
			t.Errorf("after a new handshake:\n%s", logs.String())
		}
	})
}

// TestGuardDial: a TCP dial routed to a peer without a session fails after
// NoSessionWait with ErrNoSession naming the peer; with a session, or to an
// address no peer routes, it waits for the dial itself.
func TestGuardDial(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newSessionNode()
		hang := func(ctx context.Context, network, address string) (net.Conn, error) {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Minute):
				return nil, errors.New("dial gave up by itself")
			}
		}
		dial := GuardDial(n, hang)
		start := time.Now()
		_, err := dial(context.Background(), "tcp", "10.0.0.2:80")
		if !errors.Is(err, ErrNoSession) || !strings.Contains(err.Error(), n.peer.PublicKey.String()) || !strings.Contains(err.Error(), "host is unreachable") {
			t.Errorf("no session: %v", err)
		}
		if took := time.Since(start); took != NoSessionWait {
			t.Errorf("failed after %v; want %v", took, NoSessionWait)
		}
		n.set(time.Now(), time.Time{})
		if _, err := dial(context.Background(), "tcp", "10.0.0.2:80"); errors.Is(err, ErrNoSession) {
			t.Errorf("with a session: %v", err)
		}
		n.set(time.Time{}, time.Time{})
		if _, err := dial(context.Background(), "tcp", "192.168.1.1:80"); errors.Is(err, ErrNoSession) {
			t.Errorf("to an address no peer routes: %v", err)
		}
	})
}
