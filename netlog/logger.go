package netlog

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wgsidecar/sidecar/classify"
	"github.com/wgsidecar/sidecar/stats"
)

// DefaultWindow is how long one flow-log window lasts by default.
const DefaultWindow = 5 * time.Second

// Device is a counting wrapper the logger switches on and off: the TUN
// wrapper (virtual layer) or the bind wrapper (physical layer).
type Device interface {
	SetStatistics(*stats.Stats)
}

// Config configures a Logger.
type Config struct {
	NodeID string
	// Window length; DefaultWindow when zero.
	Window time.Duration
	// Sink receives the messages; the Logger closes it at Shutdown.
	Sink Sink
	// LogExitFlows logs exit traffic in detail instead of anonymised.
	LogExitFlows bool
	// Routes classify virtual-layer flows; see ReconfigRoutes.
	Routes classify.Routes
	// PeerOf names the tunnel address of the peer behind a UDP endpoint,
	// for the source of physical-layer entries; the zero Addr if unknown.
	PeerOf func(netip.AddrPort) netip.Addr
	// LearnPeers, if set, is shown each window's virtual-layer flows
	// before PeerOf names the physical ones, to learn the addresses
	// peers use.
	LearnPeers func(virtual []Flow)
	// MaxFlows bounds each layer's table per window (stats.DefaultMaxFlows
	// when zero); a full table cuts the window early.
	MaxFlows int
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// OnError, if set, is told of messages the sink refused.
	OnError func(error)
}

// Logger records the flows of a TUN and a bind wrapper into windows and
// writes one message (or several, split at MaxMessageSize) per window with
// traffic. Its lifecycle is Startup, ReconfigRoutes any number of times,
// Shutdown. The zero value is ready for use; its methods are safe for
// concurrent use.
type Logger struct {
	mu      sync.Mutex
	running bool
	cfg     Config
	stats   *stats.Stats
	devices []Device
	cancel  context.CancelFunc
	done    chan struct{}
	cutReq  chan chan struct{}

	classifier atomic.Pointer[classify.Classifier]
	earlyCuts  atomic.Uint64
}

// EarlyCuts counts windows cut before their time because a table filled
// up or a counter neared its limit.
func (l *Logger) EarlyCuts() uint64 { return l.earlyCuts.Load() }

// Flows returns the size of the current window's flow tables: the flows
// seen at each layer since the window began (0, 0 when not running).
func (l *Logger) Flows() (virtual, physical int) {
	l.mu.Lock()
	s := l.stats
	running := l.running
	l.mu.Unlock()
	if !running || s == nil {
		return 0, 0
	}
	return s.Flows()
}

// Running reports whether the logger is running.
func (l *Logger) Running() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.running
}

// Startup starts logging the flows that tun (virtual layer) and sock
// (physical layer) see; either may be nil. The first window starts now.
func (l *Logger) Startup(cfg Config, tun, sock Device) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.running {
		return errors.New("netlog: logger already running")
	}
	if cfg.Sink == nil {
		return errors.New("netlog: no sink")
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	l.cfg = cfg
	l.classifier.Store(classify.New(cfg.Routes))
	l.stats = stats.New(stats.Options{
		MaxFlows: cfg.MaxFlows,
		Now:      cfg.Now,
		Tag: func(layer stats.Layer, k stats.Key) uint8 {
			if layer != stats.Virtual {
				return 0
			}
			// The class under the routes of the moment the flow is
			// first seen in the window; it keeps it to the window's end.
			return uint8(l.classifier.Load().Classify(k.Src().Addr(), k.Dst().Addr()))
		},
	})
	l.devices = l.devices[:0]
	for _, d := range []Device{tun, sock} {
		if d != nil {
			d.SetStatistics(l.stats)
			l.devices = append(l.devices, d)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	l.done = make(chan struct{})
	l.cutReq = make(chan chan struct{})
	l.running = true
	go l.run(ctx, l.stats, l.cutReq, l.done)
	return nil
}

// ReconfigRoutes replaces the routes that classify flows. Flows already
// seen in the current window keep their class.
func (l *Logger) ReconfigRoutes(r classify.Routes) {
	l.classifier.Store(classify.New(r))
}

// Cut ends the current window now and writes its messages before
// returning, as a window's end would. For tests and for callers that want
// a flow log on demand.
func (l *Logger) Cut(ctx context.Context) error {
	l.mu.Lock()
	req := l.cutReq
	running := l.running
	l.mu.Unlock()
	if !running {
		return errors.New("netlog: logger not running")
	}
	done := make(chan struct{})
	select {
	case req <- done:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown stops counting, writes the last window and closes the sink. The
// messages are written even if ctx ends first only as far as the sink's
// Write honours ctx; the logger is shut down either way.
func (l *Logger) Shutdown(ctx context.Context) error {
	l.mu.Lock()
	if !l.running {
		l.mu.Unlock()
		return nil
	}
	l.running = false
	for _, d := range l.devices {
		d.SetStatistics(nil)
	}
	cancel, done := l.cancel, l.done
	l.mu.Unlock()

	cancel()
	<-done
	// Counting is off and the loop has stopped: the last window is
	// complete.
	err := l.flush(ctx, l.stats)
	if cerr := l.cfg.Sink.Close(); err == nil {
		err = cerr
	}
	return err
}

func (l *Logger) run(ctx context.Context, s *stats.Stats, cutReq chan chan struct{}, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(l.cfg.Window)
	defer t.Stop()
	for {
		var ack chan struct{}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.EarlyCut():
		case ack = <-cutReq:
		}
		l.flush(ctx, s)
		if ack != nil {
			close(ack)
		}
	}
}

// flush cuts the window and writes the messages of every window closed
// since the last cut. Only the run goroutine, or Shutdown after it
// stopped, calls it.
func (l *Logger) flush(ctx context.Context, s *stats.Stats) error {
	var firstErr error
	isNode := l.classifier.Load().IsNode
	for _, w := range s.Cut() {
		if w.Early {
			l.earlyCuts.Add(1)
		}
		if w.Empty() {
			continue
		}
		virtual := l.flows(w.Virtual, true)
		if l.cfg.LearnPeers != nil {
			l.cfg.LearnPeers(virtual)
		}
		msgs := Build(l.cfg.NodeID, w.Start, w.End, virtual, l.flows(w.Physical, false), l.cfg.LogExitFlows, isNode)
		for i := range msgs {
			if err := l.cfg.Sink.Write(ctx, &msgs[i]); err != nil {
				err = fmt.Errorf("netlog: writing window %v..%v: %w", w.Start, w.End, err)
				if l.cfg.OnError != nil {
					l.cfg.OnError(err)
				}
				if firstErr == nil {
					firstErr = err
				}
			}
		}
	}
	return firstErr
}

// flows converts the statistics layer's flows to the message builder's.
func (l *Logger) flows(in []stats.Flow, virtual bool) []Flow {
	out := make([]Flow, len(in))
	for i, f := range in {
		out[i] = Flow{
			Proto: f.Key.Proto(), Src: f.Key.Src(), Dst: f.Key.Dst(),
			TxPackets: f.TxPackets, TxBytes: f.TxBytes, RxPackets: f.RxPackets, RxBytes: f.RxBytes,
		}
		if virtual {
			out[i].Class = classify.Class(f.Tag)
		} else if l.cfg.PeerOf != nil {
			out[i].Src = netip.AddrPortFrom(l.cfg.PeerOf(out[i].Dst), 0)
		}
	}
	return out
}
