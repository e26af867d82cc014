package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/internal/testnet"
)

// startCollectProcess runs `sidecar collect` with args as a process on a
// free loopback port, waits until it answers, and returns its base URL.
// Cleanup stops it with SIGTERM and checks that it exits cleanly.
func startCollectProcess(t *testing.T, args ...string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(os.Args[0], append([]string{"collect", "--listen", addr}, args...)...)
	cmd.Env = append(os.Environ(), "WGSIDECAR_TEST_AS_MAIN=1")
	var stderr testnet.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Errorf("collector after SIGTERM: %v; stderr:\n%s", err, stderr.String())
		}
	})
	base := "http://" + addr
	for deadline := time.Now().Add(20 * time.Second); ; {
		if resp, err := http.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			return base
		}
		if time.Now().After(deadline) {
			t.Fatalf("collector did not come up; stderr:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runProcess runs the sidecar command as a process and returns its exit
// status and output.
func runProcess(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "WGSIDECAR_TEST_AS_MAIN=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

// TestQueryCommand uploads two nodes' windows to a `sidecar collect`
// process and asks them back with `sidecar query` run as a process: a
// table with humanised bytes and a total line, JSON with -j, buckets,
// and clear errors for bad parameters.
func TestQueryCommand(t *testing.T) {
	dir := t.TempDir()
	tokenFile := writeFile(t, "token", "s3cret-token\n")
	base := startCollectProcess(t, "--data", filepath.Join(dir, "data"), "--token-file", tokenFile, "--retention", "30d")

	// Two nodes, three windows each, starting a minute ago.
	start := time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
	var entries []string
	for i := range 3 {
		ws := start.Add(time.Duration(i) * 5 * time.Second)
		for n, node := range []string{"alpha", "beta"} {
			entries = append(entries, fmt.Sprintf(`{"nodeId":%q,"start":%q,"end":%q,`+
				`"virtualTraffic":[{"proto":6,"src":"10.99.0.%d:40000","dst":"10.99.0.9:80","txPkts":10,"txBytes":%d,"rxPkts":20,"rxBytes":%d}],`+
				`"physicalTraffic":[{"proto":0,"src":"10.99.0.9:0","dst":"127.0.0.1:51820","txPkts":11,"txBytes":2000,"rxPkts":21,"rxBytes":3000}]}`,
				node, ws.Format(time.RFC3339Nano), ws.Add(5*time.Second-1).Format(time.RFC3339Nano), n+1, 1000*(n+1), 1<<20*(n+1)))
		}
	}
	resp, err := http.Post(base+"/c/fleet/"+strings.Repeat("ab", 32), "application/json", strings.NewReader("["+strings.Join(entries, ",")+"]"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("upload: %s", resp.Status)
	}

	q := []string{"query", "--collector", base, "--token-file", tokenFile, "--collection", "fleet", "--since", "10m"}
	code, out, errOut := runProcess(t, append(q, "--by", "node,dst", "--class", "virtual")...)
	if code != 0 {
		t.Fatalf("query: exit %d: %s", code, errOut)
	}
	want := []string{
		`NODE +DST +TX +RX +TXPKTS +RXPKTS +FLOWS`,
		`beta +10\.99\.0\.9:80 +5\.9 KiB +6\.0 MiB +30 +60 +3`,
		`alpha +10\.99\.0\.9:80 +2\.9 KiB +3\.0 MiB +30 +60 +3`,
		`total \(2 rows\) + 8\.8 KiB +9\.0 MiB +60 +120 +6`,
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != len(want) {
		t.Fatalf("table:\n%s", out)
	}
	for i, w := range want {
		if !regexp.MustCompile("^" + w + "$").MatchString(lines[i]) {
			t.Errorf("line %d: %q, want /%s/", i, lines[i], w)
		}
	}
	// Columns line up: every line has the TX column at the same offset.
	if col := strings.Index(lines[0], "TX "); !strings.HasPrefix(lines[1][col:], "5.9 KiB") {
		t.Errorf("columns do not line up:\n%s", out)
	}

	code, out, errOut = runProcess(t, append(q, "--by", "node", "--top", "1", "--bucket", "1m", "-j")...)
	var ans struct {
		Rows []map[string]any `json:"rows"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &ans) != nil || len(ans.Rows) == 0 {
		t.Fatalf("query -j: exit %d %s %s", code, out, errOut)
	}
	var total float64
	for _, r := range ans.Rows {
		if r["node"] != "beta" || r["bucket"] == nil {
			t.Errorf("top 1 by node per minute: row %v, want beta's with a bucket", r)
		}
		total += r["rxBytes"].(float64)
	}
	if total != 3*2<<20+3*3000 {
		t.Errorf("beta's rxBytes over the buckets: %v", total)
	}

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--by", "node,bogus"}, `the collector refused the query: group: unknown key "bogus"`},
		{[]string{"--since", "banana"}, `since: "banana": want a duration`},
		{[]string{"--bucket", "7s"}, `bucket: "7s": want 1m, 5m or 1h`},
		{[]string{"--top", "-1"}, `top: "-1": want a whole number of at least 1`},
	} {
		code, _, errOut := runProcess(t, append(q, tt.args...)...)
		if code != 1 || !strings.Contains(errOut, "sidecar query: ") || !strings.Contains(errOut, tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want 1 and …%s…", tt.args, code, errOut, tt.want)
		}
	}
	if code, _, errOut := runProcess(t, "query", "--collector", base); code != 2 || !strings.Contains(errOut, "--token-file FILE are required") {
		t.Errorf("without a token file: exit %d %q", code, errOut)
	}
	if code, _, errOut := runProcess(t, "collect", "--data", dir, "--token-file", tokenFile, "--retention", "forever"); code != 2 || !strings.Contains(errOut, `--retention "forever"`) {
		t.Errorf("collect --retention forever: exit %d %q", code, errOut)
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 30: "5.0 GiB", 1 << 62: "4096.0 PiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
