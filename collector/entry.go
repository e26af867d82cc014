package collector

import (
	"bytes"
	"encoding/json"
	"errors"
	"time"

	"github.com/wgsidecar/sidecar/logproto"
)

// stamper turns a received JSON object into a stored Entry. It holds
// scratch space: one stamper serves one upload.
type stamper struct {
	logged  []byte // `"logged":"<RFC 3339 nano>"`
	compact bytes.Buffer
	out     []byte
}

func newStamper(logged time.Time) *stamper {
	s := &stamper{}
	s.logged = append(s.logged, `"logged":"`...)
	s.logged = logged.UTC().AppendFormat(s.logged, time.RFC3339Nano)
	s.logged = append(s.logged, '"')
	return s
}

// stamp fills e.JSON, e.NodeID, e.ProcID, e.ProcSeq and e.Window from raw, one valid
// JSON object. The stored JSON is compact, has any "logged" member of the
// client's replaced by the collector's, placed after "nodeId" (or first, if
// there is none), and keeps the other members in their order.
func (s *stamper) stamp(e *Entry, raw []byte) error {
	obj := raw
	if hasSpace(raw) {
		s.compact.Reset()
		if err := json.Compact(&s.compact, raw); err != nil {
			return err
		}
		obj = s.compact.Bytes()
	}
	var node, logtail []byte
	var win windowMembers
	err := forEachMember(obj, func(key, val []byte) {
		switch {
		case keyIs(key, "nodeId"):
			node = val
		case keyIs(key, logproto.StampMember):
			logtail = val
		default:
			win.note(key, val)
		}
	})
	if err != nil {
		return err
	}
	e.NodeID = ""
	if len(node) > 0 && node[0] == '"' {
		json.Unmarshal(node, &e.NodeID)
	}
	e.ProcID, e.ProcSeq = procKey(logtail)
	e.Window = win.window()

	out := append(s.out[:0], '{')
	if node == nil {
		out = append(out, s.logged...)
	}
	first := node != nil // else logged went first
	forEachMember(obj, func(key, val []byte) {
		if keyIs(key, "logged") {
			return
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, key...)
		out = append(out, ':')
		out = append(out, val...)
		if keyIs(key, "nodeId") && node != nil {
			out = append(out, ',')
			out = append(out, s.logged...)
			node = nil // only after the first one
		}
	})
	out = append(out, '}')
	s.out = out
	e.JSON = bytes.Clone(out)
	return nil
}

// hasSpace reports whether raw, valid JSON, has white space outside its
// strings (what json.Compact removes; a client's compact JSON has none,
// and skips that pass).
func hasSpace(raw []byte) bool {
	in := false
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case in && c == '\\':
			i++
		case c == '"':
			in = !in
		case !in && (c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			return true
		}
	}
	return false
}

// procKey extracts logtail.proc_id and logtail.proc_seq for deduplication.
// A proc_id may be a string or a number; anything unusable gives "".
func procKey(logtail []byte) (procID string, seq uint64) {
	if len(logtail) == 0 || logtail[0] != '{' {
		return "", 0
	}
	var lt struct { // tags: logproto.ProcID and logproto.ProcSeq
		ProcID  json.RawMessage `json:"proc_id"`
		ProcSeq *uint64         `json:"proc_seq"`
	}
	if json.Unmarshal(logtail, &lt) != nil || lt.ProcSeq == nil || len(lt.ProcID) == 0 {
		return "", 0
	}
	switch c := lt.ProcID[0]; {
	case c == '"':
		if json.Unmarshal(lt.ProcID, &procID) != nil {
			return "", 0
		}
	case c == '-' || '0' <= c && c <= '9':
		procID = "#" + string(lt.ProcID) // a number never equals a string
	}
	if procID == "" || len(procID) > maxProcIDBytes {
		return "", 0
	}
	return procID, *lt.ProcSeq
}

// keyIs reports whether key, a JSON string with its quotes, says name.
func keyIs(key []byte, name string) bool {
	if len(key) == len(name)+2 && string(key[1:len(key)-1]) == name {
		return true
	}
	if bytes.IndexByte(key, '\\') < 0 {
		return false
	}
	var s string
	return json.Unmarshal(key, &s) == nil && s == name
}

var errNotObject = errors.New("not a JSON object")

// forEachMember calls fn with each top-level member of obj, a compact,
// valid JSON object: key is the member's name with its quotes, val its
// value, both slices of obj. It reports malformed input rather than
// panicking, though the caller has validated obj.
func forEachMember(obj []byte, fn func(key, val []byte)) error {
	if len(obj) < 2 || obj[0] != '{' || obj[len(obj)-1] != '}' {
		return errNotObject
	}
	i := 1
	if obj[i] == '}' {
		return nil
	}
	for {
		if i >= len(obj) || obj[i] != '"' {
			return errNotObject
		}
		k := skipString(obj, i)
		if k < 0 || k >= len(obj) || obj[k] != ':' {
			return errNotObject
		}
		v := skipValue(obj, k+1)
		if v < 0 || v >= len(obj) {
			return errNotObject
		}
		fn(obj[i:k], obj[k+1:v])
		switch obj[v] {
		case ',':
			i = v + 1
		case '}':
			if v != len(obj)-1 {
				return errNotObject
			}
			return nil
		default:
			return errNotObject
		}
	}
}

// skipString returns the index just past the JSON string starting at
// b[i] (a quote), or -1.
func skipString(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// skipValue returns the index just past the compact JSON value starting
// at b[i], or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				j = skipString(b, j)
				if j < 0 {
					return -1
				}
				j--
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	default: // number, true, false, null
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' {
			j++
		}
		if j == i {
			return -1
		}
		return j
	}
}
