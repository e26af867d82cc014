package collector

import (
	"bufio"
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"strconv"
	"time"
)

// handleFlows serves GET /api/v1/flows (SPEC §11): rows of sums per
// group, {"rows":[…]}.
func (s *Server) handleFlows(w http.ResponseWriter, r *http.Request) {
	if !s.checkRead(w, r) {
		return
	}
	v := r.URL.Query()
	if herr := s.checkCollection(v.Get("collection")); herr != nil {
		s.refuse(w, r, herr)
		return
	}
	q, err := ParseFlowQuery(v, s.now())
	if err != nil {
		s.refuse(w, r, badRequest("%v", err))
		return
	}
	rows, err := s.store.Flows(r.Context(), q)
	if err != nil {
		s.storageFailed(w, r, "flows", err)
		return
	}
	if len(rows) > s.cfg.MaxQueryEntries {
		s.refuse(w, r, badRequest("the answer holds %d rows, more than %d; ask for top=N, fewer group keys or a shorter range", len(rows), s.cfg.MaxQueryEntries))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	bw := bufio.NewWriterSize(w, 64<<10)
	bw.WriteString(`{"rows":[`)
	var buf []byte
	for i := range rows {
		if i > 0 {
			bw.WriteByte(',')
		}
		buf = AppendRowJSON(buf[:0], &q, &rows[i])
		bw.Write(buf)
	}
	bw.WriteString("]}\n")
	bw.Flush()
}

// AppendRowJSON appends row's JSON object to b: the group keys q asked
// for, in GroupKey order, then "bucket" if q has buckets, then the sums.
func AppendRowJSON(b []byte, q *FlowQuery, row *FlowRow) []byte {
	b = append(b, '{')
	str := func(name, val string) {
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, `":`...)
		b = strconv.AppendQuote(b, val)
		b = append(b, ',')
	}
	num := func(name string, val uint64) {
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, `":`...)
		b = strconv.AppendUint(b, val, 10)
		b = append(b, ',')
	}
	for _, g := range q.Group {
		switch g {
		case GroupNode:
			b = append(b, `"node":`...)
			nb, _ := json.Marshal(row.Node) // valid UTF-8 as JSON wants
			b = append(b, nb...)
			b = append(b, ',')
		case GroupClass:
			str("class", row.Class.String())
		case GroupProto:
			num("proto", uint64(row.Proto))
		case GroupSrc:
			str("src", row.Src.String())
		case GroupDst:
			str("dst", row.Dst.String())
		case GroupSrcAddr:
			str("srcAddr", addrString(row.Src.Addr))
		case GroupDstAddr:
			str("dstAddr", addrString(row.Dst.Addr))
		case GroupDstPort:
			num("dstPort", uint64(row.Dst.Port))
		case GroupPeer:
			str("peer", addrString(row.Peer))
		}
	}
	if q.Bucket > 0 {
		str("bucket", row.Bucket.UTC().Format(time.RFC3339))
	}
	num("txPkts", row.TxPkts)
	num("txBytes", row.TxBytes)
	num("rxPkts", row.RxPkts)
	num("rxBytes", row.RxBytes)
	num("flows", row.Flows)
	b[len(b)-1] = '}'
	return b
}

// handleNodes serves GET /api/v1/nodes?collection=C.
func (s *Server) handleNodes(w http.ResponseWriter, r *http.Request) {
	if !s.checkRead(w, r) {
		return
	}
	v := r.URL.Query()
	for name := range v {
		if name != "collection" {
			s.refuse(w, r, badRequest("%s: unknown parameter (want collection)", name))
			return
		}
	}
	coll := v.Get("collection")
	if herr := s.checkCollection(coll); herr != nil {
		s.refuse(w, r, herr)
		return
	}
	nodes, err := s.store.Nodes(r.Context(), coll)
	if err != nil {
		s.storageFailed(w, r, "nodes", err)
		return
	}
	type nodeJSON struct {
		Node        string    `json:"node"`
		FirstWindow time.Time `json:"firstWindow"`
		LastWindow  time.Time `json:"lastWindow"`
		TxBytes     uint64    `json:"txBytes"`
		RxBytes     uint64    `json:"rxBytes"`
	}
	out := struct {
		Nodes []nodeJSON `json:"nodes"`
	}{Nodes: make([]nodeJSON, len(nodes))}
	for i, n := range nodes {
		out.Nodes[i] = nodeJSON{n.Node, n.FirstWindow.UTC(), n.LastWindow.UTC(), n.TxBytes, n.RxBytes}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

// checkRead refuses a read without the bearer token.
func (s *Server) checkRead(w http.ResponseWriter, r *http.Request) bool {
	if s.authorized(r) {
		return true
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="collector"`)
	s.refuse(w, r, &httpError{http.StatusUnauthorized, "reads need Authorization: Bearer TOKEN"})
	return false
}

// storageFailed answers 503 for a storage error, unless the client left.
func (s *Server) storageFailed(w http.ResponseWriter, r *http.Request, what string, err error) {
	if r.Context().Err() != nil || errors.Is(err, r.Context().Err()) {
		return
	}
	s.log.Error("collector: "+what+" query failed", "err", err)
	s.refuse(w, r, &httpError{http.StatusServiceUnavailable, "storage failed; try again"})
}

// addrString is a's text, or "" for the zero Addr.
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
