package clickhouse_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/collector"
	"github.com/wgsidecar/sidecar/collector/clickhouse"
	"github.com/wgsidecar/sidecar/collector/storagetest"
)

// server is the address of the ClickHouse server TestMain started, or
// "" with skipReason set.
var (
	server     string
	skipReason string
)

// TestMain starts one clickhouse-server for the package's tests, as a
// plain process with its configuration and data in a temporary
// directory, listening on a free loopback port.
func TestMain(m *testing.M) {
	stop := startServer()
	code := m.Run()
	stop()
	os.Exit(code)
}

// serverConfig is a minimal configuration: the native protocol on
// 127.0.0.1:PORT only, everything under DIR, one user without password
// allowed from loopback.
const serverConfig = `<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{{DIR}}/server.log</log><errorlog>{{DIR}}/server.err.log</errorlog></logger>
  <tcp_port>{{PORT}}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{{DIR}}/data/</path>
  <tmp_path>{{DIR}}/tmp/</tmp_path>
  <user_files_path>{{DIR}}/user_files/</user_files_path>
  <format_schema_path>{{DIR}}/format_schemas/</format_schema_path>
  <mark_cache_size>67108864</mark_cache_size>
  <uncompressed_cache_size>67108864</uncompressed_cache_size>
  <timezone>UTC</timezone>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <users>
    <default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default>
  </users>
  <profiles><default></default></profiles>
  <quotas><default></default></quotas>
</yandex>
`

// startServer starts the server, or sets skipReason if its binary is
// absent; the returned function stops it.
func startServer() (stop func()) {
	bin, err := exec.LookPath("clickhouse-server")
	if err != nil {
		skipReason = "clickhouse-server is not installed (Debian: apt-get install clickhouse-server)"
		return func() {}
	}
	dir, err := os.MkdirTemp("", "clickhouse-test-")
	if err != nil {
		panic(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cfg := strings.NewReplacer("{{DIR}}", dir, "{{PORT}}", fmt.Sprint(port)).Replace(serverConfig)
	if err := os.WriteFile(filepath.Join(dir, "config.xml"), []byte(cfg), 0o600); err != nil {
		panic(err)
	}
	cmd := exec.Command(bin, "--config-file="+filepath.Join(dir, "config.xml"))
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		panic(err)
	}
	stop = func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		os.RemoveAll(dir)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			server = addr
			return stop
		}
	}
	log, _ := os.ReadFile(filepath.Join(dir, "server.err.log"))
	stop()
	panic("clickhouse-server did not start listening within 60 s: " + string(log))
}

var dbSeq atomic.Int64

// newDSN returns the DSN of a database of its own for a test.
func newDSN(t testing.TB) string {
	if server == "" {
		t.Skip(skipReason)
	}
	return fmt.Sprintf("clickhouse://%s/t%d_%d", server, os.Getpid(), dbSeq.Add(1))
}

// opener opens a Storage on dsn each time it is called: replicas of one
// store.
func opener(dsn string) func(t *testing.T) collector.Storage {
	return func(t *testing.T) collector.Storage {
		st, err := clickhouse.Open(context.Background(), dsn, nil)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
}

// TestFlowQueries runs the storage suite's query cases through two
// collectors on one database: uploads spread over both, a retried batch
// sent to the other replica, every query asked of both.
func TestFlowQueries(t *testing.T) { storagetest.Run(t, 2, opener(newDSN(t))) }

func TestRetention(t *testing.T) { storagetest.RunRetention(t, opener(newDSN(t))) }

// BenchmarkFleetIngest: one op is one 5 s window of 100 nodes × 1,000
// flows into ClickHouse, the uploads one after another (an INSERT each)
// or all at once (sharing INSERTs).
func BenchmarkFleetIngest(b *testing.B) {
	storagetest.BenchIngestModes(b, func(b *testing.B) collector.Storage {
		st, err := clickhouse.Open(context.Background(), newDSN(b), nil)
		if err != nil {
			b.Fatal(err)
		}
		return st
	})
}
