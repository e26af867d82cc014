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
	values := map[key][]float64{}
	var benches []string           // comparative benchmarks, in order of appearance
	impls := map[string][]string{} // bench → implementations, in order
	var units []string
	failed, results := false, 0

	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		fmt.Println(line)
		if strings.HasPrefix(line, "FAIL") || strings.HasPrefix(line, "--- FAIL") || strings.HasPrefix(line, "panic:") {
			failed = true
		}
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		results++
		name := procSuffix.ReplaceAllString(f[0], "")
		var parts []string
		impl := ""
		for _, p := range strings.Split(name, "/") {
			if v, ok := strings.CutPrefix(p, "impl="); ok {
				impl = v
				continue
			}
			parts = append(parts, p)
		}
		if impl == "" {
			continue
		}
		bench := strings.TrimPrefix(strings.Join(parts, "/"), "Benchmark")
		if !slices.Contains(benches, bench) {
			benches = append(benches, bench)
		}
		if !slices.Contains(impls[bench], impl) {
			impls[bench] = append(impls[bench], impl)
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			unit := f[i+1]
			if err != nil || skipped[unit] {
				continue
			}
			if !slices.Contains(units, unit) {
				units = append(units, unit)
			}
			k := key{bench, impl, unit}
			values[k] = append(values[k], v)
		}
	}

	if len(benches) > 0 {
		fmt.Println()
		fmt.Println("| case | metric | impl | median | stock | ratio (>1: ours better) | runs |")
		fmt.Println("|---|---|---|---|---|---|---|")
		for _, bench := range benches {
			for _, unit := range units {
				if unit == "ns/op" && hasRate(values, bench) {
					continue // the rate says the same
				}
				base, hasBase := median(values[key{bench, baseline, unit}])
				for _, impl := range impls[bench] {
					if impl == baseline {
						continue
					}
					vs := values[key{bench, impl, unit}]
					v, ok := median(vs)
					if !ok {
						continue
					}
					stock, ratio := "", ""
					if hasBase {
						stock = format(base)
						if r, ok := better(v, base, lowerIsBetter[unit]); ok {
							ratio = fmt.Sprintf("%.2f×", r)
						}
					}
					fmt.Printf("| %s | %s | %s | %s | %s | %s | %d |\n", bench, unit, impl, format(v), stock, ratio, len(vs))
				}
			}
		}
	}
	if failed || results == 0 {
		fmt.Fprintln(os.Stderr, "benchratio: benchmarks failed or printed no result")
		os.Exit(1)
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
