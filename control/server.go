package control

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// Server serves the control API on a unix socket. Close stops it.
type Server struct {
	path   string
	ln     *net.UnixListener
	file   os.FileInfo // the socket file Listen made
	srv    *http.Server
	cancel context.CancelFunc // ends the requests' contexts
	done   chan struct{}      // closed when Serve has returned
	once   sync.Once
}

// Listen makes the socket at path (see listen's rules: mode 0600, a stale
// socket replaced, a live one ErrInUse, a missing directory made with mode
// 0700) and serves p on it until Close. log receives request errors; nil
// means slog.Default().
func Listen(path string, p Provider, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	ln, fi, err := listen(path)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{path: path, ln: ln, file: fi, cancel: cancel, done: make(chan struct{})}
	s.srv = &http.Server{
		Handler:           handler(p, log),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go func() {
		defer close(s.done)
		s.srv.Serve(ln)
	}()
	return s, nil
}

// Path is the socket's path.
func (s *Server) Path() string { return s.path }

// Close stops accepting, ends the requests in progress, waits for the
// server's goroutines and removes the socket file (unless another process
// has put its own there since). It is idempotent.
func (s *Server) Close() error {
	s.once.Do(func() {
		s.cancel()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := s.srv.Shutdown(ctx); err != nil {
			s.srv.Close()
		}
		cancel()
		<-s.done
		removeIfSame(s.path, s.file)
	})
	return nil
}

func handler(p Provider, log *slog.Logger) http.Handler {
	routes := map[string]func(context.Context) (any, error){
		PathStatus: func(ctx context.Context) (any, error) { return p.Status(ctx) },
		PathFlows:  func(ctx context.Context) (any, error) { return p.Flows(ctx) },
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if st, ok := p.(Streamer); ok && r.URL.Path == PathMonitor && r.Method == http.MethodGet {
			stream(w, r, st, log)
			return
		}
		if r.URL.Path == PathReload {
			reload(w, r, p, log)
			return
		}
		get, ok := routes[r.URL.Path]
		if !ok {
			reply(w, http.StatusNotFound, errorBody{"no such endpoint: " + r.URL.Path})
			return
		}
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			reply(w, http.StatusMethodNotAllowed, errorBody{r.Method + " not allowed; use GET"})
			return
		}
		v, err := get(r.Context())
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				log.Warn("control: request failed", "path", r.URL.Path, "err", err)
			}
			reply(w, http.StatusInternalServerError, errorBody{err.Error()})
			return
		}
		reply(w, http.StatusOK, v)
	})
}

// reload serves PathReload.
func reload(w http.ResponseWriter, r *http.Request, p Provider, log *slog.Logger) {
	rl, ok := p.(Reloader)
	if !ok {
		reply(w, http.StatusNotFound, errorBody{"this sidecar cannot reload"})
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		reply(w, http.StatusMethodNotAllowed, errorBody{r.Method + " not allowed; use POST"})
		return
	}
	v, err := rl.Reload(r.Context())
	if err != nil {
		log.Warn("control: reload failed", "err", err)
		reply(w, http.StatusUnprocessableEntity, errorBody{"reload: " + err.Error()})
		return
	}
	reply(w, http.StatusOK, v)
}

func reply(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		body, _ = json.Marshal(errorBody{err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(body, '\n'))
}

// stream serves PathMonitor: JSON lines, flushed one by one, until the
// client goes away or the server closes.
func stream(w http.ResponseWriter, r *http.Request, st Streamer, log *slog.Logger) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush()
	err := st.Stream(r.Context(), r.URL.Query(), func(line []byte) error {
		if _, err := w.Write(append(line, '\n')); err != nil {
			return err
		}
		return rc.Flush()
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Info("control: monitor stream ended", "err", err)
	}
}
