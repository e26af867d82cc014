package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/control"
	"github.com/wgsidecar/sidecar/netlog"
	"github.com/wgsidecar/sidecar/wgconf"
)

// requestTimeout bounds one request to the control socket.
const requestTimeout = 10 * time.Second

// controlFlags are the flags of the commands that talk to a running
// sidecar.
type controlFlags struct {
	socket, file string
	json         bool
}

func newControlFlags(name string, stderr io.Writer) (*flag.FlagSet, *controlFlags) {
	fs := newFlags(name, name+" [--socket PATH | -c FILE] [-j]", stderr)
	var cf controlFlags
	fs.StringVar(&cf.socket, "socket", "", "control socket `path` of the running sidecar")
	fs.StringVar(&cf.file, "c", "", "configuration `file` of the running sidecar: its [Control] Socket, or the default for its key")
	fs.BoolVar(&cf.json, "j", false, "print the API's JSON answer")
	return fs, &cf
}

// parse parses the command's arguments.
func (cf *controlFlags) parse(fs *flag.FlagSet, args []string) error {
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if cf.socket != "" && cf.file != "" {
		fmt.Fprintln(fs.Output(), "--socket and -c both name the sidecar; give one")
		fs.Usage()
		return errUsage
	}
	return nil
}

// socketPath finds the control socket: --socket, else the file's [Control]
// Socket or the default for its key, else the only socket in the default
// directory.
func (cf *controlFlags) socketPath() (string, error) {
	switch {
	case cf.socket != "":
		return cf.socket, nil
	case cf.file != "":
		cfg, err := wgconf.ParseFile(cf.file)
		if err != nil {
			return "", err
		}
		if c := cfg.Control; c != nil && c.Socket != "" {
			return c.Socket, nil
		}
		return control.DefaultSocket(sidecar.NodeID(cfg.Interface.PrivateKey.Public())), nil
	}
	dir := control.DefaultDir()
	found, _ := filepath.Glob(filepath.Join(dir, "*.sock"))
	switch len(found) {
	case 0:
		return "", fmt.Errorf("no sidecar found: no control socket in %s; name the sidecar with --socket PATH or -c FILE", dir)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("%d control sockets in %s (%s); name the sidecar with --socket PATH or -c FILE", len(found), dir, strings.Join(found, ", "))
}

// fetch asks the sidecar for apiPath. With -j it prints the answer,
// indented, and reports printed; otherwise it decodes the answer into v.
func (cf *controlFlags) fetch(stdout io.Writer, apiPath string, v any) (printed bool, err error) {
	path, err := cf.socketPath()
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	body, err := control.NewClient(path).Get(ctx, apiPath)
	if err != nil {
		return false, err
	}
	if cf.json {
		var out bytes.Buffer
		if err := json.Indent(&out, body, "", "  "); err != nil {
			return false, fmt.Errorf("sidecar at %s: bad answer: %w", path, err)
		}
		_, err := stdout.Write(out.Bytes())
		return true, err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return false, fmt.Errorf("sidecar at %s: bad answer: %w", path, err)
	}
	return false, nil
}

func cmdStatus(args []string, stdout, stderr io.Writer) error {
	fs, cf := newControlFlags("status", stderr)
	if err := cf.parse(fs, args); err != nil {
		return err
	}
	var st control.Status
	if printed, err := cf.fetch(stdout, control.PathStatus, &st); err != nil || printed {
		return err
	}
	return printStatus(stdout, &st)
}

func cmdFlows(args []string, stdout, stderr io.Writer) error {
	fs, cf := newControlFlags("flows", stderr)
	if err := cf.parse(fs, args); err != nil {
		return err
	}
	var fl control.Flows
	if printed, err := cf.fetch(stdout, control.PathFlows, &fl); err != nil || printed {
		return err
	}
	return printFlows(stdout, &fl)
}

// printStatus prints st in the manner of "wg show": the node, then one
// block per peer, then the listeners as a table.
func printStatus(w io.Writer, st *control.Status) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "node: %s\n", st.NodeID)
	fmt.Fprintf(tw, "  public key:\t%s\n", st.PublicKey)
	fmt.Fprintf(tw, "  addresses:\t%s\n", cmp.Or(strings.Join(st.Addresses, ", "), "(none)"))
	fmt.Fprintf(tw, "  listening port:\t%d\n", st.ListenPort)
	fmt.Fprintf(tw, "  uptime:\t%s\n", time.Duration(st.UptimeSeconds*float64(time.Second)).Round(time.Second))
	if f := st.FlowLog; f.Enabled {
		fmt.Fprintf(tw, "  flow log:\ton, %s windows, %d written\n", f.Window, f.Windows)
	} else {
		fmt.Fprintf(tw, "  flow log:\toff\n")
	}
	for _, p := range st.Peers {
		fmt.Fprintf(tw, "\npeer: %s\n", p.PublicKey)
		fmt.Fprintf(tw, "  endpoint:\t%s\n", cmp.Or(p.Endpoint, "(none)"))
		fmt.Fprintf(tw, "  allowed ips:\t%s\n", cmp.Or(strings.Join(p.AllowedIPs, ", "), "(none)"))
		fmt.Fprintf(tw, "  latest handshake:\t%s\n", handshakeAge(st.Time, p.LatestHandshake))
		fmt.Fprintf(tw, "  transfer:\t%s received, %s sent\n", byteSize(p.RxBytes), byteSize(p.TxBytes))
		if p.PersistentKeepalive > 0 {
			fmt.Fprintf(tw, "  persistent keepalive:\tevery %s\n", ago(time.Duration(p.PersistentKeepalive)*time.Second))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.Listeners) == 0 {
		return nil
	}
	fmt.Fprintf(w, "\nlistening:\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  KIND\tLISTEN\tTARGET\tOPEN\tACCEPTED\n")
	for _, l := range st.Listeners {
		open, accepted := "-", "-"
		if l.Conns != nil {
			open, accepted = strconv.Itoa(l.Conns.Open), strconv.FormatUint(l.Conns.Accepted, 10)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", l.Kind, l.Listen, cmp.Or(l.Target, "-"), open, accepted)
	}
	return tw.Flush()
}

// printFlows prints the latest window as a table, one line per flow, by
// class: virtual, subnet, exit, physical.
func printFlows(w io.Writer, fl *control.Flows) error {
	if !fl.FlowLog.Enabled {
		return errors.New("flow logging is off on this sidecar (its file has no [FlowLog] section; add one, even empty, to turn it on)")
	}
	if len(fl.Messages) == 0 {
		_, err := fmt.Fprintf(w, "no window with traffic yet (windows are %s)\n", fl.FlowLog.Window)
		return err
	}
	first, last := fl.Messages[0], fl.Messages[len(fl.Messages)-1]
	const stamp = "2006-01-02T15:04:05.000Z07:00"
	fmt.Fprintf(w, "node %s, latest window %s .. %s\n\n", first.NodeID, first.Start.UTC().Format(stamp), last.End.UTC().Format(stamp))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "CLASS\tPROTO\tSRC\tDST\tTX PKTS\tTX BYTES\tRX PKTS\tRX BYTES\n")
	for _, m := range fl.Messages {
		for _, class := range []struct {
			name  string
			flows []netlog.ConnectionCounts
		}{
			{"virtual", m.VirtualTraffic},
			{"subnet", m.SubnetTraffic},
			{"exit", m.ExitTraffic},
			{"physical", m.PhysicalTraffic},
		} {
			for _, c := range class.flows {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\n", class.name, protoName(c.Proto), cmp.Or(c.Src, "-"), cmp.Or(c.Dst, "-"),
					c.TxPackets, c.TxBytes, c.RxPackets, c.RxBytes)
			}
		}
	}
	return tw.Flush()
}

