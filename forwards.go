package sidecar

import (
	"errors"
	"io"
	"sync"

	"github.com/wgsidecar/sidecar/forward"
	"github.com/wgsidecar/sidecar/wgconf"
)

// forwards holds the node's proxies and forwards: a forward.Set, made on
// first use from the node's stack, start file and options. The zero value
// is ready for use.
type forwards struct {
	once sync.Once
	set  *forward.Set
}

// forwardSet returns the node's forward.Set.
func (n *Node) forwardSet() *forward.Set {
	n.fwd.once.Do(func() {
		n.fwd.set = forward.NewSet(forward.SetConfig{
			Dialer: n, Stack: n.stack, Serve: n.cfg.Serve, MaxConns: n.opts.MaxConns, Log: n.log, Monitor: &n.mon,
		})
	})
	return n.fwd.set
}

// startForwards starts the proxies and forwards of the node's file.
func (n *Node) startForwards() error {
	_, _, err := n.applyForwards(n.cfg, true)
	return err
}

// applyForwards makes the running proxies and forwards those of cfg (see
// forward.Set.Apply).
func (n *Node) applyForwards(cfg *wgconf.Config, atStart bool) (started, stopped []string, err error) {
	started, stopped, err = n.forwardSet().Apply(cfg, atStart)
	if errors.Is(err, forward.ErrClosed) {
		err = errClosed
	}
	return started, stopped, err
}

// closeForwards stops every proxy and forward; later applyForwards calls
// fail.
func (n *Node) closeForwards() { n.forwardSet().Close() }

// closeAll closes cs in reverse order.
func closeAll(cs []io.Closer) {
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i].Close()
	}
}
