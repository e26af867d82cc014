package wgdev

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/conn/bindtest"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/wgsidecar/sidecar/internal/leaktest"
)

func (r *recBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	r.logCall("open")
	return r.Bind.Open(port)
}

func (r *recBind) Close() error {
	r.logCall("close")
	return r.Bind.Close()
}

func (r *recBind) SetMark(mark uint32) error {
	r.mu.Lock()
	r.calls = append(r.calls, fmt.Sprintf("mark %d", mark))
	err := r.markErr
	r.mu.Unlock()
	if err != nil {
		return err
	}
	return r.Bind.SetMark(mark)
}

func (r *recBind) logCall(c string) {
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
}

func (r *recBind) refuseMarks(err error) {
	r.mu.Lock()
	r.markErr = err
	r.mu.Unlock()
}

// takeCalls returns the calls logged since it was last called, leaving
// out Close when withClose is false.
func (r *recBind) takeCalls(withClose bool) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []string{}
	for _, c := range r.calls {
		if withClose || c != "close" {
			out = append(out, c)
		}
	}
	r.calls = nil
	return out
}

// srcSpy is a peer's endpoint that counts the calls to forget its
// sticky source.
type srcSpy struct {
	conn.Endpoint
	cleared atomic.Int32
}

func (s *srcSpy) ClearSrc() { s.cleared.Add(1) }

// markLine is the fwmark line of UAPI get text, or "" when it has none.
func markLine(t *testing.T, get func() (string, error)) string {
	t.Helper()
	text, err := get()
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.SplitSeq(text, "\n") {
		if strings.HasPrefix(l, "fwmark=") {
			return l
		}
	}
	return ""
}

// Whether a step must make the peer forget its sticky source.
const (
	anyClear = iota
	mustClear
	noClear
)

