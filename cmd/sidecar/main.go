// Command sidecar runs a WireGuard node in user space beside an app, checks
// configuration files, manages keys, and shows the whole system in a demo.
//
// It is the edge of the program: it parses flags, sets up logging and
// signals, and calls package sidecar; it holds no networking of its own.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/ipfix"
	"github.com/wgsidecar/sidecar/wgconf"
)

const usage = `sidecar: a rootless WireGuard sidecar (user-space network stack).

Usage:
  sidecar up -c FILE       run a node from a wg-quick style file until SIGINT/SIGTERM;
                           SIGHUP reloads the file (peers, proxies, forwards)
  sidecar check -c FILE    validate a file and print its warnings
  sidecar status [--socket PATH | -c FILE] [-j]
                           show a running sidecar: its peers, handshakes, transfer, listeners
  sidecar flows [--socket PATH | -c FILE] [-j]
                           show a running sidecar's latest flow-log window
  sidecar monitor [--socket PATH | -c FILE] [-j | -v | -x | -w FILE] [--type T] [--src|--dst|--addr P] [-n N]
                           print a running sidecar's live packet events, or write them to pcap
  sidecar genkey           print a new private key
  sidecar pubkey           read a private key on stdin, print its public key
  sidecar demo             run two nodes in one process, send traffic, show what happened
  sidecar collect --data DIR --token-file FILE [--listen ADDR]
                           run a log collector: store uploaded log streams, answer queries
  sidecar query --collector URL --token-file FILE [--since D] [--by K1,K2] [--top N] [--bucket B] [-j]
                           ask a collector which flows moved the most bytes, per node, per minute, ...

Run 'sidecar COMMAND --help' for a command's flags.
`

// errUsage marks an error caused by bad arguments (exit status 2).
var errUsage = errors.New("usage")

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes one command and returns the process exit status.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "-h", "--help", "-help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "up":
		err = cmdUp(rest, stdin, stdout, stderr)
	case "check":
		err = cmdCheck(rest, stdout, stderr)
	case "status":
		err = cmdStatus(rest, stdout, stderr)
	case "monitor":
		err = cmdMonitor(rest, stdout, stderr)
	case "flows":
		err = cmdFlows(rest, stdout, stderr)
	case "genkey":
		err = cmdGenkey(rest, stdout, stderr)
	case "pubkey":
		err = cmdPubkey(rest, stdin, stdout, stderr)
	case "demo":
		err = cmdDemo(rest, stdout, stderr)
	case "collect":
		err = cmdCollect(rest, stdout, stderr)
	case "query":
		err = cmdQuery(rest, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "sidecar: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	default:
		fmt.Fprintf(stderr, "sidecar %s: %v\n", args[0], err)
		return 1
	}
}

// newFlags makes a flag set that reports errors to stderr and returns them
// instead of exiting.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: sidecar %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		fs.Usage()
		return errUsage
	}
	return nil
}

