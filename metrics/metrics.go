// Package metrics writes metrics in the Prometheus text exposition format
// (version 0.0.4): families of counters and gauges, each introduced by its
// HELP and TYPE lines, with names checked and label values escaped.
//
// A Registry holds no counters: each subsystem registers a collector that
// builds its families from its own counters on every scrape. The package
// knows nothing of what is measured, nor of WireGuard or the sidecar.
package metrics

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
)

// ContentType is the media type of the text exposition format.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Type is a metric family's type.
type Type string

const (
	// Counter only goes up (and resets to zero when the process restarts).
	// By convention its name ends in "_total".
	Counter Type = "counter"
	// Gauge goes up and down.
	Gauge Type = "gauge"
)

// Label is one label of a sample.
type Label struct {
	Name, Value string
}

// Sample is one value of a family, told apart from the family's other
// samples by its labels.
type Sample struct {
	Labels []Label
	Value  float64
}

// Family is one metric: its name, type, help text and samples. A family
// with no sample is still declared (HELP and TYPE lines).
type Family struct {
	Name    string
	Type    Type
	Help    string
	Samples []Sample
}

// Add appends a sample with labels given as name, value pairs.
func (f *Family) Add(value float64, labels ...string) {
	if len(labels)%2 != 0 {
		panic("metrics: Add with an odd number of label strings")
	}
	s := Sample{Value: value}
	for i := 0; i < len(labels); i += 2 {
		s.Labels = append(s.Labels, Label{Name: labels[i], Value: labels[i+1]})
	}
	f.Samples = append(f.Samples, s)
}

// One returns a family of a single sample without labels: a counter or
// gauge that is one number.
func One(name string, typ Type, help string, value float64) Family {
	f := Family{Name: name, Type: typ, Help: help}
	f.Add(value)
	return f
}

// Write writes families to w in the text exposition format, in the order
// given. It refuses (before writing anything) a family with an invalid or
// repeated name, an unknown type, or a sample with an invalid or repeated
// label name.
func Write(w io.Writer, families []Family) error {
	if err := check(families); err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	for _, f := range families {
		bw.WriteString("# HELP ")
		bw.WriteString(f.Name)
		if f.Help != "" {
			bw.WriteByte(' ')
			bw.WriteString(escapeHelp(f.Help))
		}
		bw.WriteString("\n# TYPE ")
		bw.WriteString(f.Name)
		bw.WriteByte(' ')
		bw.WriteString(string(f.Type))
		bw.WriteByte('\n')
		for _, s := range f.Samples {
			bw.WriteString(f.Name)
			if len(s.Labels) > 0 {
				bw.WriteByte('{')
				for i, l := range s.Labels {
					if i > 0 {
						bw.WriteByte(',')
					}
					bw.WriteString(l.Name)
					bw.WriteString(`="`)
					bw.WriteString(escapeLabel(l.Value))
					bw.WriteByte('"')
				}
				bw.WriteByte('}')
			}
			bw.WriteByte(' ')
			bw.WriteString(FormatValue(s.Value))
			bw.WriteByte('\n')
		}
	}
	return bw.Flush()
}

func check(families []Family) error {
	seen := make(map[string]bool, len(families))
	for _, f := range families {
		if !ValidName(f.Name) {
			return fmt.Errorf("metrics: invalid metric name %q", f.Name)
		}
		if seen[f.Name] {
			return fmt.Errorf("metrics: family %q written twice", f.Name)
		}
		seen[f.Name] = true
		if f.Type != Counter && f.Type != Gauge {
			return fmt.Errorf("metrics: family %q has unknown type %q", f.Name, f.Type)
		}
		for _, s := range f.Samples {
			for i, l := range s.Labels {
				if !ValidLabelName(l.Name) {
					return fmt.Errorf("metrics: family %q: invalid label name %q", f.Name, l.Name)
				}
				for _, o := range s.Labels[:i] {
					if o.Name == l.Name {
						return fmt.Errorf("metrics: family %q: label %q repeated", f.Name, l.Name)
					}
				}
			}
		}
	}
	return nil
}

// ValidName reports whether s is a valid metric name:
// [a-zA-Z_:][a-zA-Z0-9_:]*.
func ValidName(s string) bool { return validName(s, true) }

// ValidLabelName reports whether s is a valid label name:
// [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__" (reserved).
func ValidLabelName(s string) bool {
	return validName(s, false) && !strings.HasPrefix(s, "__")
}

func validName(s string, colon bool) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		case c == ':' && colon:
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// escapeHelp escapes a help text: backslash and line feed.
func escapeHelp(s string) string {
	if !strings.ContainsAny(s, "\\\n") {
		return s
	}
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}

// escapeLabel escapes a label value: backslash, double quote and line feed.
func escapeLabel(s string) string {
	if !strings.ContainsAny(s, "\\\"\n") {
		return s
	}
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

// FormatValue formats a sample value as the format wants it: integers
// without exponent up to 2^53, "+Inf", "-Inf" and "NaN".
func FormatValue(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	case v == math.Trunc(v) && math.Abs(v) < 1<<53:
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// Handler serves the families collect returns, afresh on every request,
// in the text format. Only GET and HEAD are allowed.
func Handler(collect func() []Family) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		var b strings.Builder
		if err := Write(&b, collect()); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", ContentType)
		if r.Method == http.MethodHead {
			return
		}
		io.WriteString(w, b.String())
	})
}
