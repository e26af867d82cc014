package watchdog

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wgsidecar/sidecar/devconf"
	"github.com/wgsidecar/sidecar/metrics"
	"github.com/wgsidecar/sidecar/wgconf"
)

// fakeNode is a node whose one peer has had an initiation sent to it (or
// a failed send) and never answered, until answered is set.
type fakeNode struct {
	mu         sync.Mutex
	peer       wgconf.Peer
	endpoint   netip.AddrPort
	resolvesTo netip.AddrPort
	started    time.Time
	lastHS     time.Time
	sendErrs   uint64
	handshakes int
	rebinds    int
	resolves   int
}

func (f *fakeNode) Status() (devconf.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return devconf.Status{Peers: map[wgconf.PublicKey]devconf.PeerStatus{
		f.peer.PublicKey: {PublicKey: f.peer.PublicKey, Endpoint: f.endpoint, LastHandshake: f.lastHS},
	}}, nil
}

func (f *fakeNode) Peers() ([]wgconf.Peer, time.Time) { return []wgconf.Peer{f.peer}, f.started }

func (f *fakeNode) PeerFor(a netip.Addr) (wgconf.PublicKey, bool) {
	return devconf.AllowedIPs([]wgconf.Peer{f.peer}).PeerFor(a)
}

// Trouble says an initiation went out just now: traffic is waiting.
func (f *fakeNode) Trouble(netip.AddrPort) (time.Time, time.Time) { return time.Now(), time.Time{} }

func (f *fakeNode) SendErrors() uint64 { f.mu.Lock(); defer f.mu.Unlock(); return f.sendErrs }
func (f *fakeNode) Rebind() error      { f.mu.Lock(); defer f.mu.Unlock(); f.rebinds++; return nil }
func (f *fakeNode) ListenPort() int    { return 51820 }
func (f *fakeNode) Handshake(wgconf.PublicKey) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.handshakes++
}

func (f *fakeNode) Resolve(ctx context.Context, endpoint string) (netip.AddrPort, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resolves++
	return f.resolvesTo, nil
}

func (f *fakeNode) SetEndpoint(key wgconf.PublicKey, ep netip.AddrPort) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.endpoint = ep
	return nil
}

func (f *fakeNode) counts() (handshakes, rebinds int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.handshakes, f.rebinds
}

func newFake() *fakeNode {
	ep := netip.MustParseAddrPort("127.0.0.1:5000")
	return &fakeNode{
		peer:     wgconf.Peer{PublicKey: wgconf.PublicKey{1}, Endpoint: "peer.test:5000"},
		endpoint: ep, resolvesTo: ep, started: time.Now(),
	}
}

// TestRecoveryBacksOff: a peer that never answers is recovered once the
// timeout has passed, again after the timeout, then after twice the
// previous wait each time, capped at 16 times the timeout.
func TestRecoveryBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		var logs bytes.Buffer
		w := Start(f, Config{Timeout: time.Second, Stale: time.Hour, Log: slog.New(slog.NewTextHandler(&logs, nil))})
		defer w.Close()
		at := func(d time.Duration) int {
			time.Sleep(d)
			synctest.Wait()
			h, _ := f.counts()
			return h
		}
		// Checks run every 250 ms; the first at or after 1 s acts.
		if h := at(900 * time.Millisecond); h != 0 {
			t.Fatalf("acted before the timeout: %d handshakes", h)
		}
		if h := at(200 * time.Millisecond); h != 1 {
			t.Fatalf("after 1.1 s: %d handshakes, want 1", h)
		}
		// Again 1 s after the first try, then after 2 s, 4 s, ...
		for _, c := range []struct {
			sleep time.Duration
			want  int
		}{
			{700 * time.Millisecond, 1}, {200 * time.Millisecond, 2}, // 1.9 s, 2.1 s
			{1700 * time.Millisecond, 2}, {300 * time.Millisecond, 3}, // 3.8 s, 4.1 s
			{3800 * time.Millisecond, 3}, {200 * time.Millisecond, 4}, // 7.9 s, 8.1 s
		} {
			if h := at(c.sleep); h != c.want {
				t.Fatalf("%d handshakes, want %d", h, c.want)
			}
		}
		// Then at 16 s, and every 16 s after: the wait stops growing at
		// 16 times the timeout (16, 32, 48, 64, 80, 96).
		if h := at(100 * time.Second); h != 4+6 {
			t.Fatalf("after 108 s: %d handshakes, want 10 (waits capped at 16 s)", h)
		}
		if !strings.Contains(logs.String(), "watchdog: peer has traffic waiting and no handshake") {
			t.Errorf("log does not say what the watchdog did:\n%s", logs.String())
		}
	})
}

// TestRecoveryReopensSocket: send errors since the last look make the
// recovery reopen the socket, once per round, and count it.
func TestRecoveryReopensSocket(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		f.sendErrs = 3
		w := Start(f, Config{Timeout: time.Second, Stale: time.Hour, Log: slog.New(slog.DiscardHandler)})
		defer w.Close()
		time.Sleep(1100 * time.Millisecond)
		synctest.Wait()
		if _, r := f.counts(); r != 1 {
			t.Fatalf("rebinds %d, want 1", r)
		}
		var reg metrics.Registry
		w.RegisterMetrics(&reg)
		got := map[string]float64{}
		for _, fam := range reg.Gather() {
			got[fam.Name] = fam.Samples[0].Value
		}
		if got["wgsidecar_watchdog_socket_reopens_total"] != 1 || got["wgsidecar_watchdog_recoveries_total"] != 1 {
			t.Errorf("metrics %v", got)
		}
	})
}

// TestStaleNameResolvedAgain: a peer with a host-name endpoint and no
// handshake for Stale is resolved again and pointed at the new address;
// the watchdog's recovery stays off (negative Timeout).
func TestStaleNameResolvedAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		f.resolvesTo = netip.MustParseAddrPort("127.0.0.2:5000")
		var ticks atomic.Int64
		w := Start(f, Config{Timeout: -1, Stale: 4 * time.Second, Tick: func() { ticks.Add(1) }, Log: slog.New(slog.DiscardHandler)})
		defer w.Close()
		time.Sleep(3 * time.Second)
		synctest.Wait()
		f.mu.Lock()
		early := f.endpoint
		f.mu.Unlock()
		if early != netip.MustParseAddrPort("127.0.0.1:5000") {
			t.Fatalf("moved before the handshake went stale: %v", early)
		}
		time.Sleep(1500 * time.Millisecond)
		synctest.Wait()
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.endpoint != f.resolvesTo {
			t.Errorf("endpoint %v, want the re-resolved %v", f.endpoint, f.resolvesTo)
		}
		if f.handshakes != 0 {
			t.Errorf("recovery ran with Timeout < 0: %d handshakes", f.handshakes)
		}
		if n := ticks.Load(); n < 4 {
			t.Errorf("Tick called %d times in 4.5 s at 1 s rounds", n)
		}
	})
}
