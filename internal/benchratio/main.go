// Command benchratio reads `go test -bench` output on standard input,
// passes it through unchanged, and at the end prints a table of the median
// of every metric for each implementation of a comparative benchmark (the
// sub-benchmarks named impl=…) beside the impl=stock figure and the ratio.
// A ratio above 1 always means ours is better: for rates (MB/s, pkts/s,
// conn/s) it is ours/stock, for costs (ns/op, µs, per-GB, allocs) it is
// stock/ours.
//
//	go test -run '^$' -bench . -count 5 . | go run ./internal/benchratio
//
// It exits with status 1 when the input reports a failure or holds no
// benchmark result, so a pipeline that ends in it still fails.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// lowerIsBetter lists the units that are costs; every other unit is a rate.
var lowerIsBetter = map[string]bool{
	"ns/op": true, "p50-µs": true, "p99-µs": true, "cpu-s/GB": true,
	"minflt/GB": true, "B/op": true, "allocs/op": true, "loss-%": true,
}

// skipped units add nothing to the table.
var skipped = map[string]bool{"B/op": true}

const baseline = "stock"

var procSuffix = regexp.MustCompile(`-\d+$`)

type key struct{ bench, impl, unit string }

func main() {
	os.Exit(run(os.Stdin, os.Stdout, os.Stderr))
}

// run passes the benchmark output in through to out, prints the table
// after it, and returns the exit status: 1 if in reported a failure or
// held no benchmark result.
func run(in io.Reader, out, errOut io.Writer) int {
	var r results
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(out, line)
		r.add(line)
	}
	r.writeTable(out)
	if r.failed || r.count == 0 {
		fmt.Fprintln(errOut, "benchratio: benchmarks failed or printed no result")
		return 1
	}
	return 0
}

// results gathers the figures of the comparative benchmarks from the
// lines of `go test -bench` output. The zero value is ready for use.
type results struct {
	values  map[key][]float64
	benches []string            // comparative benchmarks, in order of appearance
	impls   map[string][]string // bench → implementations, in order
	units   []string            // in order of appearance
	failed  bool                // a line reported a failure or a panic
	count   int                 // benchmark result lines, comparative or not
}

// add reads one line of output: a failure, a benchmark result, or
// anything else, which it ignores.
func (r *results) add(line string) {
	if strings.HasPrefix(line, "FAIL") || strings.HasPrefix(line, "--- FAIL") || strings.HasPrefix(line, "panic:") {
		r.failed = true
	}
	f := strings.Fields(line)
	if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
		return
	}
	if _, err := strconv.Atoi(f[1]); err != nil {
		return
	}
	r.count++
	bench, impl := splitName(f[0])
	if impl == "" {
		return
	}
	if !slices.Contains(r.benches, bench) {
		r.benches = append(r.benches, bench)
	}
	if r.impls == nil {
		r.impls, r.values = map[string][]string{}, map[key][]float64{}
	}
	if !slices.Contains(r.impls[bench], impl) {
		r.impls[bench] = append(r.impls[bench], impl)
	}
	for i := 2; i+1 < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		unit := f[i+1]
		if err != nil || skipped[unit] {
			continue
		}
		if !slices.Contains(r.units, unit) {
			r.units = append(r.units, unit)
		}
		k := key{bench, impl, unit}
		r.values[k] = append(r.values[k], v)
	}
}

// splitName takes a result's name apart into the benchmark's (without
// "Benchmark", the impl= element and the -GOMAXPROCS suffix) and the
// implementation's, which is "" if the benchmark is not comparative.
func splitName(name string) (bench, impl string) {
	var parts []string
	for _, p := range strings.Split(procSuffix.ReplaceAllString(name, ""), "/") {
		if v, ok := strings.CutPrefix(p, "impl="); ok {
			impl = v
			continue
		}
		parts = append(parts, p)
	}
	return strings.TrimPrefix(strings.Join(parts, "/"), "Benchmark"), impl
}

// writeTable prints, after a blank line, one row per benchmark, metric
// and implementation other than the baseline: the median, the baseline's
// median and the ratio. It prints nothing without comparative benchmarks.
func (r *results) writeTable(out io.Writer) {
	if len(r.benches) == 0 {
		return
	}
	fmt.Fprintln(out)
	fmt.Fprintln(out, "| case | metric | impl | median | stock | ratio (>1: ours better) | runs |")
	fmt.Fprintln(out, "|---|---|---|---|---|---|---|")
	for _, bench := range r.benches {
		for _, unit := range r.units {
			if unit == "ns/op" && hasRate(r.values, bench) {
				continue // the rate says the same
			}
			base, hasBase := median(r.values[key{bench, baseline, unit}])
			for _, impl := range r.impls[bench] {
				if impl == baseline {
					continue
				}
				vs := r.values[key{bench, impl, unit}]
				v, ok := median(vs)
				if !ok {
					continue
				}
				stock, ratio := "", ""
				if hasBase {
					stock = format(base)
					if x, ok := better(v, base, lowerIsBetter[unit]); ok {
						ratio = fmt.Sprintf("%.2f×", x)
					}
				}
				fmt.Fprintf(out, "| %s | %s | %s | %s | %s | %s | %d |\n", bench, unit, impl, format(v), stock, ratio, len(vs))
			}
		}
	}
}

// hasRate reports whether bench has a rate metric that makes ns/op redundant.
func hasRate(values map[key][]float64, bench string) bool {
	for k := range values {
		if k.bench == bench && (k.unit == "MB/s" || k.unit == "pkts/s" || k.unit == "conn/s") {
			return true
		}
	}
	return false
}

// better is how many times better ours is than base.
func better(ours, base float64, lower bool) (float64, bool) {
	if lower {
		ours, base = base, ours
	}
	if base == 0 {
		return 0, false
	}
	return ours / base, true
}

func median(vs []float64) (float64, bool) {
	if len(vs) == 0 {
		return 0, false
	}
	s := slices.Sorted(slices.Values(vs))
	if len(s)%2 == 1 {
		return s[len(s)/2], true
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2, true
}

func format(v float64) string {
	switch {
	case v >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}
