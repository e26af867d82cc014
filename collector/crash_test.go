package collector

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// roleEnv, when set, makes the test binary run a collector instead of the
// tests (see TestMain): the crash test runs it as a child process.
const roleEnv = "COLLECTOR_TEST_ROLE"

func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) == "serve" {
		os.Exit(serveRole())
	}
	code := m.Run()
	for _, f := range cleanups {
		f()
	}
	os.Exit(code)
}

// serveRole runs a collector on COLLECTOR_TEST_DATA, listening on a free
// loopback port that it prints as "LISTEN ADDR", until killed.
func serveRole() int {
	s, err := Open(Config{DataDir: os.Getenv("COLLECTOR_TEST_DATA"), Token: testToken})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("LISTEN %s\n", ln.Addr())
	if err := s.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// startChild runs the collector role on dir and returns it with its base
// URL.
func startChild(t *testing.T, dir string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), roleEnv+"=serve", "COLLECTOR_TEST_DATA="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "LISTEN ")
	if err != nil || !ok {
		t.Fatalf("child collector said %q, %v", line, err)
	}
	return cmd, "http://" + addr
}

// TestKilledAfter200 kills the collector (SIGKILL) as soon as it has
// answered 200 and checks, after a restart on the same DataDir, that the
// entries are there: 200 means stored.
func TestKilledAfter200(t *testing.T) {
	if testing.Short() {
		t.Skip("runs child processes")
	}
	dir := t.TempDir()
	c := testClient(t)
	const rounds = 3
	for round := range rounds {
		cmd, base := startChild(t, dir)
		body := jsonArray(entry("n", "p", 2*round+1, ""), entry("n", "p", 2*round+2, ""))
		code, answer := post(t, c, base, testCollection, privA, zstdOf(body), "zstd")
		cmd.Process.Kill() // SIGKILL, right after reading the answer
		cmd.Wait()
		c.CloseIdleConnections()
		if code != 200 {
			t.Fatalf("round %d: upload: %d %s", round, code, answer)
		}
	}
	_, base := startChild(t, dir)
	_, logs := queryLogs(t, c, base, testToken, testCollection, longAgo, farAhead, "")
	var seqs []string
	for _, l := range logs {
		seqs = append(seqs, fmt.Sprint(l["logtail"].(map[string]any)["proc_seq"]))
	}
	if diff := diffLines(seqs, strings.Fields("1 2 3 4 5 6")); diff != "" {
		t.Errorf("entries after SIGKILLs (-got +want):\n%s", diff)
	}
}
