package main

import (
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/wgsidecar/sidecar/wgconf"
)

// The packaging examples (examples/container, examples/systemd) ship
// configuration files and command lines; these tests keep them working:
// the files parse, and every command line uses the binary's real verbs and
// flags, parsed by the binary's own flag sets.

// TestContainerExample parses the container example's file with its
// environment and checks the Dockerfile's CMD, the compose command and the
// health check against the binary's flags.
func TestContainerExample(t *testing.T) {
	dir := filepath.Join("..", "..", "examples", "container")
	k, _ := wgconf.GeneratePrivateKey()
	p, _ := wgconf.GeneratePrivateKey()
	env := map[string]string{"WG_PRIVATE_KEY": k.Base64(), "WG_PEER_KEY": p.Public().String()}
	cfg := parseExample(t, filepath.Join(dir, "sidecar.conf"), wgconf.Options{
		LookupEnv: func(name string) (string, bool) { v, ok := env[name]; return v, ok },
	})
	if cfg.Control == nil || cfg.Control.Socket != "/run/wgsidecar/control.sock" || len(cfg.TCPServerTunnels) != 1 || cfg.Interface.ListenPort != 51820 {
		t.Errorf("sidecar.conf parsed to %+v", cfg)
	}

	dockerfile := readExample(t, filepath.Join(dir, "Dockerfile"))
	m := regexp.MustCompile(`(?m)^CMD (\[.*\])$`).FindStringSubmatch(dockerfile)
	if m == nil {
		t.Fatal("Dockerfile has no CMD [...]")
	}
	var cmd []string
	if err := json.Unmarshal([]byte(m[1]), &cmd); err != nil {
		t.Fatalf("Dockerfile CMD: %v", err)
	}
	checkUp(t, "Dockerfile CMD", cmd, "/etc/wgsidecar/sidecar.conf")
	if !regexp.MustCompile(`(?m)^USER 65532`).MatchString(dockerfile) {
		t.Error("the image does not run as a non-root user")
	}

	compose := readExample(t, filepath.Join(dir, "compose.yaml"))
	m = regexp.MustCompile(`(?m)^    command: (\[.*\])$`).FindStringSubmatch(compose)
	if m == nil {
		t.Fatal("compose.yaml has no sidecar command: [...]")
	}
	if err := json.Unmarshal([]byte(m[1]), &cmd); err != nil {
		t.Fatalf("compose command: %v", err)
	}
	checkUp(t, "compose command", cmd, "/etc/wgsidecar/sidecar.conf")
	if !strings.Contains(compose, "./sidecar.conf:/etc/wgsidecar/sidecar.conf:ro") {
		t.Error("compose.yaml does not mount sidecar.conf where the command reads it")
	}
	m = regexp.MustCompile(`(?m)^      test: (\[.*\])$`).FindStringSubmatch(compose)
	if m == nil {
		t.Fatal("compose.yaml has no health check test: [...]")
	}
	var hc []string
	if err := json.Unmarshal([]byte(m[1]), &hc); err != nil || len(hc) < 3 || hc[0] != "CMD" || hc[2] != "status" {
		t.Fatalf("health check %q (%v); want [CMD, binary, status, ...]", hc, err)
	}
	fs, cf := newControlFlags("status", io.Discard)
	if err := cf.parse(fs, hc[3:]); err != nil {
		t.Errorf("health check flags %q: %v", hc[3:], err)
	}
	if cf.socket != cfg.Control.Socket {
		t.Errorf("health check asks %q; the sidecar listens on %q", cf.socket, cfg.Control.Socket)
	}
	for _, want := range []string{`user: "65532:65532"`, "cap_drop: [ALL]", "read_only: true", `network_mode: "service:sidecar"`, "no-new-privileges:true"} {
		if !strings.Contains(compose, want) {
			t.Errorf("compose.yaml lacks %s", want)
		}
	}
}

// TestSystemdExample parses the unit's configuration file with its
// credential and checks the unit: ExecStart runs "sidecar up" with real
// flags on that file, ExecReload sends SIGHUP, and the service runs as a
// dynamic user without capabilities.
func TestSystemdExample(t *testing.T) {
	dir := filepath.Join("..", "..", "examples", "systemd")
	k, _ := wgconf.GeneratePrivateKey()
	const credential = "/run/credentials/wgsidecar.service/private-key"
	cfg := parseExample(t, filepath.Join(dir, "wg0.conf"), wgconf.Options{
		ReadFile: func(name string) ([]byte, error) {
			if name == credential {
				return []byte(k.Base64() + "\n"), nil
			}
			return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
		},
	})
	if cfg.Interface.PrivateKey != k || cfg.Control == nil || !strings.HasPrefix(cfg.Control.Socket, "/run/wgsidecar/") {
		t.Errorf("wg0.conf parsed to %+v", cfg)
	}

	unit := readExample(t, filepath.Join(dir, "wgsidecar.service"))
	directive := func(name string) []string {
		var out []string
		for _, m := range regexp.MustCompile(`(?m)^`+name+`=(.*)$`).FindAllStringSubmatch(unit, -1) {
			out = append(out, m[1])
		}
		return out
	}
	exec := directive("ExecStart")
	if len(exec) != 1 {
		t.Fatalf("ExecStart lines: %q", exec)
	}
	args := strings.Fields(exec[0])
	if filepath.Base(args[0]) != "sidecar" {
		t.Errorf("ExecStart runs %s", args[0])
	}
	checkUp(t, "ExecStart", args[1:], "/etc/wgsidecar/wg0.conf")
	if r := directive("ExecReload"); len(r) != 1 || !regexp.MustCompile(`kill -HUP \$MAINPID$`).MatchString(r[0]) {
		t.Errorf("ExecReload %q; want kill -HUP $MAINPID", r)
	}
	for name, want := range map[string]string{
		"DynamicUser": "yes", "CapabilityBoundingSet": "", "AmbientCapabilities": "", "NoNewPrivileges": "yes",
		"LoadCredential": "private-key:/etc/wgsidecar/private.key", "RuntimeDirectory": "wgsidecar", "ProtectSystem": "strict",
	} {
		if got := directive(name); len(got) != 1 || got[0] != want {
			t.Errorf("%s=%q; want %q", name, got, want)
		}
	}
}

// checkUp parses args as "sidecar up" would and checks they read file.
func checkUp(t *testing.T, what string, args []string, file string) {
	t.Helper()
	if len(args) == 0 || args[0] != "up" {
		t.Errorf("%s %q does not run sidecar up", what, args)
		return
	}
	o, err := parseUpFlags(args[1:], io.Discard)
	if err != nil {
		t.Errorf("%s %q: not flags of sidecar up: %v", what, args, err)
		return
	}
	if o.file != file {
		t.Errorf("%s reads %q; want %q", what, o.file, file)
	}
	if _, err := newLogger(io.Discard, o.level, o.logJSON); err != nil {
		t.Errorf("%s: %v", what, err)
	}
}

func parseExample(t *testing.T, path string, opts wgconf.Options) *wgconf.Config {
	t.Helper()
	cfg, err := wgconf.Parse(path, []byte(readExample(t, path)), opts)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func readExample(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("example file %s is missing", path)
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
