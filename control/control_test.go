package control

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/internal/leaktest"
	"github.com/wgsidecar/sidecar/netlog"
)

// fakeProvider answers with fixed values, or err.
type fakeProvider struct {
	status Status
	flows  Flows
	err    error
}

func (p *fakeProvider) Status(context.Context) (*Status, error) {
	if p.err != nil {
		return nil, p.err
	}
	return &p.status, nil
}

func (p *fakeProvider) Flows(context.Context) (*Flows, error) {
	if p.err != nil {
		return nil, p.err
	}
	return &p.flows, nil
}

func sockPath(t *testing.T) string {
	return filepath.Join(t.TempDir(), "c.sock")
}

func serve(t *testing.T, path string, p Provider) *Server {
	t.Helper()
	s, err := Listen(path, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// staleSocket leaves a socket file at path that nothing listens on, as a
// process that died would.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Type() != fs.ModeSocket {
		t.Fatalf("stale socket not left behind: %v %v", fi, err)
	}
}

func TestRoundTrip(t *testing.T) {
	defer leaktest.Check(t)()
	hs := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	p := &fakeProvider{
		status: Status{
			PublicKey: "pub", NodeID: "n1", Addresses: []string{"10.0.0.1/32"}, ListenPort: 51820,
			Peers: []Peer{
				{PublicKey: "peer1", Endpoint: "127.0.0.1:1", AllowedIPs: []string{"10.0.0.2/32"}, LatestHandshake: hs, RxBytes: 10, TxBytes: 20},
				{PublicKey: "peer2", AllowedIPs: []string{}},
			},
			Listeners: []Listener{{Kind: "socks5", Listen: "127.0.0.1:1080", Conns: &Conns{Open: 1, Accepted: 5}}},
			FlowLog:   FlowLog{Enabled: true, Window: "5s", Windows: 3, Messages: 4},
		},
		flows: Flows{
			FlowLog:  FlowLog{Enabled: true, Window: "5s"},
			Messages: []netlog.Message{{NodeID: "n1", Start: hs, End: hs.Add(5 * time.Second), VirtualTraffic: []netlog.ConnectionCounts{{Proto: 6, Src: "10.0.0.1:1", Dst: "10.0.0.2:80", TxPackets: 1, TxBytes: 60}}}},
		},
	}
	path := sockPath(t)
	s := serve(t, path, p)
	c := NewClient(path)
	ctx := context.Background()

	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.PublicKey != "pub" || len(st.Peers) != 2 || !st.Peers[0].LatestHandshake.Equal(hs) || st.Listeners[0].Conns.Accepted != 5 || st.FlowLog.Windows != 3 {
		t.Errorf("status came back as %+v", st)
	}
	if !st.Peers[1].LatestHandshake.IsZero() {
		t.Errorf("peer without handshake came back with %v", st.Peers[1].LatestHandshake)
	}
	raw, err := c.Get(ctx, PathStatus)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(raw), "latestHandshake") != 1 {
		t.Errorf("a missing handshake should be absent from the JSON: %s", raw)
	}
	fl, err := c.Flows(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(fl.Messages) != 1 || fl.Messages[0].VirtualTraffic[0].Dst != "10.0.0.2:80" {
		t.Errorf("flows came back as %+v", fl)
	}

	p.err = errors.New("device gone")
	if _, err := c.Status(ctx); err == nil || !strings.Contains(err.Error(), "device gone") {
		t.Errorf("provider error: %v", err)
	}
	if _, err := c.Get(ctx, "/v1/nothing"); err == nil || !strings.Contains(err.Error(), "no such endpoint") {
		t.Errorf("unknown endpoint: %v", err)
	}
	hc := &http.Client{Transport: &http.Transport{
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return net.Dial("unix", path) },
		DisableKeepAlives: true,
	}}
	resp, err := hc.Post("http://sidecar"+PathStatus, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET" {
		t.Errorf("POST: %s, Allow %q", resp.Status, resp.Header.Get("Allow"))
	}
	s.Close()
}

