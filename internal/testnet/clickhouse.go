package testnet

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// clickHouseConfig is a minimal configuration: the native protocol on
// 127.0.0.1:PORT only, everything under DIR, one user without password
// allowed from loopback.
const clickHouseConfig = `<?xml version="1.0"?>
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

// StartClickHouse starts Debian's clickhouse-server as a plain process,
// its configuration and data in a new temporary directory, listening
// (native protocol) on a free loopback port, for a package's tests
// (call it from TestMain). It returns the server's address and a
// function that stops it and removes the directory, or "" and why it
// cannot run when the binary is absent.
func StartClickHouse() (addr string, stop func(), skip string) {
	bin, err := exec.LookPath("clickhouse-server")
	if err != nil {
		return "", func() {}, "clickhouse-server is not installed (Debian: apt-get install clickhouse-server)"
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
	cfg := strings.NewReplacer("{{DIR}}", dir, "{{PORT}}", fmt.Sprint(port)).Replace(clickHouseConfig)
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
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr, stop, ""
		}
	}
	log, _ := os.ReadFile(filepath.Join(dir, "server.err.log"))
	stop()
	panic("clickhouse-server did not start listening within 60 s: " + string(log))
}
