// Package console is the collector's web page: one static page (HTML, CSS,
// a script) that signs in with the collector's read token and shows
// traffic over time, top talkers and a map of who talks to whom, all
// through the collector's query API (/api/v1/flows, /api/v1/nodes). It
// holds no data and makes no query of its own.
//
// The files are embedded, so `go build` and `go run` need no build step
// and the page loads nothing from elsewhere at run time. The charting
// library (uPlot) sits unmodified, with its licence, in third_party/; `go
// generate ./console` brings it with npm from package-lock.json.
package console

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:generate ./fetch-deps.sh

//go:embed index.html app.js app.css third_party
var files embed.FS

// Handler serves the page at "/" and its files below it. Responses carry
// a Content-Security-Policy that lets the page load only its own files and
// talk only to its own origin.
func Handler() http.Handler {
	sub, err := fs.Sub(files, ".")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	static := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		if r.URL.Path == "/" || strings.HasSuffix(r.URL.Path, ".html") {
			h.Set("Cache-Control", "no-cache")
		} else {
			h.Set("Cache-Control", "max-age=300")
		}
		static.ServeHTTP(w, r)
	})
}
