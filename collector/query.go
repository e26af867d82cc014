package collector

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// handleQuery serves GET /api/v1/logs?collection=C&start=T1&end=T2[&node=ID][&time=window].
func (s *Server) handleQuery(w http.ResponseWriter, r *http.Request) {
	if !s.checkRead(w, r) {
		return
	}
	v := r.URL.Query()
	var byWindow bool
	switch t := v.Get("time"); t {
	case "", "logged":
	case "window":
		byWindow = true
	default:
		s.refuse(w, r, badRequest("time=%q: want logged (the default) or window", t))
		return
	}
	coll := v.Get("collection")
	if herr := s.checkCollection(coll); herr != nil {
		s.refuse(w, r, herr)
		return
	}
	start, err := time.Parse(time.RFC3339Nano, v.Get("start"))
	if err != nil {
		s.refuse(w, r, badRequest("start=%q: want an RFC 3339 time", v.Get("start")))
		return
	}
	end, err := time.Parse(time.RFC3339Nano, v.Get("end"))
	if err != nil {
		s.refuse(w, r, badRequest("end=%q: want an RFC 3339 time", v.Get("end")))
		return
	}
	if end.Before(start) {
		s.refuse(w, r, badRequest("end is before start"))
		return
	}
	max := s.cfg.MaxQueryEntries
	logs, err := s.store.Query(r.Context(), Query{
		Collection: coll,
		Start:      start,
		End:        end,
		Node:       v.Get("node"),
		Limit:      max + 1,
		ByWindow:   byWindow,
	})
	if err != nil {
		s.storageFailed(w, r, "logs", err)
		return
	}
	if len(logs) > max {
		s.refuse(w, r, badRequest("the range holds more than %d entries; ask for shorter ranges", max))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	bw := bufio.NewWriterSize(w, 64<<10)
	bw.WriteString(`{"logs":[`)
	for i, e := range logs {
		if i > 0 {
			bw.WriteByte(',')
		}
		bw.Write(e)
	}
	bw.WriteString("]}\n")
	if err := bw.Flush(); err != nil {
		s.log.Debug("collector: writing a query answer", "err", fmt.Sprint(err))
	}
}

// authorized reports whether r carries the bearer token. The comparison
// takes the same time whatever the token given (both are hashed first, so
// not even the length leaks). An empty Config.Token authorises nobody.
func (s *Server) authorized(r *http.Request) bool {
	if s.cfg.Token == "" {
		return false
	}
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return subtle.ConstantTimeCompare(sum[:], s.tokenSum[:]) == 1
}
