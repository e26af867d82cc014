package collector

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// referenceTraffic is the plain reading of a traffic member that
// appendTraffic must equal: encoding/json into trafficEntry, entry by
// entry (an entry that does not decode is left out), then parseEndpoint.
func referenceTraffic(c Class, raw []byte) []Flow {
	var out []Flow
	if len(raw) == 0 || raw[0] != '[' {
		return out
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil {
		return out
	}
	for dec.More() {
		var one json.RawMessage
		if dec.Decode(&one) != nil {
			break
		}
		var e trafficEntry
		if json.Unmarshal(one, &e) != nil {
			continue
		}
		src, ok1 := parseEndpoint(e.Src)
		dst, ok2 := parseEndpoint(e.Dst)
		if !ok1 || !ok2 {
			continue
		}
		out = append(out, Flow{Class: c, Proto: e.Proto, Src: src, Dst: dst,
			TxPkts: e.TxPkts, TxBytes: e.TxBytes, RxPkts: e.RxPkts, RxBytes: e.RxBytes})
	}
	return out
}

// FuzzTraffic checks the direct reading of a traffic member (the
// collector's hot path) against encoding/json's, on any valid JSON.
func FuzzTraffic(f *testing.F) {
	for _, s := range []string{
		`[{"proto":6,"src":"10.0.0.1:1","dst":"10.0.0.2:80","txPkts":1,"txBytes":60,"rxPkts":1,"rxBytes":60}]`,
		`[{"proto":17,"src":"[fd00::1]:53","dst":"[fd00::2%eth0]:53","txBytes":18446744073709551615}]`,
		`[{"proto":256,"src":"1.2.3.4:5"},{"proto":1,"src":"","dst":""}]`,
		`[{"PROTO":6,"Src":"1.2.3.4:5","dst":"1.2.3.4:0080"},{"txBytes":-1},{"txBytes":1.0},{"txBytes":1e3}]`,
		`[{"src":"01.2.3.4:5"},{"src":"1.2.3.4:65536"},{"src":"1.2.3.4:000080"},{"src":"1.2.3:4"},{"src":"::ffff:1.2.3.4:5"}]`,
		`[{"src":"1.2.3.4:5","dst":"\u0031.2.3.4:5"},{"s\u0072c":"9.9.9.9:9"},{"ſrc":"1.1.1.1:1"},{"txpKts":3}]`,
		`[null,1,"x",[],{},{"src":null,"txBytes":null},{"proto":6,"proto":7,"src":"1.1.1.1:1","src":"2.2.2.2:2"}]`,
		`[{"src":"255.255.255.255:65535","dst":"0.0.0.0:0"},{"src":"256.1.1.1:1"},{"src":"1.2.3.4:"},{"src":":80"}]`,
		`{"proto":6}`,
		`[ {"proto" : 6 , "src":"1.2.3.4:5"} ]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !json.Valid(raw) {
			return
		}
		var b bytes.Buffer
		json.Compact(&b, raw) // appendTraffic reads compact JSON, as the stamper hands it over
		got := appendTraffic(nil, ClassSubnet, b.Bytes())
		want := referenceTraffic(ClassSubnet, b.Bytes())
		if len(got) == 0 && len(want) == 0 {
			return
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s:\n got %+v\nwant %+v", raw, got, want)
		}
	})
}
