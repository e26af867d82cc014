package metrics

import "sync"

// Registry gathers the metric families of a node's subsystems: each
// subsystem registers a collector for the counters it keeps, and a scrape
// calls them all in registration order. The zero value is ready for use;
// its methods are safe for concurrent use.
type Registry struct {
	mu         sync.Mutex
	collectors []func() []Family
}

// Register adds collect, which builds the families of one subsystem afresh
// on every scrape. It must be cheap and safe for concurrent use.
func (r *Registry) Register(collect func() []Family) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.collectors = append(r.collectors, collect)
}

// Gather returns the families of every registered collector.
func (r *Registry) Gather() []Family {
	r.mu.Lock()
	cs := r.collectors
	r.mu.Unlock()
	var out []Family
	for _, c := range cs {
		out = append(out, c()...)
	}
	return out
}
