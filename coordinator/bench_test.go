package coordinator

import (
	"context"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	"github.com/batchq/batchq"
	"github.com/batchq/batchq/executor"
	"github.com/batchq/batchq/store"
	"github.com/nats-io/nats.go"
)

// benchJobs returns the batch size of BenchmarkParallelBatch: 100,000, or
// BATCHQ_BENCH_JOBS.
func benchJobs(b *testing.B) int {
	if v := os.Getenv("BATCHQ_BENCH_JOBS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("BATCHQ_BENCH_JOBS=%q is not a positive number", v)
		}
		return n
	}
	return 100_000
}

// peakHeap samples the heap in use until stop is closed and returns the
// highest value seen.
func peakHeap(stop <-chan struct{}) <-chan uint64 {
	out := make(chan uint64, 1)
	go func() {
		var peak uint64
		var m runtime.MemStats
		ticker := time.NewTicker(50 * time.Millisecond)
		defer ticker.Stop()
		for {
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapInuse)
			select {
			case <-stop:
				out <- peak
				return
			case <-ticker.C:
			}
		}
	}()
	return out
}

// BenchmarkParallelBatch runs one parallel batch of no-op jobs to completion
// per iteration, on each store, with the coordinator, one executor and the
// nats-server in this process. It reports jobs/s and the peak heap of the
// whole process, nats-server included.
//
//	go test -run '^$' -bench ParallelBatch -benchtime 1x ./coordinator/
func BenchmarkParallelBatch(b *testing.B) {
	n := benchJobs(b)
	for _, s := range stores() {
		b.Run(s.name, func(b *testing.B) {
			benchParallel(b, s.open, n)
		})
	}
}

func benchParallel(b *testing.B, open func(testing.TB, *nats.Conn) store.Store, n int) {
	e := newEnv(b, open)
	e.startCoordinator(func(c *Config) { c.AckWait = 30 * time.Second })
	e.startExecutor("default", map[string]executor.Handler{
		"noop": func(context.Context, *executor.Job) error { return nil },
	}, func(c *executor.Config) { c.Concurrency = 32; c.AckWait = 30 * time.Second })
	jobs := make([]batchq.Job, n)
	for i := range jobs {
		jobs[i] = batchq.Job{Name: "noop", Args: i}
	}
	runtime.GC()
	stop := make(chan struct{})
	peakCh := peakHeap(stop)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		id, err := e.client.NewBatch(jobs...).Dispatch(ctx)
		if err != nil {
			cancel()
			b.Fatal(err)
		}
		info, err := e.client.Wait(ctx, id)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		if info.Completed != n {
			b.Fatalf("batch = %+v", info)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if path := os.Getenv("BATCHQ_BENCH_HEAP_PROFILE"); path != "" {
		writeHeapProfile(b, path)
	}
	close(stop)
	peak := <-peakCh
	b.ReportMetric(float64(n*b.N)/elapsed.Seconds(), "jobs/s")
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
}

// writeHeapProfile writes the heap in use to path, to see what the peak
// holds.
func writeHeapProfile(b *testing.B, path string) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		b.Fatal(err)
	}
}
