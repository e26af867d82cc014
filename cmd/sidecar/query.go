package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// cmdQuery asks a collector's /api/v1/flows and prints the rows as an
// aligned table with a total line, or the API's JSON with -j.
func cmdQuery(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("query",
		"query --collector URL --token-file FILE [--collection C] [--since D | --start T --end T] [--by K1,K2] [--top N] [--bucket B] [--node ID] [--class C] [-j]",
		stderr)
	base := fs.String("collector", "", "the collector's base `URL` (http://127.0.0.1:8080)")
	tokenFile := fs.String("token-file", "", "`file` holding the collector's bearer token")
	collection := fs.String("collection", "default", "the `collection` to query")
	since := fs.String("since", "", "the last `duration` of windows (10m, 2h, 30d); the default is the last hour")
	start := fs.String("start", "", "windows starting at or after this RFC 3339 `time`")
	end := fs.String("end", "", "windows starting before this RFC 3339 `time` (default now)")
	by := fs.String("by", "", "comma-separated group `keys`: node, class, proto, src, dst, srcAddr, dstAddr, dstPort, peer (default: totals)")
	top := fs.String("top", "", "only the `N` groups with the most bytes")
	bucket := fs.String("bucket", "", "sum per time `bucket`: 1m, 5m or 1h")
	node := fs.String("node", "", "only this node's `ID`")
	class := fs.String("class", "", "only this `class`: virtual, subnet, exit, physical")
	proto := fs.String("proto", "", "only this `protocol` (tcp, udp, icmp or a number)")
	addr := fs.String("addr", "", "only flows with either end in this `address or prefix`")
	port := fs.String("port", "", "only flows with either end on this `port`")
	asJSON := fs.Bool("j", false, "print the API's JSON instead of a table")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *base == "" || *tokenFile == "" {
		fmt.Fprintln(stderr, "sidecar query: --collector URL and --token-file FILE are required")
		fs.Usage()
		return errUsage
	}
	token, err := readToken(*tokenFile)
	if err != nil {
		return err
	}
	v := url.Values{"collection": {*collection}}
	for name, val := range map[string]string{"since": *since, "start": *start, "end": *end, "group": *by, "top": *top,
		"bucket": *bucket, "node": *node, "class": *class, "proto": *proto, "addr": *addr, "port": *port} {
		if val != "" {
			v.Set(name, val)
		}
	}
	body, err := getAPI(strings.TrimSuffix(*base, "/")+"/api/v1/flows?"+v.Encode(), token)
	if err != nil {
		return err
	}
	if *asJSON {
		_, err := stdout.Write(body)
		return err
	}
	var ans struct {
		Rows []map[string]json.RawMessage `json:"rows"`
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		return fmt.Errorf("the collector's answer is not the API's JSON: %w", err)
	}
	return printRows(stdout, ans.Rows, *by, *bucket != "")
}

// getAPI GETs url with the bearer token and returns the body of a 200,
// or the collector's refusal as an error.
func getAPI(url, token string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("asking the collector: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the collector's answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		msg := strings.TrimSpace(string(body))
		if resp.StatusCode == http.StatusBadRequest {
			return nil, errors.New("the collector refused the query: " + msg)
		}
		return nil, fmt.Errorf("the collector answered %s: %s", resp.Status, msg)
	}
	return body, nil
}

// printRows writes the rows as an aligned table: the group keys in the
// order asked, the bucket, bytes (humanised) and packets each way, the
// flows summed, and a total line.
func printRows(w io.Writer, rows []map[string]json.RawMessage, by string, bucketed bool) error {
	var keys []string
	for k := range strings.SplitSeq(by, ",") {
		if k = strings.TrimSpace(k); k != "" && !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	if bucketed {
		keys = append([]string{"bucket"}, keys...)
	}
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	head := make([]string, 0, len(keys)+5)
	for _, k := range keys {
		head = append(head, strings.ToUpper(k))
	}
	fmt.Fprintln(tw, strings.Join(append(head, "TX", "RX", "TXPKTS", "RXPKTS", "FLOWS"), "\t"))
	var total [5]uint64
	for _, r := range rows {
		cells := make([]string, 0, len(head)+5)
		for _, k := range keys {
			cells = append(cells, cell(r[k]))
		}
		var n [5]uint64
		for i, k := range []string{"txBytes", "rxBytes", "txPkts", "rxPkts", "flows"} {
			n[i], _ = strconv.ParseUint(string(r[k]), 10, 64)
			total[i] += n[i]
		}
		cells = append(cells, humanBytes(n[0]), humanBytes(n[1]), strconv.FormatUint(n[2], 10), strconv.FormatUint(n[3], 10), strconv.FormatUint(n[4], 10))
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	// The total line; without group keys the one row is the total.
	if len(keys) > 0 {
		label := make([]string, len(keys))
		label[0] = fmt.Sprintf("total (%d rows)", len(rows))
		fmt.Fprintln(tw, strings.Join(append(label, humanBytes(total[0]), humanBytes(total[1]),
			strconv.FormatUint(total[2], 10), strconv.FormatUint(total[3], 10), strconv.FormatUint(total[4], 10)), "\t"))
	}
	return tw.Flush()
}

// cell is a JSON value as a table cell: a string without quotes ("-" if
// empty), a number as it is.
func cell(v json.RawMessage) string {
	if len(v) > 0 && v[0] == '"' {
		var s string
		if json.Unmarshal(v, &s) == nil {
			if s == "" {
				return "-"
			}
			return s
		}
	}
	if s := string(bytes.TrimSpace(v)); s != "" {
		return s
	}
	return "-"
}

// humanBytes writes n bytes in binary units: 512 B, 1.5 KiB, 12.3 MiB.
func humanBytes(n uint64) string {
	if n < 1024 {
		return strconv.FormatUint(n, 10) + " B"
	}
	v := float64(n)
	for _, unit := range []string{"KiB", "MiB", "GiB", "TiB", "PiB"} {
		v /= 1024
		if v < 1024 || unit == "PiB" {
			return strconv.FormatFloat(v, 'f', 1, 64) + " " + unit
		}
	}
	return ""
}
