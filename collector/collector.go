// Package collector is the receiving end of log streams: an HTTP server
// that accepts uploads, stores each entry durably, stamped with the time
// it was logged, and answers queries by time range and node, and, for
// flow-log entries, queries over the flows of a fleet's windows (sums per
// group, top N, time buckets) behind the Storage interface.
//
// It shares only the wire protocol (package logproto) with the logtail
// client and imports none of the client's code:
//
//	POST /c/{collection}/{private ID: 64 hex digits}
//	     body: a JSON array of objects; Content-Encoding zstd or identity
//	     200 {"stored":N,"duplicates":M} once every entry is on disk
//	     400 malformed: bad private ID or collection name, body not a JSON
//	         array of objects, invalid zstd
//	     404 a collection this collector does not accept
//	     413 over a limit: body (MaxBodyBytes), decoded body
//	         (MaxDecodedBytes), one entry (MaxEntryBytes), zstd window
//	     415 another Content-Encoding
//	     503 storage failed (with Retry-After)
//	GET  /api/v1/logs?collection=C&start=T1&end=T2[&node=ID][&time=window]
//	     Authorization: Bearer TOKEN (401 without it)
//	     200 {"logs":[…]} oldest first, every "logged" in [T1, T2]
//	     (time=window: every window start in [T1, T2], by window start)
//	GET  /api/v1/flows?collection=C&since=D|start=T1&end=T2&node=&class=
//	     &proto=&addr=&port=&group=K1,K2&top=N&bucket=B (see FlowQuery)
//	     200 {"rows":[{keys…,"bucket","txPkts","txBytes","rxPkts",
//	     "rxBytes","flows"}]}; 400 naming the parameter refused
//	GET  /api/v1/nodes?collection=C
//	     200 {"nodes":[{"node","firstWindow","lastWindow","txBytes","rxBytes"}]}
//	GET  /healthz
//	     200 ok
//
// A stream is filed under its public ID, the SHA-256 of the private ID's
// 32 bytes; the private ID is neither stored nor logged. An upload is
// stored whole or not at all: a refused upload stores nothing. Each entry
// gets "logged" (RFC 3339, nanoseconds, UTC: when the upload arrived) and
// an entry whose (stream, logtail.proc_id, logtail.proc_seq) is already
// stored is dropped as a duplicate, so a client may resend freely.
//
// Bodies are decoded as a stream, one entry at a time, with every limit
// checked while reading, so neither a large body nor a decompression bomb
// takes more memory than the limits allow; at most four uploads are
// decoded at once, and the parsed uploads waiting to be stored (sharing
// a commit, see GroupCommit) hold at most four times MaxDecodedBytes.
package collector

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/wgsidecar/sidecar/console"
	"github.com/wgsidecar/sidecar/logproto"
)

const (
	defaultListen          = "127.0.0.1:8080"
	defaultMaxBodyBytes    = 8 << 20
	defaultMaxDecodedBytes = 64 << 20
	defaultMaxQueryEntries = 100_000
	// maxConcurrentUploads bounds how many uploads are decoded at once.
	maxConcurrentUploads = 4
	// dbName is the embedded database's file in DataDir.
	dbName = "collector.db"
)

// Config configures a collector. DataDir (or Storage) is required.
type Config struct {
	// Listen is the address ListenAndServe listens on (default
	// 127.0.0.1:8080).
	Listen string
	// DataDir holds the embedded database (created with mode 0700).
	DataDir string
	// Storage, if set, is used instead of the embedded database in DataDir.
	// Close closes it.
	Storage Storage
	// Token is the bearer token that reads require. Empty refuses every
	// read.
	Token string
	// MaxBodyBytes bounds an upload's body as sent (default 8 MiB).
	MaxBodyBytes int64
	// MaxDecodedBytes bounds an upload's body once decompressed, and the
	// memory its entries take (default 64 MiB).
	MaxDecodedBytes int64
	// Collections lists the collections accepted; empty accepts any.
	Collections []string
	// MaxQueryEntries bounds a query's answer (default 100 000): a range
	// holding more is refused, to be asked for in shorter ranges.
	MaxQueryEntries int
	// Retention, if positive, is how long windows and entries are kept:
	// at Open and every hour, every whole UTC day before now - Retention
	// is dropped (Storage.Expire).
	Retention time.Duration
	// Logger receives the collector's logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock that stamps "logged"; nil means time.Now.
	Now func() time.Time
}

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("collector: server closed")

