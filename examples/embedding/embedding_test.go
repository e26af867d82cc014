// Package embedding shows a Go integration test that puts a service on a
// private WireGuard network with wgsidecar, and reads the flow log of what
// the test did.
package embedding

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/netlog"
	"github.com/wgsidecar/sidecar/sidecartest"
)

func TestServiceOverWireGuard(t *testing.T) {
	var flows netlog.MemorySink
	nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{
		NodeOptions: func(i int, o *sidecar.Options) {
			if i == 0 {
				o.FlowSink = &flows // node 0 logs its flows in memory
			}
		},
	})
	client, server := nodes[0], nodes[1]

	// The service listens on the server node's tunnel address only.
	ln, err := server.Listen("tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.RemoteAddr)
	})}
	go srv.Serve(ln)
	defer srv.Close()

	resp, err := client.HTTPClient().Get("http://10.99.0.2:8080/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "hello 10.99.0.1:"; string(body[:len(want)]) != want {
		t.Fatalf("got %q", body)
	}

	// What crossed the tunnel, as the flow log saw it.
	if err := client.CutFlows(context.Background()); err != nil {
		t.Fatal(err)
	}
	msgs := flows.Messages()
	if len(msgs) != 1 || len(msgs[0].VirtualTraffic) == 0 || len(msgs[0].PhysicalTraffic) != 1 {
		t.Fatalf("flow log: %+v", msgs)
	}
	for _, c := range msgs[0].VirtualTraffic {
		t.Logf("%d %s -> %s: tx %d B, rx %d B", c.Proto, c.Src, c.Dst, c.TxBytes, c.RxBytes)
	}
}
