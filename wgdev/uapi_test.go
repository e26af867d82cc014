package wgdev

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"

	"github.com/wgsidecar/sidecar/devconf"
	"github.com/wgsidecar/sidecar/internal/leaktest"
	"github.com/wgsidecar/sidecar/udpbind"
	"github.com/wgsidecar/sidecar/wgnoise"
)

// uapiLines splits UAPI get text into the device's lines and each peer's,
// sorted, so that two devices' texts compare whatever their peer order;
// the traffic counters are left out.
func uapiLines(text string) map[string][]string {
	out := map[string][]string{}
	cur := ""
	for _, l := range strings.Split(strings.TrimSpace(text), "\n") {
		k, v, _ := strings.Cut(l, "=")
		switch k {
		case "public_key":
			cur = v
		case "tx_bytes", "rx_bytes", "last_handshake_time_sec", "last_handshake_time_nsec":
			continue // traffic: wireguard-go sends when the keepalive is turned on
		}
		out[cur] = append(out[cur], l)
	}
	for _, ls := range out {
		slices.Sort(ls)
	}
	return out
}

func newDown(t *testing.T) *Device {
	d := New(Config{TUN: newChanTUN(), Bind: udpbind.New()})
	t.Cleanup(d.Close)
	return d
}

// TestIpcMatchesWireguardGo applies the same UAPI text to our device and
// to wireguard-go's (both down) and compares what they report.
func TestIpcMatchesWireguardGo(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	k, p1, p2, p3, psk := newKey(t), newKey(t), newKey(t), newKey(t), newKey(t)
	pub := func(k [32]byte) string { return hexKey(keyPub(k)) }
	steps := []string{
		fmt.Sprintf("private_key=%s\nlisten_port=51999\n", hexKey(k[:])),
		fmt.Sprintf("public_key=%s\npreshared_key=%s\nendpoint=127.0.0.1:1234\npersistent_keepalive_interval=25\nreplace_allowed_ips=true\nallowed_ip=10.1.0.0/16\nallowed_ip=10.2.0.7/24\nallowed_ip=fd00::1/64\nprotocol_version=1\n",
			pub(p1), hexKey(psk[:])),
		fmt.Sprintf("public_key=%s\nendpoint=[::1]:99\nallowed_ip=10.3.0.0/16\n", pub(p2)),
		fmt.Sprintf("public_key=%s\nupdate_only=true\nallowed_ip=10.4.0.0/16\n", pub(p3)),                          // not created
		fmt.Sprintf("public_key=%s\nupdate_only=true\nallowed_ip=-10.1.0.0/16\nallowed_ip=10.3.0.0/16\n", pub(p1)), // moved from p2
		fmt.Sprintf("public_key=%s\nupdate_only=true\npersistent_keepalive_interval=0\n", pub(p1)),
		fmt.Sprintf("public_key=%s\nremove=true\npublic_key=%s\nallowed_ip=10.5.0.0/16\n", pub(p2), pub(p3)),
		fmt.Sprintf("public_key=%s\nallowed_ip=10.6.0.0/16\n", pub(k)), // our own key: ignored
	}
	ours := newDown(t)
	theirs := device.NewDevice(downTUN(), conn.NewStdNetBind(), device.NewLogger(device.LogLevelSilent, ""))
	defer theirs.Close()
	for i, s := range steps {
		if err := ours.IpcSet(s); err != nil {
			t.Fatalf("step %d: ours: %v", i, err)
		}
		if err := theirs.IpcSet(s); err != nil {
			t.Fatalf("step %d: wireguard-go: %v", i, err)
		}
		got, _ := ours.IpcGet()
		want, _ := theirs.IpcGet()
		if g, w := uapiLines(got), uapiLines(want); !reflect.DeepEqual(g, w) {
			t.Fatalf("step %d: IpcGet differs\nours:\n%s\nwireguard-go:\n%s", i, got, want)
		}
	}
	got, _ := ours.IpcGet()
	st, err := devconf.ParseStatus(got)
	if err != nil {
		t.Fatal(err)
	}
	if st.ListenPort != 51999 || len(st.Peers) != 2 {
		t.Errorf("status %+v, want port 51999 and 2 peers", st)
	}
	if err := ours.IpcSet("replace_peers=true\n"); err != nil {
		t.Fatal(err)
	}
	if got, _ := ours.IpcGet(); strings.Contains(got, "public_key") {
		t.Errorf("peers left after replace_peers:\n%s", got)
	}
}

func keyPub(k [32]byte) []byte {
	p := k
	pub := (*wgnoise.PrivateKey)(&p).PublicKey()
	return pub[:]
}