func newLogger(w io.Writer, level string, json bool) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("bad log level %q (want debug, info, warn or error)", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	if json {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

// upOptions are the flags of "sidecar up".
type upOptions struct {
	file, level string
	logJSON     bool
	ownWG       bool // --wireguard wgdev
}

// parseUpFlags parses the arguments of "sidecar up".
func parseUpFlags(args []string, stderr io.Writer) (upOptions, error) {
	fs := newFlags("up", "up -c FILE [--log-level LEVEL] [--log-json] [--wireguard wireguard-go|wgdev]", stderr)
	var o upOptions
	fs.StringVar(&o.file, "c", "", "configuration `file` (wg-quick format plus sidecar sections); SIGHUP reloads it")
	fs.StringVar(&o.level, "log-level", "info", "log `level`: debug, info, warn, error")
	fs.BoolVar(&o.logJSON, "log-json", false, "log as JSON lines instead of text")
	impl := fs.String("wireguard", "wireguard-go", "WireGuard `implementation`: wireguard-go's device, or wgdev, the sidecar's own (faster, new)")
	if err := parseFlags(fs, args); err != nil {
		return o, err
	}
	switch *impl {
	case "wireguard-go":
	case "wgdev":
		o.ownWG = true
	default:
		fmt.Fprintf(stderr, "sidecar up: --wireguard %q: want wireguard-go or wgdev\n", *impl)
		fs.Usage()
		return o, errUsage
	}
	if o.file == "" {
		fmt.Fprintln(stderr, "sidecar up: -c FILE is required")
		fs.Usage()
		return o, errUsage
	}
	return o, nil
}

func cmdUp(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	o, err := parseUpFlags(args, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, o.level, o.logJSON)
	if err != nil {
		return err
	}
	cfg, err := wgconf.ParseFile(o.file)
	if err != nil {
		return err
	}
	// Signals are caught before the node starts, so that one arriving
	// during start-up still shuts it down cleanly.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	if len(cfg.STDIOTunnels) > 0 && cfg.FlowLog != nil && cfg.FlowLog.Output == "-" {
		return cfg.At(cfg.FlowLog, "Output", errors.New("[STDIOTunnel] uses stdout; set Output to a file"))
	}
	if cfg.Control == nil {
		// `sidecar status`, `flows` and `monitor` find a running sidecar
		// at its default socket.
		cfg.Control = &wgconf.Control{}
	}
	node, err := sidecar.Start(cfg, sidecar.Options{Logger: log, OwnWireGuard: o.ownWG})
	if err != nil {
		return err
	}
	if len(cfg.STDIOTunnels) > 0 {
		// wireproxy's [STDIOTunnel]: stdin and stdout are the connection
		// (an ssh ProxyCommand); the sidecar ends with it.
		err := stdioTunnel(ctx, node, cfg.STDIOTunnels[0].Target, stdin, stdout)
		if cerr := node.Close(); err == nil {
			err = cerr
		}
		return err
	}
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down", "signal", "SIGINT/SIGTERM")
			return node.Close()
		case <-hup:
			// The node logs what it applied, or why it refused.
			log.Info("reloading", "signal", "SIGHUP", "file", o.file)
			node.ReloadFile()
		}
	}
}

// stdioTunnel relays stdin and stdout to a TCP connection to target
// through the tunnel, with half-close, until both directions end or ctx
// is done.
func stdioTunnel(ctx context.Context, node *sidecar.Node, target string, stdin io.Reader, stdout io.Writer) error {
	c, err := node.DialContext(ctx, "tcp", target)
	if err != nil {
		return err
	}
	defer c.Close()
	go func() {
		io.Copy(c, stdin)
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}()
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(stdout, c)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return nil
	}
}

func cmdCheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("check", "check -c FILE", stderr)
	file := fs.String("c", "", "configuration `file` to validate")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *file == "" {
		fmt.Fprintln(stderr, "sidecar check: -c FILE is required")
		fs.Usage()
		return errUsage
	}
	cfg, err := wgconf.ParseFile(*file)
	if err != nil {
		return err
	}
	if x := cfg.IPFIX; x != nil {
		// As the node would at its start.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := ipfix.Resolve(ctx, x.Collector)
		cancel()
		if err != nil {
			return cfg.At(cfg.IPFIX, "Collector", err)
		}
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(stdout, "warning: %s\n", w)
	}
	fmt.Fprintf(stdout, "%s: OK (%d peer(s), public key %s)\n", *file, len(cfg.Peers), cfg.Interface.PrivateKey.Public())
	return nil
}

func cmdGenkey(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("genkey", "genkey", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	k, err := wgconf.GeneratePrivateKey()
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, k.Base64())
	return nil
}

func cmdPubkey(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("pubkey", "pubkey < PRIVATE_KEY", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	in, err := io.ReadAll(io.LimitReader(stdin, 4096))
	if err != nil {
		return err
	}
	k, err := wgconf.ParsePrivateKey(strings.TrimSpace(string(in)))
	if err != nil {
		return fmt.Errorf("reading private key from stdin: %w", err)
	}
	fmt.Fprintln(stdout, k.Public())
	return nil
}
