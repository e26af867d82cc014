package testnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// CurlResult is how a run of curl went.
type CurlResult struct {
	Stdout []byte
	Stderr string
	Code   int           // exit code; -1 when curl did not run
	Took   time.Duration // from start to exit
}

// CurlIn runs the real curl in network namespace ns (through `ip netns
// exec`; on the host when ns is ""), ignoring the user's settings (-q, a
// fresh HOME), with --silent --show-error, --max-time maxTime and args.
// The test is skipped when curl is not installed.
func CurlIn(ctx context.Context, t testing.TB, ns string, maxTime time.Duration, args ...string) CurlResult {
	t.Helper()
	path, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed (Debian package curl)")
	}
	ctx, cancel := context.WithTimeout(ctx, maxTime+10*time.Second)
	defer cancel()
	argv := append([]string{"-q", "--silent", "--show-error", "--max-time", fmt.Sprint(maxTime.Seconds())}, args...)
	name := path
	if ns != "" {
		name, argv = "ip", append([]string{"netns", "exec", ns, path}, argv...)
	}
	cmd := exec.CommandContext(ctx, name, argv...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	r := CurlResult{Stdout: out, Took: time.Since(start)}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		r.Code = exit.ExitCode()
	default:
		r.Code = -1
		stderr.WriteString(err.Error())
	}
	r.Stderr = stderr.String()
	return r
}

// Curl runs the real curl on the host (see CurlIn) with a 30 s limit and
// returns its standard output, or an error with its exit status and
// standard error.
func Curl(t testing.TB, args ...string) (string, error) {
	t.Helper()
	r := CurlIn(context.Background(), t, "", 30*time.Second, args...)
	if r.Code != 0 {
		return string(r.Stdout), fmt.Errorf("curl %v: exit %d: %s", args, r.Code, strings.TrimSpace(r.Stderr))
	}
	return string(r.Stdout), nil
}

// Run runs a setup command with a 10 s limit, failing the test if it
// fails.
func Run(ctx context.Context, t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := Output(ctx, 10*time.Second, name, args...); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// Output runs a command with a time limit and returns its combined
// output.
func Output(ctx context.Context, d time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}
