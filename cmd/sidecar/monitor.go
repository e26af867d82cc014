package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/wgsidecar/sidecar/control"
	"github.com/wgsidecar/sidecar/monitor"
)

// monitorUsage heads `sidecar monitor --help`, before its flags.
const monitorUsage = `Usage: sidecar monitor [--socket PATH | -c FILE] [-j | -v | -x | -w FILE] [--type T] [--src|--dst|--addr P] [-n N]

Prints the live events of a running sidecar, one line each, until
SIGINT/SIGTERM or -n events: packets at the tunnel device (from-peer,
to-peer) and on the WireGuard socket (from-network, to-network), a
proxy's or forward's connections (from-app, to-app), drops with their
numbered reasons, and connection records. The filters narrow what the
sidecar sends; -w writes the packets of both layers to a pcap file.

Examples:
  sidecar monitor --addr 10.0.0.2           packets to and from one peer address
  sidecar monitor --type drop -x            only drops, each with a hex dump
  sidecar monitor -w cap.pcap -n 1000       1,000 events into a pcap file

Flags:
`

// cmdMonitor prints a running sidecar's live events: one line each, JSON
// lines (-j), a dissection (-v) or a hex dump (-x); or writes their packets to a pcap file
// (-w). It runs until SIGINT/SIGTERM, or -n events.
func cmdMonitor(args []string, stdout, stderr io.Writer) error {
	fs, cf := newControlFlags("monitor", stderr)
	fs.Lookup("j").Usage = "print each event as a line of JSON"
	fs.Usage = func() {
		fmt.Fprint(stderr, monitorUsage)
		fs.PrintDefaults()
	}
	verbose := fs.Bool("v", false, "dissect each packet")
	hexDump := fs.Bool("x", false, "print each packet in hex after its line")
	pcapFile := fs.String("w", "", "write the packets to this pcap `file` instead of printing them")
	count := fs.Int("n", 0, "stop after this many `events` (0: run until interrupted)")
	kinds := fs.String("type", "", "event `types` to show: trace, drop, conn (comma-separated; default all)")
	src := fs.String("src", "", "only packets from this `address or prefix`")
	dst := fs.String("dst", "", "only packets to this `address or prefix`")
	addr := fs.String("addr", "", "only packets with this `address or prefix` at either end")
	if err := cf.parse(fs, args); err != nil {
		return err
	}
	path, err := cf.socketPath()
	if err != nil {
		return err
	}
	q := url.Values{}
	for key, v := range map[string]string{"kind": *kinds, "src": *src, "dst": *dst, "addr": *addr} {
		if v != "" {
			q.Set(key, v)
		}
	}
	var pcap *monitor.PcapWriter
	if *pcapFile != "" {
		f, err := os.OpenFile(*pcapFile, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		if pcap, err = monitor.NewPcapWriter(f); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	seen, written := 0, 0
	errDone := errors.New("done")
	err = control.NewClient(path).Stream(ctx, control.PathMonitor+"?"+q.Encode(), func(line []byte) error {
		var ev monitor.Event
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("sidecar at %s: bad event: %w", path, err)
		}
		if pcap != nil && len(ev.Packet) > 0 {
			if err := pcap.WritePacket(ev.Time, ev.Packet); err != nil {
				return err
			}
			written++
		} else if pcap == nil {
			if err := printEvent(stdout, ev, cf.json, *verbose, *hexDump); err != nil {
				return err
			}
		}
		if seen++; *count > 0 && seen >= *count {
			return errDone
		}
		return nil
	})
	if pcap != nil {
		fmt.Fprintf(stderr, "%d packets written to %s\n", written, *pcapFile)
	}
	if errors.Is(err, errDone) || ctx.Err() != nil {
		return nil
	}
	return err
}

// printEvent prints one event in the form asked for: JSON, a dissection,
// a line with a hex dump, or one line.
func printEvent(w io.Writer, ev monitor.Event, asJSON, verbose, hexDump bool) error {
	switch {
	case asJSON:
		b, err := monitor.FormatJSON(ev)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s\n", b)
	case verbose:
		fmt.Fprintln(w, monitor.FormatVerbose(ev))
	case hexDump:
		fmt.Fprintln(w, monitor.FormatHex(ev))
	default:
		fmt.Fprintln(w, monitor.FormatLine(ev))
	}
	return nil
}
