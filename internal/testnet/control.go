package testnet

import (
	"context"
	"testing"

	"github.com/wgsidecar/sidecar/control"
)

// Listeners asks the node behind control socket sock for its proxies' and
// forwards' listen addresses, by kind ("socks5", "http", "tcp
// local-to-tunnel", …; of two of one kind, the last).
func Listeners(t testing.TB, sock string) map[string]string {
	t.Helper()
	st, err := control.NewClient(sock).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	byKind := map[string]string{}
	for _, l := range st.Listeners {
		byKind[l.Kind] = l.Listen
	}
	return byKind
}
