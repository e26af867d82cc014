package collector

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/wgsidecar/sidecar/logproto"
)

// FuzzUploadBody feeds arbitrary bodies, plain or as zstd, to the upload
// parser. It must never panic; it must refuse with 400 or 413; and what it
// accepts must be exactly what encoding/json reads from the same body,
// each entry with the collector's "logged" and nothing else changed.
func FuzzUploadBody(f *testing.F) {
	seeds := []string{
		`[]`,
		` [ ] `,
		`[{}]`,
		entry("n1", "p", 1, `"start":"2026-01-01T00:00:00Z","virtualTraffic":[{"proto":6,"src":"10.0.0.1:1","dst":"10.0.0.2:80","txPkts":1,"txBytes":60,"rxPkts":1,"rxBytes":60}]`),
		`[` + entry("n", "p", 1, "") + `,` + entry("n", "p", 2, `"logged":"x"`) + `]`,
		`[{"logged":1,"logged":2,"nodeId":"a","nodeId":"b"}]`,
		`[{"\u006cogged":"x","k\"ey":"v\\","u":"\u00e9\ud83d\ude00"}]`,
		`[{"a":[[[[{}]]]],"b":{"c":{"d":null}},"e":-0.5e-7,"f":true,"g":false}]`,
		`[{"logtail":{"proc_id":123,"proc_seq":18446744073709551615}}]`,
		`[{"logtail":{"proc_id":"","proc_seq":1.5}}]`,
		`[{"a":1}] x`,
		`[{"a":1},]`,
		`[1]`,
		`{"a":1}`,
		`[{"a":"` + "\xff\xfe" + `"}]`,
		"",
	}
	for _, s := range seeds {
		f.Add([]byte(s), false)
		f.Add(zstdOf([]byte(s)), true)
	}
	logged := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	loggedText := logged.Format(time.RFC3339Nano)
	f.Fuzz(func(t *testing.T, body []byte, compressed bool) {
		const maxDecoded = 1 << 20
		var src io.Reader = bytes.NewReader(body)
		plain := body
		if compressed {
			d, err := zstd.NewReader(src, zstd.WithDecoderConcurrency(1),
				zstd.WithDecoderMaxWindow(logproto.MaxZstdWindow), zstd.WithDecoderMaxMemory(maxDecoded))
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			src = zstdReader{d}
			plain = nil // known only if it decodes
		}
		entries, err := parseUpload(src, maxDecoded, Entry{Collection: "c", Logged: logged})
		if err != nil {
			var herr *httpError
			if !errors.As(err, &herr) || herr.code != http.StatusBadRequest && herr.code != http.StatusRequestEntityTooLarge {
				t.Fatalf("error %v is not a 400 or 413", err)
			}
			return
		}
		for i, e := range entries {
			var m map[string]any
			if err := json.Unmarshal(e.JSON, &m); err != nil {
				t.Fatalf("entry %d stored as invalid JSON %q: %v", i, e.JSON, err)
			}
			if m["logged"] != loggedText {
				t.Fatalf("entry %d: logged = %v, want %s", i, m["logged"], loggedText)
			}
			if node, ok := m["nodeId"].(string); ok && node != e.NodeID {
				t.Fatalf("entry %d: NodeID %q, nodeId member %q", i, e.NodeID, node)
			}
		}
		if plain == nil {
			return
		}
		var want []map[string]any
		if err := json.Unmarshal(plain, &want); err != nil {
			t.Fatalf("accepted %q, which encoding/json refuses: %v", plain, err)
		}
		if len(want) != len(entries) {
			t.Fatalf("accepted %d entries, encoding/json reads %d", len(entries), len(want))
		}
		for i, e := range entries {
			var got map[string]any
			json.Unmarshal(e.JSON, &got)
			delete(got, "logged")
			delete(want[i], "logged")
			if !reflect.DeepEqual(got, want[i]) {
				t.Fatalf("entry %d changed:\n got  %v\n want %v", i, got, want[i])
			}
		}
	})
}
