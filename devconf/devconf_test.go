package devconf

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn/bindtest"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/wgsidecar/sidecar/wgconf"
)

func key(b byte) wgconf.PublicKey {
	var k wgconf.PublicKey
	k[0], k[31] = b, 0x40
	return k
}

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

func TestDiff(t *testing.T) {
	a := wgconf.Peer{PublicKey: key(1), AllowedIPs: pfx("10.0.0.2/32"), Endpoint: "127.0.0.1:5000", PersistentKeepalive: 25}
	b := wgconf.Peer{PublicKey: key(2), AllowedIPs: pfx("10.0.0.3/32", "10.9.0.0/16")}
	aPSK := a
	aPSK.PresharedKey = wgconf.PresharedKey{7}
	aIPs := a
	aIPs.AllowedIPs = pfx("10.0.0.2/32", "fd00::2/128")
	aMoved := a
	aMoved.Endpoint = "peer.example:5000"
	named := wgconf.Peer{PublicKey: key(3), AllowedIPs: pfx("10.0.0.4/32"), Endpoint: "peer.example:5000"}
	ep := netip.MustParseAddrPort("127.0.0.1:5000")
	moved := netip.MustParseAddrPort("127.0.0.9:5000")
	zeroPSK := strings.Repeat("0", 64)
	for _, c := range []struct {
		name          string
		was, next     []wgconf.Peer
		endpoints     map[wgconf.PublicKey]netip.AddrPort
		announce      bool
		set, restore  string
		wantErrSubstr string
	}{
		{name: "nothing changes", was: []wgconf.Peer{a, b}, next: []wgconf.Peer{a, b}},
		{name: "new peers", next: []wgconf.Peer{a, b}, endpoints: map[wgconf.PublicKey]netip.AddrPort{a.PublicKey: ep},
			set: "public_key=" + a.PublicKey.Hex() + "\npreshared_key=" + zeroPSK + "\nreplace_allowed_ips=true\nallowed_ip=10.0.0.2/32\nendpoint=127.0.0.1:5000\npersistent_keepalive_interval=25\n" +
				"public_key=" + b.PublicKey.Hex() + "\npreshared_key=" + zeroPSK + "\nreplace_allowed_ips=true\nallowed_ip=10.0.0.3/32\nallowed_ip=10.9.0.0/16\npersistent_keepalive_interval=0\n"},
		{name: "a removed, b untouched", was: []wgconf.Peer{a, b}, next: []wgconf.Peer{b},
			set: "public_key=" + a.PublicKey.Hex() + "\nremove=true\n"},
		{name: "only the preshared key", was: []wgconf.Peer{a}, next: []wgconf.Peer{aPSK},
			set: "public_key=" + a.PublicKey.Hex() + "\nupdate_only=true\npreshared_key=" + wgconf.PresharedKey{7}.Hex() + "\n"},
		{name: "only the allowed IPs", was: []wgconf.Peer{a}, next: []wgconf.Peer{aIPs},
			set: "public_key=" + a.PublicKey.Hex() + "\nupdate_only=true\nreplace_allowed_ips=true\nallowed_ip=10.0.0.2/32\nallowed_ip=fd00::2/128\n"},
		{name: "endpoint moved and resolved", was: []wgconf.Peer{a}, next: []wgconf.Peer{aMoved}, endpoints: map[wgconf.PublicKey]netip.AddrPort{a.PublicKey: moved},
			set: "public_key=" + a.PublicKey.Hex() + "\nupdate_only=true\nendpoint=127.0.0.9:5000\n"},
		{name: "endpoint that does not resolve yet gets no line", was: []wgconf.Peer{a}, next: []wgconf.Peer{aMoved},
			set: "public_key=" + a.PublicKey.Hex() + "\nupdate_only=true\n"},
		{name: "announce a new peer with an endpoint", next: []wgconf.Peer{named}, announce: true, endpoints: map[wgconf.PublicKey]netip.AddrPort{named.PublicKey: ep},
			set:     "public_key=" + named.PublicKey.Hex() + "\npreshared_key=" + zeroPSK + "\nreplace_allowed_ips=true\nallowed_ip=10.0.0.4/32\nendpoint=127.0.0.1:5000\npersistent_keepalive_interval=1\n",
			restore: "public_key=" + named.PublicKey.Hex() + "\nupdate_only=true\npersistent_keepalive_interval=0\n"},
		{name: "announce keeps a longer keepalive and needs no restore", was: nil, next: []wgconf.Peer{a}, announce: true, endpoints: map[wgconf.PublicKey]netip.AddrPort{a.PublicKey: ep},
			set: "public_key=" + a.PublicKey.Hex() + "\npreshared_key=" + zeroPSK + "\nreplace_allowed_ips=true\nallowed_ip=10.0.0.2/32\nendpoint=127.0.0.1:5000\npersistent_keepalive_interval=25\n"},
		{name: "announce skips a peer without endpoint", next: []wgconf.Peer{b}, announce: true,
			set: "public_key=" + b.PublicKey.Hex() + "\npreshared_key=" + zeroPSK + "\nreplace_allowed_ips=true\nallowed_ip=10.0.0.3/32\nallowed_ip=10.9.0.0/16\npersistent_keepalive_interval=0\n"},
		{name: "a peer listed twice", next: []wgconf.Peer{a, a}, wantErrSubstr: "listed twice"},
	} {
		t.Run(c.name, func(t *testing.T) {
			set, restore, err := Diff(c.was, c.next, c.endpoints, c.announce)
			if c.wantErrSubstr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErrSubstr) {
					t.Fatalf("err = %v, want one saying %q", err, c.wantErrSubstr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if set != c.set {
				t.Errorf("set:\n%s\nwant:\n%s", set, c.set)
			}
			if restore != c.restore {
				t.Errorf("restore:\n%s\nwant:\n%s", restore, c.restore)
			}
		})
	}
}

func TestEndpointChangesAndCount(t *testing.T) {
	a := wgconf.Peer{PublicKey: key(1), Endpoint: "127.0.0.1:1"}
	b := wgconf.Peer{PublicKey: key(2)}
	c := wgconf.Peer{PublicKey: key(3), Endpoint: "h:1"}
	a2 := a
	a2.Endpoint = "127.0.0.1:2"
	b2 := b
	b2.PersistentKeepalive = 5
	got := EndpointChanges([]wgconf.Peer{a, b}, []wgconf.Peer{a2, b2, c})
	if len(got) != 2 || got[0].PublicKey != a.PublicKey || got[1].PublicKey != c.PublicKey {
		t.Errorf("EndpointChanges = %v, want a (moved) and c (new)", got)
	}
	if got := EndpointChanges([]wgconf.Peer{a}, []wgconf.Peer{a}); len(got) != 0 {
		t.Errorf("unchanged: %v", got)
	}
	added, removed, changed := Count([]wgconf.Peer{a, b}, []wgconf.Peer{b2, c})
	if added != 1 || removed != 1 || changed != 1 {
		t.Errorf("Count = %d added, %d removed, %d changed; want 1, 1, 1", added, removed, changed)
	}
}

func TestParseStatus(t *testing.T) {
	k1, k2 := key(1), key(2)
	text := "private_key=" + strings.Repeat("ab", 32) + "\nlisten_port=51820\n" +
		"public_key=" + k1.Hex() + "\nendpoint=127.0.0.1:5000\nlast_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\nrx_bytes=10\ntx_bytes=20\nallowed_ip=10.0.0.2/32\nprotocol_version=1\n" +
		"public_key=" + k2.Hex() + "\nendpoint=[::1]:6000\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\nrx_bytes=0\ntx_bytes=0\n"
	st, err := ParseStatus(text)
	if err != nil {
		t.Fatal(err)
	}
	if st.ListenPort != 51820 || len(st.Peers) != 2 {
		t.Fatalf("status %+v", st)
	}
	want1 := PeerStatus{PublicKey: k1, Endpoint: netip.MustParseAddrPort("127.0.0.1:5000"), LastHandshake: time.Unix(1700000000, 5), RxBytes: 10, TxBytes: 20}
	if got := st.Peers[k1]; got != want1 {
		t.Errorf("peer 1 = %+v, want %+v", got, want1)
	}
	if got := st.Peers[k2]; !got.LastHandshake.IsZero() || got.Endpoint.Port() != 6000 {
		t.Errorf("peer 2 = %+v, want no handshake, endpoint port 6000", got)
	}
	for _, bad := range []string{
		"listen_port=x\n",
		"public_key=zz\n",
		"rx_bytes=1\n",
		"public_key=" + k1.Hex() + "\nrx_bytes=-1\n",
		"public_key=" + k1.Hex() + "\nendpoint=nowhere\n",
	} {
		if _, err := ParseStatus(bad); err == nil {
			t.Errorf("ParseStatus(%q) accepted it", bad)
		} else if strings.Contains(err.Error(), strings.Repeat("ab", 32)) {
			t.Errorf("error shows the private key: %v", err)
		}
	}
}

func FuzzParseStatus(f *testing.F) {
	f.Add("listen_port=1\npublic_key=" + key(1).Hex() + "\nendpoint=127.0.0.1:1\nrx_bytes=3\n")
	f.Add("public_key=" + key(2).Hex() + "\nlast_handshake_time_sec=9\n")
	f.Add("=\n\n==\nlisten_port=\n")
	f.Fuzz(func(t *testing.T, text string) {
		st, err := ParseStatus(text)
		if err == nil && st.Peers == nil {
			t.Fatal("nil peer map without an error")
		}
	})
}

func TestAllowedIPs(t *testing.T) {
	tbl := AllowedIPs([]wgconf.Peer{
		{PublicKey: key(1), AllowedIPs: pfx("10.0.0.2/32", "10.9.0.0/16")},
		{PublicKey: key(2), AllowedIPs: pfx("fd00::/64")},
	})
	for addr, covered := range map[string]bool{
		"10.0.0.2": true, "10.9.200.1": true, "10.0.0.3": false, "fd00::99": true, "fd01::1": false, "192.168.1.1": false,
	} {
		a := netip.MustParseAddr(addr)
		if got := tbl.Covers(a.AsSlice()); got != covered {
			t.Errorf("%s covered = %v, want %v", addr, got, covered)
		}
	}
	if AllowedIPs(nil).Covers(netip.MustParseAddr("10.0.0.2").AsSlice()) {
		t.Error("an empty table covers an address")
	}
	// The longest prefix names the peer, as the device routes.
	nested := AllowedIPs([]wgconf.Peer{
		{PublicKey: key(1), AllowedIPs: pfx("10.0.0.0/8")},
		{PublicKey: key(2), AllowedIPs: pfx("10.1.0.0/16")},
	})
	for addr, want := range map[string]wgconf.PublicKey{"10.1.2.3": key(2), "10.2.0.1": key(1), "::ffff:10.1.0.1": key(2)} {
		if got, ok := nested.PeerFor(netip.MustParseAddr(addr)); !ok || got != want {
			t.Errorf("PeerFor(%s) = %v, %v; want peer %v", addr, got, ok, want[0])
		}
	}
	if _, ok := nested.PeerFor(netip.MustParseAddr("192.168.0.1")); ok {
		t.Error("PeerFor names a peer for an address no peer covers")
	}
}

// TestDiffOnDevice applies Interface and a sequence of Diffs to a real
// wireguard-go device and reads its status back: the device ends up with
// exactly the peers asked for, and an untouched peer keeps its place.
func TestDiffOnDevice(t *testing.T) {
	binds := bindtest.NewChannelBinds()
	dev := device.NewDevice(tuntest.NewChannelTUN().TUN(), binds[0], device.NewLogger(device.LogLevelSilent, ""))
	defer dev.Close()
	priv, err := wgconf.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.IpcSet(Interface(priv, 51999)); err != nil {
		t.Fatal(err)
	}
	a := wgconf.Peer{PublicKey: key(1), AllowedIPs: pfx("10.0.0.2/32"), Endpoint: "127.0.0.1:5000", PersistentKeepalive: 0}
	b := wgconf.Peer{PublicKey: key(2), AllowedIPs: pfx("10.0.0.3/32")}
	apply := func(was, next []wgconf.Peer) Status {
		t.Helper()
		eps := map[wgconf.PublicKey]netip.AddrPort{}
		for _, p := range EndpointChanges(was, next) {
			eps[p.PublicKey] = netip.MustParseAddrPort(p.Endpoint)
		}
		set, restore, err := Diff(was, next, eps, false)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{set, restore} {
			if s != "" {
				if err := dev.IpcSet(s); err != nil {
					t.Fatalf("IpcSet(%q): %v", s, err)
				}
			}
		}
		text, err := dev.IpcGet()
		if err != nil {
			t.Fatal(err)
		}
		st, err := ParseStatus(text)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	st := apply(nil, []wgconf.Peer{a, b})
	if len(st.Peers) != 2 || st.Peers[a.PublicKey].Endpoint.String() != "127.0.0.1:5000" {
		t.Fatalf("after adding a and b: %+v", st)
	}
	a2 := a
	a2.Endpoint = "127.0.0.1:5001"
	st = apply([]wgconf.Peer{a, b}, []wgconf.Peer{a2})
	if len(st.Peers) != 1 || st.Peers[a.PublicKey].Endpoint.String() != "127.0.0.1:5001" {
		t.Fatalf("after moving a and removing b: %+v", st)
	}
}
