package logtail

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"
)

// flowMessage returns a message shaped like the flow log's: node n's
// window w, with a few virtual connections and their physical paths.
func flowMessage(r *rand.Rand, n, w int) []byte {
	start := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC).Add(time.Duration(w) * 5 * time.Second)
	var b strings.Builder
	fmt.Fprintf(&b, `{"nodeId":"n%04dCNTRL","start":%q,"end":%q,"virtualTraffic":[`,
		n, start.Format(time.RFC3339Nano), start.Add(5*time.Second-time.Nanosecond).Format(time.RFC3339Nano))
	conns := 1 + r.IntN(6)
	for i := range conns {
		if i > 0 {
			b.WriteByte(',')
		}
		proto := []int{6, 6, 6, 17}[r.IntN(4)]
		pkts := 1 + r.IntN(40)
		fmt.Fprintf(&b, `{"proto":%d,"src":"10.99.0.%d:%d","dst":"10.99.0.%d:%d","txPkts":%d,"txBytes":%d,"rxPkts":%d,"rxBytes":%d}`,
			proto, n%250+1, 32768+r.IntN(28000), r.IntN(250)+1, []int{80, 443, 5432, 53}[r.IntN(4)],
			pkts, pkts*(60+r.IntN(1400)), pkts-r.IntN(pkts), pkts*(52+r.IntN(800)))
	}
	b.WriteString(`],"physicalTraffic":[`)
	for i := range 1 + r.IntN(2) {
		if i > 0 {
			b.WriteByte(',')
		}
		pkts := 2 + r.IntN(60)
		fmt.Fprintf(&b, `{"src":"10.99.0.%d:0","dst":"203.0.113.%d:51820","txPkts":%d,"txBytes":%d,"rxPkts":%d,"rxBytes":%d}`,
			r.IntN(250)+1, r.IntN(250)+1, pkts, pkts*(92+r.IntN(1400)), pkts, pkts*(92+r.IntN(900)))
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

// BenchmarkCompression compresses a batch of 100 flow messages, stamped
// as the client stamps them, with the client's encoder, and reports the
// ratio.
func BenchmarkCompression(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	l := &Logger{procID: "0123456789abcdef"}
	body := []byte{'['}
	now := time.Now()
	for i := range 100 {
		if i > 0 {
			body = append(body, ',')
		}
		body = l.stamp(body, flowMessage(r, i%10, i/10), uint64(i+1), now)
	}
	body = append(body, ']')
	enc, err := newEncoder()
	if err != nil {
		b.Fatal(err)
	}
	var z []byte
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		z = enc.EncodeAll(body, z[:0])
	}
	b.ReportMetric(float64(len(body))/float64(len(z)), "ratio")
	b.ReportMetric(float64(len(body))/100, "B/entry")
	b.ReportMetric(float64(len(z))/100, "zB/entry")
}

// BenchmarkWrite measures Write of one flow message to the disk buffer
// (collector unreachable).
func BenchmarkWrite(b *testing.B) {
	l := benchLogger(b, 1<<30)
	defer stopNow(l)
	msg := flowMessage(rand.New(rand.NewPCG(1, 2)), 1, 1)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if err := l.Write(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBufferedMemory writes 100 MB of flow messages while the
// collector is unreachable and reports the heap in use with all of it
// waiting in the buffer: the buffer is on disk, not in memory.
func BenchmarkBufferedMemory(b *testing.B) {
	const total = 100 << 20
	r := rand.New(rand.NewPCG(1, 2))
	msgs := make([][]byte, 64)
	for i := range msgs {
		msgs[i] = flowMessage(r, i, i)
	}
	for range b.N {
		l := benchLogger(b, 128<<20)
		for i := 0; l.Pending() < total; i++ {
			if err := l.Write(msgs[i%len(msgs)]); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(l.Pending())/(1<<20), "buffered-MiB")
		b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "HeapInuse-MiB")
		stopNow(l)
	}
}

func benchLogger(b *testing.B, maxBuffer int64) *Logger {
	id, _ := NewPrivateID()
	l, err := New(Config{
		BaseURL:       "http://127.0.0.1:1", // nothing listens
		Collection:    "bench",
		PrivateID:     id,
		BufferDir:     b.TempDir(),
		MaxBuffer:     maxBuffer,
		MaxRetryDelay: time.Minute,
	})
	if err != nil {
		b.Fatal(err)
	}
	return l
}

// stopNow shuts l down without waiting for the unreachable collector.
func stopNow(l *Logger) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	l.Shutdown(ctx)
}
