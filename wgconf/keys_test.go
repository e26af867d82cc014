package wgconf

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestKeys(t *testing.T) {
	priv := mustPriv(testPriv)
	if got := priv.Public().String(); got != testPub {
		t.Errorf("Public() = %s, want %s (as wg pubkey)", got, testPub)
	}
	if priv.Base64() != testPriv {
		t.Errorf("Base64() = %s", priv.Base64())
	}
	raw, _ := base64.StdEncoding.DecodeString(testPriv)
	if priv.Hex() != hex.EncodeToString(raw) {
		t.Errorf("Hex() = %s", priv.Hex())
	}
	pub := mustPub(testPeer1)
	raw, _ = base64.StdEncoding.DecodeString(testPeer1)
	if pub.Hex() != hex.EncodeToString(raw) || pub.String() != testPeer1 {
		t.Errorf("PublicKey Hex %s String %s", pub.Hex(), pub)
	}
	var back PublicKey
	if text, _ := pub.MarshalText(); back.UnmarshalText(text) != nil || back != pub {
		t.Errorf("PublicKey text round trip failed")
	}
	psk := mustPSK(testPSK)
	if psk.IsZero() || psk.Base64() != testPSK || !(PresharedKey{}).IsZero() {
		t.Errorf("PresharedKey IsZero/Base64 wrong")
	}

	k, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	if k[0]&7 != 0 || k[31]&0x80 != 0 || k[31]&0x40 == 0 {
		t.Errorf("generated key is not clamped: %x...%x", k[0], k[31])
	}
	if k2, _ := GeneratePrivateKey(); k2 == k {
		t.Errorf("two generated keys are equal")
	}

	for _, bad := range []string{"", "short", testPriv[:43], testPriv + "=", key31, key33, strings.Repeat("A", 43) + "B", "kNH1TGDZC+AdefOEQcts3GlPUIuRwMrS7cSJZBiZg3\nY="} {
		if _, err := ParsePrivateKey(bad); err == nil {
			t.Errorf("ParsePrivateKey(%q) succeeded", bad)
		} else if bad != "" && strings.Contains(err.Error(), bad) {
			t.Errorf("ParsePrivateKey error %q contains its input", err)
		}
		if _, err := ParsePublicKey(bad); err == nil {
			t.Errorf("ParsePublicKey(%q) succeeded", bad)
		}
		if _, err := ParsePresharedKey(bad); err == nil {
			t.Errorf("ParsePresharedKey(%q) succeeded", bad)
		}
	}
}

// secretsOf lists every form of a secret in the good config that must not
// be printed.
func secretsOf() []string {
	priv, psk := mustPriv(testPriv), mustPSK(testPSK)
	raw, _ := base64.StdEncoding.DecodeString(testPriv)
	return []string{
		testPriv, priv.Hex(), strings.ToUpper(priv.Hex()), fmt.Sprint(raw[:8]),
		testPSK, psk.Hex(), testStreamID, testCopyID, testSocksPW, testHTTPPW,
		hex.EncodeToString([]byte(testSocksPW)), hex.EncodeToString([]byte(testHTTPPW)), hex.EncodeToString([]byte(testStreamID[:16])),
	}
}

func TestSecretsNeverPrinted(t *testing.T) {
	c := parseGood(t)
	var forms []string
	for _, v := range []any{c, *c, c.Interface, c.Peers, c.Peers[0], c.Interface.PrivateKey, c.Peers[0].PresharedKey,
		c.Socks5, c.Socks5[0], c.HTTP, c.LogStream, *c.LogStream} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%d", "%q"} {
			forms = append(forms, fmt.Sprintf(verb, v))
		}
		forms = append(forms, fmt.Sprint(v), fmt.Sprintln(v))
		j, err := json.Marshal(v)
		if err != nil {
			t.Errorf("json.Marshal(%T): %v", v, err)
		}
		forms = append(forms, string(j))
	}
	forms = append(forms, c.Interface.PrivateKey.String(), c.Interface.PrivateKey.GoString(),
		c.Peers[0].PresharedKey.String(), c.Peers[0].PresharedKey.GoString(), c.LogStream.String())
	var logs strings.Builder
	slog.New(slog.NewTextHandler(&logs, nil)).Info("config", "cfg", c, "key", c.Interface.PrivateKey, "socks", c.Socks5[0])
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("config", "cfg", c, "key", c.Interface.PrivateKey, "stream", c.LogStream)
	forms = append(forms, logs.String())

	for _, s := range forms {
		for _, secret := range secretsOf() {
			if strings.Contains(s, secret) {
				t.Errorf("printed form contains the secret %q:\n%s", secret, s)
			}
		}
	}
	// The redacted forms still say what they are.
	if got := fmt.Sprintf("%v", c.Interface.PrivateKey); got != "(redacted)" {
		t.Errorf("PrivateKey prints as %q", got)
	}
	if got := fmt.Sprintf("%#v", c.Socks5[0]); got != `wgconf.Socks5{BindAddress:"127.0.0.1:1080", Username:"$alice", Password:"(redacted)"}` {
		t.Errorf("%%#v of Socks5 = %s", got)
	}
	if got := fmt.Sprintf("%+v", c.HTTP[0]); !strings.Contains(got, "Username:bob Password:(redacted)") {
		t.Errorf("%%+v of HTTPProxy = %s", got)
	}
	if got := fmt.Sprint(c.Interface); !strings.Contains(got, "(redacted)") || !strings.Contains(got, "10.0.0.2/24") {
		t.Errorf("Interface prints as %s", got)
	}
}

// TestDecodeHex: a key in the UAPI's hex form decodes to the key Hex
// wrote; a wrong length or a non-hex digit is an error that does not
// quote the input.
func TestDecodeHex(t *testing.T) {
	k, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	var got PrivateKey
	if err := DecodeHex(got[:], k.Hex()); err != nil || got != k {
		t.Fatalf("DecodeHex(Hex()) = %v; keys equal %v", err, got == k)
	}
	bad := "zz" + k.Hex()[2:]
	for _, s := range []string{k.Hex()[:62], k.Hex() + "00", bad} {
		if err := DecodeHex(got[:], s); err == nil || strings.Contains(err.Error(), s[4:20]) {
			t.Errorf("DecodeHex of a bad key: %v", err)
		}
	}
}
