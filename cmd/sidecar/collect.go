package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/wgsidecar/sidecar/collector"
)

// cmdCollect runs a log collector until SIGINT/SIGTERM: it stores the
// uploads of logtail clients under --data and answers queries from
// holders of the token in --token-file.
func cmdCollect(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("collect",
		"collect --data DIR --token-file FILE [--storage bolt|clickhouse://HOST:PORT/DB] [--retention D] [--listen ADDR] [--collections A,B] [--max-body BYTES] [--max-decoded BYTES] [--log-level LEVEL] [--log-json]",
		stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "`address` to serve HTTP on")
	dataDir := fs.String("data", "", "`directory` of the embedded database (created with mode 0700)")
	storage := fs.String("storage", "bolt", "the `store`: bolt (the embedded database in --data) or clickhouse://HOST:PORT/DATABASE")
	retention := fs.String("retention", "", "keep windows and entries this `long` (30d, 12h), dropping whole days; default: keep everything")
	tokenFile := fs.String("token-file", "", "`file` holding the bearer token that reads require")
	collections := fs.String("collections", "", "comma-separated `names` of the collections to accept (default: any)")
	maxBody := fs.Int64("max-body", 8<<20, "largest upload body accepted, as sent, in `bytes`")
	maxDecoded := fs.Int64("max-decoded", 64<<20, "largest upload body accepted, decompressed, in `bytes`")
	level := fs.String("log-level", "info", "log `level`: debug, info, warn, error")
	logJSON := fs.Bool("log-json", false, "log as JSON lines instead of text")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *dataDir == "" && *storage == "bolt" || *tokenFile == "" {
		fmt.Fprintln(stderr, "sidecar collect: --data DIR (or --storage clickhouse://…) and --token-file FILE are required")
		fs.Usage()
		return errUsage
	}
	var keep time.Duration
	if *retention != "" {
		d, err := collector.ParseDuration(*retention)
		if err != nil {
			fmt.Fprintf(stderr, "sidecar collect: --retention %q: want a duration such as 30d or 12h\n", *retention)
			return errUsage
		}
		keep = d
	}
	log, err := newLogger(stderr, *level, *logJSON)
	if err != nil {
		return err
	}
	token, err := readToken(*tokenFile)
	if err != nil {
		return err
	}
	if info, err := os.Stat(*tokenFile); err == nil && info.Mode().Perm()&0o077 != 0 {
		log.Warn("the token file can be read by other users; chmod 600 it", "file", *tokenFile, "mode", info.Mode().Perm())
	}
	accept := splitList(*collections)

	// Signals are caught before the collector opens, so that one arriving
	// during start-up still shuts it down cleanly.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	st, err := openStorage(ctx, *storage, log)
	if err != nil {
		return err
	}
	srv, err := collector.Open(collector.Config{
		DataDir:         *dataDir,
		Storage:         st,
		Retention:       keep,
		Token:           token,
		MaxBodyBytes:    *maxBody,
		MaxDecodedBytes: *maxDecoded,
		Collections:     accept,
		Logger:          log,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		srv.Close()
		return err
	}
	log.Info("collector listening", "addr", ln.Addr().String(), "storage", storageName(*storage, *dataDir), "collections", cmpOr(*collections, "any"))
	return serveUntilDone(ctx, srv, ln, log)
}

// splitList reads a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for c := range strings.SplitSeq(s, ",") {
		if c = strings.TrimSpace(c); c != "" {
			out = append(out, c)
		}
	}
	return out
}

// serveUntilDone serves the collector on ln until ctx ends (a signal) or
// serving fails, then closes it.
func serveUntilDone(ctx context.Context, srv *collector.Server, ln net.Listener, log *slog.Logger) error {
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		log.Info("shutting down", "signal", "SIGINT/SIGTERM")
	case err := <-served:
		srv.Close()
		return fmt.Errorf("serving: %w", err)
	}
	err := srv.Close()
	if serr := <-served; err == nil {
		err = serr
	}
	return err
}

// readToken reads a bearer token: the file's content without surrounding
// white space, which must not be empty.
func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return "", errors.New("token file: " + path + " is empty")
	}
	if strings.ContainsAny(token, " \t\r\n") {
		return "", errors.New("token file: " + path + ": the token must be one word")
	}
	return token, nil
}

func cmpOr(s, fallback string) string {
	if s == "" {
		return fallback
	}
	return s
}