// TestIpcErrors checks refusals: the code is wireguard-go's and no key
// material is quoted.
func TestIpcErrors(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	d := newDown(t)
	secret := strings.Repeat("ab", 31) + "zz"
	for _, tc := range []struct{ in, want string }{
		{"private_key=" + secret + "\n", "failed to set private_key"},
		{"private_key=" + secret[:10] + "\n", "failed to set private_key"},
		{"bogus=1\n", "invalid UAPI device key: bogus"},
		{"listen_port=70000\n", "failed to parse listen_port"},
		{"public_key=" + secret + "\n", "failed to get peer by public key"},
		{"public_key=" + strings.Repeat("01", 32) + "\npreshared_key=" + secret + "\n", "failed to set preshared key"},
		{"public_key=" + strings.Repeat("01", 32) + "\nprotocol_version=2\n", "invalid protocol version: 2"},
		{"public_key=" + strings.Repeat("01", 32) + "\nallowed_ip=10.0.0.0/33\n", "failed to set allowed ip"},
		{"public_key=" + strings.Repeat("01", 32) + "\nremove=false\n", "invalid value"},
		{"public_key=" + strings.Repeat("01", 32) + "\nendpoint=nowhere\n", "failed to set endpoint"},
		{"private_key" + secret + "\n", "failed to parse line 1"},
	} {
		err := d.IpcSet(tc.in)
		var ie *IPCError
		if err == nil || !errors.As(err, &ie) || ie.ErrorCode() >= 0 {
			t.Errorf("IpcSet(%q) = %v, want an IPCError", tc.in, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("IpcSet(%q) = %v, want %q", tc.in, err, tc.want)
		}
		if strings.Contains(err.Error(), secret[:10]) {
			t.Errorf("IpcSet error quotes the key: %v", err)
		}
	}
}

// FuzzIpcSet: any text is applied or refused without a panic, and what
// the device then reports parses as the node parses it.
func FuzzIpcSet(f *testing.F) {
	k := strings.Repeat("11", 32)
	f.Add("private_key=" + k + "\nlisten_port=0\n")
	f.Add("public_key=" + strings.Repeat("22", 32) + "\nendpoint=127.0.0.1:5\nallowed_ip=10.0.0.0/8\nallowed_ip=-10.0.0.0/8\n")
	f.Add("replace_peers=true\npublic_key=" + strings.Repeat("33", 32) + "\nupdate_only=true\n\nlisten_port=1\n")
	f.Add("public_key=" + strings.Repeat("22", 32) + "\nremove=true\npersistent_keepalive_interval=5\n")
	f.Add("=\n\n")
	f.Fuzz(func(t *testing.T, s string) {
		d := New(Config{TUN: newChanTUN(), Bind: udpbind.New()})
		defer d.Close()
		_ = d.IpcSet(s)
		got, err := d.IpcGet()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := devconf.ParseStatus(got); err != nil {
			t.Fatalf("IpcGet after %q does not parse: %v\n%s", s, err, got)
		}
	})
}

func TestRoutes(t *testing.T) {
	a, b, c := &peer{name: "a"}, &peer{name: "b"}, &peer{name: "c"}
	rt := buildRoutes(map[netip.Prefix]*peer{
		netip.MustParsePrefix("10.0.0.0/8"):  a,
		netip.MustParsePrefix("10.1.0.0/16"): b,
		netip.MustParsePrefix("10.1.2.3/32"): c,
		netip.MustParsePrefix("0.0.0.0/0"):   c,
		netip.MustParsePrefix("fd00::/8"):    a,
		netip.MustParsePrefix("fd00:1::/32"): b,
	})
	for addr, want := range map[string]*peer{
		"10.9.9.9": a, "10.1.9.9": b, "10.1.2.3": c, "192.0.2.1": c,
		"fd00::1": a, "fd00:1::1": b, "2001:db8::1": nil, "::ffff:10.1.2.3": nil,
	} {
		if got := rt.lookup(netip.MustParseAddr(addr)); got != want {
			t.Errorf("lookup(%s) = %v, want %v", addr, got, want)
		}
	}
}

// FuzzInboundPacket: any decrypted payload is checked without a panic,
// and an accepted one is trimmed to its own length.
func FuzzInboundPacket(f *testing.F) {
	f.Add(udpPacket(netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), []byte("hi")))
	f.Add(udpPacket(netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2"), []byte("hi")))
	f.Add([]byte{0x45, 0, 0, 10})
	f.Add([]byte{0x70})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return
		}
		pkt, src, bad := inboundPacket(b)
		if bad == "" && (len(pkt) > len(b) || !src.IsValid()) {
			t.Fatalf("accepted %x as %x from %v", b, pkt, src)
		}
		_, _ = dstAddr(b)
	})
}