// A Server is a collector. Its methods are safe for concurrent use.
type Server struct {
	cfg        Config
	log        *slog.Logger
	store      Storage
	maxBody    int64
	maxDecoded int64
	accept     map[string]bool // nil: any collection
	tokenSum   [32]byte        // SHA-256 of Config.Token
	handler    http.Handler
	uploads    chan struct{} // semaphore of uploads being decoded
	storing    *budget       // bytes of parsed uploads waiting to be stored
	decoders   sync.Pool     // *zstd.Decoder
	// stopRetention stops the retention loop and waits for it; nil
	// without one.
	stopRetention func()

	mu      sync.Mutex
	servers []*http.Server // guarded by mu
	closed  bool           // guarded by mu
}

// Open checks cfg, opens the storage and returns a Server ready to serve.
func Open(cfg Config) (*Server, error) {
	if cfg.Listen == "" {
		cfg.Listen = defaultListen
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = defaultMaxBodyBytes
	}
	if cfg.MaxDecodedBytes == 0 {
		cfg.MaxDecodedBytes = defaultMaxDecodedBytes
	}
	if cfg.MaxQueryEntries == 0 {
		cfg.MaxQueryEntries = defaultMaxQueryEntries
	}
	if cfg.MaxBodyBytes < 0 || cfg.MaxDecodedBytes < 0 || cfg.MaxQueryEntries < 0 || cfg.Retention < 0 {
		return nil, errors.New("collector: negative limit in Config")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{
		cfg:        cfg,
		log:        cfg.Logger,
		maxBody:    cfg.MaxBodyBytes,
		maxDecoded: cfg.MaxDecodedBytes,
		tokenSum:   sha256.Sum256([]byte(cfg.Token)),
		uploads:    make(chan struct{}, maxConcurrentUploads),
		storing:    newBudget(maxConcurrentUploads * cfg.MaxDecodedBytes),
	}
	if len(cfg.Collections) > 0 {
		s.accept = map[string]bool{}
		for _, c := range cfg.Collections {
			if !logproto.ValidCollection(c) {
				return nil, fmt.Errorf("collector: collection name %q: want 1 to %d letters, digits, '.', '_' or '-'", c, logproto.MaxCollectionLen)
			}
			s.accept[c] = true
		}
	}
	s.store = cfg.Storage
	if s.store == nil {
		if cfg.DataDir == "" {
			return nil, errors.New("collector: Config.DataDir is required")
		}
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("collector: %w", err)
		}
		db, err := OpenBolt(filepath.Join(cfg.DataDir, dbName))
		if err != nil {
			return nil, err
		}
		s.store = db
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+logproto.UploadPrefix+"{collection}/{id}", s.handleUpload)
	mux.HandleFunc("GET /api/v1/logs", s.handleQuery)
	mux.HandleFunc("GET /api/v1/flows", s.handleFlows)
	mux.HandleFunc("GET /api/v1/nodes", s.handleNodes)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	// The console: a static page over the query API above.
	mux.Handle("/", console.Handler())
	s.handler = mux
	if cfg.Retention > 0 {
		s.startRetention()
	}
	return s, nil
}

// Handler returns the collector's HTTP handler, for serving it elsewhere
// (httptest.NewServer, say). Close still closes the storage.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves HTTP on ln until Close, and then returns nil. After Close
// it closes ln and returns ErrServerClosed.
func (s *Server) Serve(ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		WriteTimeout:      2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.servers = append(s.servers, srv)
	s.mu.Unlock()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// ListenAndServe listens on Config.Listen and serves until Close.
func (s *Server) ListenAndServe() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("collector: %w", err)
	}
	return s.Serve(ln)
}

// Close stops the servers started by Serve, letting requests in progress
// finish (for up to ten seconds, so an upload being stored is answered),
// then closes the storage.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	servers := s.servers
	s.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, srv := range servers {
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
	}
	if s.stopRetention != nil {
		s.stopRetention()
	}
	return s.store.Close()
}

// checkCollection refuses a malformed (400) or unaccepted (404)
// collection name.
func (s *Server) checkCollection(name string) *httpError {
	if !logproto.ValidCollection(name) {
		return badRequest("collection name %q: want 1 to %d letters, digits, '.', '_' or '-'", name, logproto.MaxCollectionLen)
	}
	if s.accept != nil && !s.accept[name] {
		return &httpError{http.StatusNotFound, fmt.Sprintf("collection %q is not accepted here", name)}
	}
	return nil
}