// TestFwmark follows the firewall mark through our device with a bind that
// logs its calls: set while down it waits for the bind to open; set while
// up it goes to the open bind; every reopening (Up, listen_port,
// BindUpdate) applies it again; 0 clears it and is not reported; a change
// makes the peers forget their sticky source; an invalid value is refused
// with IpcErrorInvalid and changes nothing; a mark the bind refuses fails
// the set (IpcErrorPortInUse) and any opening of the bind, which is left
// closed.
func TestFwmark(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	rb := &recBind{Bind: bindtest.NewChannelBinds()[0]}
	lines := &logLines{}
	d := New(Config{TUN: newChanTUN(), Bind: rb, Logger: lines.logger(t, "")})
	defer d.Close()
	pk := newKey(t)
	peerKey := pk.PublicKey()
	if err := d.IpcSet("public_key=" + hexKey(peerKey[:]) + "\nendpoint=127.0.0.1:1\n"); err != nil {
		t.Fatal(err)
	}
	spy := &srcSpy{Endpoint: bindtest.ChannelEndpoint(1)}
	d.lookupPeer(peerKey).endpoint.Store(&endpointRef{ep: spy})
	set := func(s string) func() error { return func() error { return d.IpcSet(s) } }
	for _, st := range []struct {
		name  string
		do    func() error
		calls []string
		mark  string // IpcGet's fwmark line
		clear int
	}{
		{"set while down", set("fwmark=7\n"), []string{}, "fwmark=7", mustClear},
		{"up", d.Up, []string{"open", "mark 7"}, "fwmark=7", anyClear},
		{"same mark again", set("fwmark=7\n"), []string{}, "fwmark=7", noClear},
		{"set while up", set("fwmark=9\n"), []string{"mark 9"}, "fwmark=9", mustClear},
		{"listen_port", set("listen_port=5\n"), []string{"close", "open", "mark 9"}, "fwmark=9", mustClear},
		{"BindUpdate", d.BindUpdate, []string{"close", "open", "mark 9"}, "fwmark=9", mustClear},
		{"largest", set("fwmark=4294967295\n"), []string{"mark 4294967295"}, "fwmark=4294967295", mustClear},
		{"cleared", set("fwmark=0\n"), []string{"mark 0"}, "", mustClear},
		{"listen_port without a mark", set("listen_port=6\n"), []string{"close", "open"}, "", mustClear},
		{"set again", set("fwmark=12\n"), []string{"mark 12"}, "fwmark=12", mustClear},
		{"down", d.Down, []string{"close"}, "fwmark=12", anyClear},
		{"up again", d.Up, []string{"open", "mark 12"}, "fwmark=12", anyClear},
	} {
		before := spy.cleared.Load()
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := rb.takeCalls(true); !slices.Equal(got, st.calls) {
			t.Errorf("%s: bind calls %q, want %q", st.name, got, st.calls)
		}
		if got := markLine(t, d.IpcGet); got != st.mark {
			t.Errorf("%s: IpcGet's fwmark line %q, want %q", st.name, got, st.mark)
		}
		cleared := spy.cleared.Load() > before
		if st.clear == mustClear && !cleared || st.clear == noClear && cleared {
			t.Errorf("%s: sticky source cleared: %v", st.name, cleared)
		}
	}
	if !lines.has("UAPI: Updating fwmark") {
		t.Errorf("no %q in the log:\n%s", "UAPI: Updating fwmark", lines.all())
	}

	for _, v := range []string{"-1", "4294967296", "0x10", "", "1.5", " 3", "3 ", "mark"} {
		err := d.IpcSet("fwmark=" + v + "\n")
		var ie *IPCError
		if !errors.As(err, &ie) || ie.ErrorCode() != ipc.IpcErrorInvalid || !strings.Contains(err.Error(), "invalid fwmark") {
			t.Errorf("fwmark=%q: %v, want an IpcErrorInvalid (%d) saying invalid fwmark", v, err, ipc.IpcErrorInvalid)
		}
		if got := rb.takeCalls(true); len(got) != 0 {
			t.Errorf("fwmark=%q: bind calls %q, want none", v, got)
		}
		if got := markLine(t, d.IpcGet); got != "fwmark=12" {
			t.Errorf("fwmark=%q: IpcGet's fwmark line %q, want it unchanged (fwmark=12)", v, got)
		}
	}

	// A bind that refuses marks (SO_MARK without CAP_NET_ADMIN).
	rb.refuseMarks(syscall.EPERM)
	err := d.IpcSet("fwmark=13\n")
	var ie *IPCError
	if !errors.As(err, &ie) || ie.ErrorCode() != ipc.IpcErrorPortInUse || !errors.Is(err, syscall.EPERM) {
		t.Errorf("refused mark: %v, want an IpcErrorPortInUse (%d) wrapping EPERM", err, ipc.IpcErrorPortInUse)
	}
	if got := markLine(t, d.IpcGet); got != "fwmark=13" {
		t.Errorf("refused mark: IpcGet's fwmark line %q, want fwmark=13 (kept, as wireguard-go keeps it)", got)
	}
	// Reopening fails and leaves the bind closed: no socket goes out
	// unmarked.
	if err := d.BindUpdate(); !errors.Is(err, syscall.EPERM) {
		t.Errorf("BindUpdate with a refused mark: %v, want EPERM", err)
	}
	if err := d.Down(); err != nil {
		t.Fatal(err)
	}
	if err := d.Up(); !errors.Is(err, syscall.EPERM) {
		t.Errorf("Up with a refused mark: %v, want EPERM", err)
	}
	want := []string{"mark 13", "close", "open", "mark 13", "close", "close", "open", "mark 13", "close"}
	if got := rb.takeCalls(true); !slices.Equal(got, want) {
		t.Errorf("refused mark: bind calls %q, want %q", got, want)
	}
	// Without the mark the device comes up.
	if err := d.IpcSet("fwmark=0\n"); err != nil {
		t.Fatal(err)
	}
	if err := d.Up(); err != nil {
		t.Fatalf("Up without a mark: %v", err)
	}
	if got, want := rb.takeCalls(true), []string{"open"}; !slices.Equal(got, want) {
		t.Errorf("up without a mark: bind calls %q, want %q", got, want)
	}
}

