package metrics

import (
	"context"
	"io"
	"net"
	"net/http"
	"time"
)

// Server serves a registry over HTTP: /metrics in the text format,
// /healthz (the process answers) and /readyz (ready says the service can
// do its work). Close stops it and waits for its goroutine.
type Server struct {
	srv  *http.Server
	addr net.Addr
	done chan struct{}
}

// Serve listens on addr (a TCP host:port) and serves r there. ready returns
// "" when the service is ready and otherwise why not, which /readyz sends
// with 503; it is called on every request.
func Serve(addr string, r *Registry, ready func() string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", Handler(r.Gather))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, req *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, req *http.Request) {
		if reason := ready(); reason != "" {
			http.Error(w, "not ready: "+reason, http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, req *http.Request) {
		io.WriteString(w, "wgsidecar: /metrics (Prometheus), /healthz, /readyz\n")
	})
	s := &Server{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, addr: ln.Addr(), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.srv.Serve(ln)
	}()
	return s, nil
}

// Addr is the address the server accepts on.
func (s *Server) Addr() net.Addr { return s.addr }

// Close stops the server, giving requests in flight 2 s to finish.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.srv.Close()
	}
	<-s.done
	return nil
}
