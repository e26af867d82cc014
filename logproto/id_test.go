package logproto

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestPrivateIDRedacted(t *testing.T) {
	id, err := NewPrivateID()
	if err != nil {
		t.Fatal(err)
	}
	if id.IsZero() {
		t.Fatal("NewPrivateID returned the zero ID")
	}
	secret := id.Hex()
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "id", id, "ids", []PrivateID{id})
	for _, s := range []string{
		fmt.Sprint(id), fmt.Sprintf("%v %s %x %X %+v %#v %q", id, id, id, id, id, id, id),
		fmt.Sprintf("%+v", struct{ ID PrivateID }{id}), logged.String(),
	} {
		if strings.Contains(strings.ToLower(s), secret) {
			t.Errorf("private ID shown in %q", s)
		}
	}
}

func TestParseIDs(t *testing.T) {
	hex64 := strings.Repeat("0123456789abcdef", 4)
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{hex64, true},
		{strings.ToUpper(hex64), true},
		{"", false},
		{"00", false},
		{hex64[:63], false},
		{hex64 + "00", false},
		{strings.Repeat("g", 64), false},
		{" " + hex64[1:], false},
	} {
		priv, perr := ParsePrivateID(tc.in)
		pub, uerr := ParsePublicID(tc.in)
		if (perr == nil) != tc.ok || (uerr == nil) != tc.ok {
			t.Errorf("ParsePrivateID(%q), ParsePublicID: errors %v, %v; want ok %v", tc.in, perr, uerr, tc.ok)
			continue
		}
		if !tc.ok {
			continue
		}
		if got := priv.Hex(); got != hex64 {
			t.Errorf("ParsePrivateID(%q).Hex() = %s; want %s", tc.in, got, hex64)
		}
		if got := pub.String(); got != hex64 {
			t.Errorf("ParsePublicID(%q).String() = %s; want %s", tc.in, got, hex64)
		}
	}
}

// TestPublic checks that the public ID is the SHA-256 of the private ID's
// 32 bytes, as the collector files streams under it.
func TestPublic(t *testing.T) {
	priv, err := ParsePrivateID(strings.Repeat("ab", 32))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := hex.DecodeString(strings.Repeat("ab", 32))
	want := sha256.Sum256(raw)
	if got := priv.Public(); got != PublicID(want) {
		t.Errorf("Public() = %s; want %x", got, want)
	}
	if (PrivateID{}).IsZero() != true || priv.IsZero() {
		t.Error("IsZero is wrong")
	}
}
