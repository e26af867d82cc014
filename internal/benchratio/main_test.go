package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		status int
		rows   []string // the table after the passed-through input
	}{
		{
			name: "rate and cost",
			in: `BenchmarkBulk/impl=stock-2 5 200000000 ns/op 150.00 MB/s 5.10 cpu-s/GB 1024 B/op
BenchmarkBulk/impl=ours-2 5 100000000 ns/op 400.00 MB/s 3.47 cpu-s/GB 2048 B/op
BenchmarkBulk/impl=stock-2 5 210000000 ns/op 140.00 MB/s 5.30 cpu-s/GB 1024 B/op
BenchmarkBulk/impl=ours-2 5 110000000 ns/op 390.00 MB/s 3.50 cpu-s/GB 2048 B/op
BenchmarkRR/size=64/impl=ours-2 1000 45000 ns/op
BenchmarkRR/size=64/impl=stock-2 1000 0 ns/op
BenchmarkPlain-2 1000 12 ns/op
PASS
`,
			rows: []string{
				"",
				"| case | metric | impl | median | stock | ratio (>1: ours better) | runs |",
				"|---|---|---|---|---|---|---|",
				"| Bulk | MB/s | ours | 395.0 | 145.0 | 2.72× | 2 |",
				"| Bulk | cpu-s/GB | ours | 3.485 | 5.200 | 1.49× | 2 |",
				"| RR/size=64 | ns/op | ours | 45000 | 0.000 | 0.00× | 1 |",
			},
		},
		{name: "no comparative benchmark", in: "BenchmarkPlain-2 1000 12 ns/op\nPASS\n"},
		{name: "failure", in: "BenchmarkX/impl=ours-2 10 5 ns/op\n--- FAIL: TestY\nFAIL\n", status: 1, rows: []string{
			"",
			"| case | metric | impl | median | stock | ratio (>1: ours better) | runs |",
			"|---|---|---|---|---|---|---|",
			"| X | ns/op | ours | 5.000 |  |  | 1 |",
		}},
		{name: "no result", in: "PASS\n", status: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if got := run(strings.NewReader(tt.in), &out, &errOut); got != tt.status {
				t.Errorf("status %d; want %d (stderr %q)", got, tt.status, errOut.String())
			}
			want := tt.in
			if len(tt.rows) > 0 {
				want += strings.Join(tt.rows, "\n") + "\n"
			}
			if out.String() != want {
				t.Errorf("output:\n%s\nwant:\n%s", out.String(), want)
			}
		})
	}
}