// ipcDevice is what TestFwmarkMatchesWireguardGo does to both devices.
type ipcDevice interface {
	IpcSet(string) error
	IpcGet() (string, error)
	Up() error
	Down() error
	BindUpdate() error
}

// TestFwmarkMatchesWireguardGo runs the same steps on our device and on
// wireguard-go's, each on a bind that logs its calls, and compares the
// outcome of each step (error and its UAPI code), the marks and openings
// the bind saw, and the fwmark line of IpcGet.
func TestFwmarkMatchesWireguardGo(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	binds := bindtest.NewChannelBinds()
	ourBind, theirBind := &recBind{Bind: binds[0]}, &recBind{Bind: binds[1]}
	ours := New(Config{TUN: newChanTUN(), Bind: ourBind})
	defer ours.Close()
	theirs := device.NewDevice(downTUN(), theirBind, device.NewLogger(device.LogLevelSilent, ""))
	defer theirs.Close()
	set := func(s string) func(ipcDevice) error { return func(d ipcDevice) error { return d.IpcSet(s) } }
	refuse := func(err error) func(ipcDevice) error {
		return func(ipcDevice) error { ourBind.refuseMarks(err); theirBind.refuseMarks(err); return nil }
	}
	steps := []struct {
		name string
		do   func(ipcDevice) error
	}{
		{"set while down", set("fwmark=7\n")},
		{"up", ipcDevice.Up},
		{"same mark again", set("fwmark=7\n")},
		{"set while up", set("fwmark=9\n")},
		{"listen_port", set("listen_port=5\n")},
		{"BindUpdate", ipcDevice.BindUpdate},
		{"cleared", set("fwmark=0\n")},
		{"listen_port without a mark", set("listen_port=6\n")},
		{"negative", set("fwmark=-1\n")},
		{"too large", set("fwmark=4294967296\n")},
		{"hex", set("fwmark=0x10\n")},
		{"empty", set("fwmark=\n")},
		{"largest", set("fwmark=4294967295\n")},
		{"down", ipcDevice.Down},
		{"set while down", set("fwmark=3\n")},
		{"up", ipcDevice.Up},
		{"bind refuses marks", refuse(syscall.EPERM)},
		{"refused while up", set("fwmark=4\n")},
		{"refused again", set("fwmark=4\n")},
		{"down", ipcDevice.Down},
		{"up with a refused mark", ipcDevice.Up},
		{"cleared while down", set("fwmark=0\n")},
		{"up without a mark", ipcDevice.Up},
		{"bind takes marks", refuse(nil)},
		{"set while up", set("fwmark=5\n")},
	}
	for i, st := range steps {
		name := fmt.Sprintf("step %d (%s)", i, st.name)
		errOurs, errTheirs := st.do(ours), st.do(theirs)
		if (errOurs == nil) != (errTheirs == nil) || ipcCode(errOurs) != ipcCode(errTheirs) {
			t.Errorf("%s: ours %v (code %d), wireguard-go %v (code %d)", name, errOurs, ipcCode(errOurs), errTheirs, ipcCode(errTheirs))
		}
		// wireguard-go closes its bind before every opening, open or
		// not; only the openings and marks are compared.
		if got, want := ourBind.takeCalls(false), theirBind.takeCalls(false); !slices.Equal(got, want) {
			t.Errorf("%s: our bind saw %q, wireguard-go's %q", name, got, want)
		}
		if got, want := markLine(t, ours.IpcGet), markLine(t, theirs.IpcGet); got != want {
			t.Errorf("%s: our fwmark line %q, wireguard-go's %q", name, got, want)
		}
	}
}

// downTUN is wireguard-go's channel TUN without the "up" event it starts
// with, which would bring a device up by itself: the device stays down
// until Up.
func downTUN() tun.Device {
	d := tuntest.NewChannelTUN().TUN()
	<-d.Events()
	return d
}

// ipcCode is err's UAPI error code, 0 for none.
func ipcCode(err error) int64 {
	var c interface{ ErrorCode() int64 }
	if errors.As(err, &c) {
		return c.ErrorCode()
	}
	return 0
}