func protoName(p uint8) string {
	switch p {
	case 0:
		return "-"
	case 1:
		return "icmp"
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 58:
		return "icmpv6"
	}
	return strconv.Itoa(int(p))
}

// handshakeAge says how long before now the handshake was, as wg show does.
func handshakeAge(now, t time.Time) string {
	if t.IsZero() {
		return "(none)"
	}
	d := now.Sub(t)
	if d < time.Second {
		return "now"
	}
	return ago(d) + " ago"
}

// ago spells d out in days, hours, minutes and seconds: "1 minute, 5
// seconds".
func ago(d time.Duration) string {
	var parts []string
	for _, u := range []struct {
		d    time.Duration
		name string
	}{{24 * time.Hour, "day"}, {time.Hour, "hour"}, {time.Minute, "minute"}, {time.Second, "second"}} {
		if n := d / u.d; n > 0 {
			s := fmt.Sprintf("%d %s", n, u.name)
			if n > 1 {
				s += "s"
			}
			parts = append(parts, s)
			d -= n * u.d
		}
	}
	if len(parts) == 0 {
		return "0 seconds"
	}
	return strings.Join(parts, ", ")
}

// byteSize prints a byte count as wg show does: "123 B", "1.21 KiB".
func byteSize(n uint64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v := float64(n)
	for _, unit := range []string{"KiB", "MiB", "GiB"} {
		v /= 1024
		if v < 1024 {
			return fmt.Sprintf("%.2f %s", v, unit)
		}
	}
	return fmt.Sprintf("%.2f TiB", v/1024)
}
