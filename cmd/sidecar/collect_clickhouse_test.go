package main

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/internal/testnet"
)

// TestCollectClickHouseProcess runs `sidecar collect --storage
// clickhouse://...` as a process against a clickhouse-server the test
// starts: an upload is answered once stored, `sidecar query` (a process)
// reads it back, and SIGTERM ends the collector cleanly (checked by
// startCollectProcess's cleanup). A server that is down, a malformed URL
// and a bad database name stop `sidecar collect` at start with an error
// that says which, without the password.
func TestCollectClickHouseProcess(t *testing.T) {
	addr, stop, skip := testnet.StartClickHouse()
	if addr == "" {
		t.Skip(skip)
	}
	t.Cleanup(stop)
	tokenFile := writeFile(t, "token", "s3cret-token\n")
	base := startCollectProcess(t, "--storage", "clickhouse://"+addr+"/proc", "--token-file", tokenFile)

	ws := time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
	body := fmt.Sprintf(`[{"nodeId":"gamma","logtail":{"proc_id":"p","proc_seq":1},"start":%q,"end":%q,`+
		`"virtualTraffic":[{"proto":6,"src":"10.99.0.3:40000","dst":"10.99.0.9:443","txPkts":10,"txBytes":1500,"rxPkts":20,"rxBytes":3072}]}]`,
		ws.Format(time.RFC3339Nano), ws.Add(5*time.Second-1).Format(time.RFC3339Nano))
	for i, want := range []string{`{"stored":1,"duplicates":0}`, `{"stored":0,"duplicates":1}`} {
		resp, err := http.Post(base+"/c/fleet/"+strings.Repeat("cd", 32), "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		fmt.Fprint(&b, resp.Status)
		buf := make([]byte, 256)
		n, _ := resp.Body.Read(buf)
		resp.Body.Close()
		if got := strings.TrimSpace(string(buf[:n])); resp.StatusCode != 200 || got != want {
			t.Fatalf("upload %d: %s %s, want %s", i, b.String(), got, want)
		}
	}
	code, out, errOut := runProcess(t, "query", "--collector", base, "--token-file", tokenFile, "--collection", "fleet", "--since", "10m", "--by", "node,dst")
	if code != 0 || !regexp.MustCompile(`(?m)^gamma +10\.99\.0\.9:443 +1\.5 KiB +3\.0 KiB +10 +20 +1$`).MatchString(out) {
		t.Fatalf("query: exit %d:\n%s%s", code, out, errOut)
	}

	down := testnet.FreePort(t, "tcp")
	for _, tc := range []struct{ storage, want string }{
		{fmt.Sprintf("clickhouse://u:hunter2@127.0.0.1:%d/proc", down), "cannot connect to 127.0.0.1:"},
		{"clickhouse://127.0.0.1:notaport/proc", "want clickhouse://HOST:PORT/DATABASE"},
		{"clickhouse://" + addr + "/bad-name", `database name "bad-name"`},
		{"postgres://127.0.0.1/x", "want bolt or clickhouse://HOST:PORT/DATABASE"},
	} {
		code, _, errOut := runProcess(t, "collect", "--listen", "127.0.0.1:0", "--storage", tc.storage, "--token-file", tokenFile)
		if code == 0 || !strings.Contains(errOut, tc.want) || strings.Contains(errOut, "hunter2") {
			t.Errorf("collect --storage %s: exit %d, stderr %q; want an error with %q and no password", tc.storage, code, errOut, tc.want)
		}
	}
}