func TestSocketModeAndRemoval(t *testing.T) {
	old := syscall.Umask(0) // the loosest umask: the socket must still be 0600
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "new")
	path := filepath.Join(dir, "c.sock")
	s := serve(t, path, &fakeProvider{})
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v; want a socket with 0600", fi.Mode())
	}
	if di, err := os.Stat(dir); err != nil || di.Mode().Perm() != 0o700 {
		t.Errorf("made directory: %v %v; want 0700", di.Mode(), err)
	}
	s.Close()
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket still there after Close: %v", err)
	}
	s.Close() // idempotent
}

func TestCloseLeavesAnotherProcessSocket(t *testing.T) {
	path := sockPath(t)
	s := serve(t, path, &fakeProvider{})
	// Someone removed our socket and put theirs there.
	os.Remove(path)
	staleSocket(t, path)
	s.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("Close removed a socket that was not its own: %v", err)
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	path := sockPath(t)
	staleSocket(t, path)
	serve(t, path, &fakeProvider{status: Status{NodeID: "new"}})
	st, err := NewClient(path).Status(context.Background())
	if err != nil || st.NodeID != "new" {
		t.Fatalf("status after replacing a stale socket: %+v, %v", st, err)
	}
}

func TestLiveSocketInUse(t *testing.T) {
	path := sockPath(t)
	serve(t, path, &fakeProvider{status: Status{NodeID: "first"}})
	_, err := Listen(path, &fakeProvider{}, nil)
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), path) {
		t.Fatalf("second Listen: %v; want ErrInUse naming the path", err)
	}
	st, err := NewClient(path).Status(context.Background())
	if err != nil || st.NodeID != "first" {
		t.Errorf("first server after the refused second: %+v, %v", st, err)
	}
}

func TestNotASocketRefused(t *testing.T) {
	path := sockPath(t)
	if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path, &fakeProvider{}, nil); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "keep me" {
		t.Errorf("the file was touched: %q", b)
	}
}

func TestLongPathRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), strings.Repeat("x", 120)+".sock")
	if _, err := Listen(path, &fakeProvider{}, nil); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("Listen on a %d-byte path: %v", len(path), err)
	}
}

func TestClientNotRunning(t *testing.T) {
	ctx := context.Background()
	missing := sockPath(t)
	_, err := NewClient(missing).Status(ctx)
	if !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing socket: %v", err)
	}
	stale := sockPath(t)
	staleSocket(t, stale)
	_, err = NewClient(stale).Status(ctx)
	if !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "nothing listens") {
		t.Errorf("stale socket: %v", err)
	}
}

func TestDefaultSocket(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/1000")
	if got, want := DefaultSocket("n0123"), "/run/user/1000/wgsidecar/n0123.sock"; got != want {
		t.Errorf("with XDG_RUNTIME_DIR: %q, want %q", got, want)
	}
	t.Setenv("XDG_RUNTIME_DIR", "")
	want := filepath.Join("/tmp", "wgsidecar-"+strconv.Itoa(os.Getuid()), "n0123.sock")
	if got := DefaultSocket("n0123"); got != want {
		t.Errorf("without XDG_RUNTIME_DIR: %q, want %q", got, want)
	}
	t.Setenv("XDG_RUNTIME_DIR", "relative/dir") // not absolute: ignored, as the XDG spec says
	if got := DefaultSocket("n0123"); got != want {
		t.Errorf("with a relative XDG_RUNTIME_DIR: %q, want %q", got, want)
	}
}

func TestDefaultDirMadePrivate(t *testing.T) {
	xdg := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", xdg)
	dir := DefaultDir()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	serve(t, DefaultSocket("n1"), &fakeProvider{})
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("default directory mode %v, %v; want 0700", fi.Mode(), err)
	}
}
