package console

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// TestPageIsSelfContained: the page and every file it names are served
// from the embedded tree, none from elsewhere, under a policy that allows
// only the page's own origin.
func TestPageIsSelfContained(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, page := get("/")
	if resp.StatusCode != 200 || !strings.Contains(page, `id="signin-form"`) {
		t.Fatalf("GET /: %s\n%.200s", resp.Status, page)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	if strings.Contains(page, "http://") || strings.Contains(page, "https://") {
		t.Error("the page names another origin")
	}
	refs := regexp.MustCompile(`(?:src|href)="([^"#:]+)"`).FindAllStringSubmatch(page, -1)
	if len(refs) < 4 {
		t.Fatalf("found only %d file references in the page", len(refs))
	}
	for _, m := range refs {
		r, body := get("/" + m[1])
		if r.StatusCode != 200 || len(body) == 0 {
			t.Errorf("GET /%s: %s (%d bytes)", m[1], r.Status, len(body))
		}
	}
	if r, _ := get("/third_party/uplot/LICENSE"); r.StatusCode != 200 {
		t.Errorf("the charting library's licence is not served: %s", r.Status)
	}
	if r, _ := get("/nothing.js"); r.StatusCode != 404 {
		t.Errorf("GET /nothing.js: %s", r.Status)
	}
	post, err := http.Post(srv.URL+"/", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	post.Body.Close()
	if post.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %s (the sign-in form posts here only when its script did not run)", post.Status)
	}
}

// BenchmarkPage is what the collector spends serving the console: the
// page and each of its files, as a browser's first load asks for them.
func BenchmarkPage(b *testing.B) {
	h := Handler()
	paths := []string{"/", "/app.js", "/app.css", "/third_party/uplot/uPlot.iife.min.js", "/third_party/uplot/uPlot.min.css"}
	b.ReportAllocs()
	for b.Loop() {
		for _, p := range paths {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest("GET", p, nil))
			if w.Code != 200 {
				b.Fatalf("GET %s: %d", p, w.Code)
			}
		}
	}
}
