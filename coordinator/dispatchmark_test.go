package coordinator

import (
	"context"
	"errors"
	"testing"

	"github.com/batchq/batchq"
	"github.com/batchq/batchq/executor"
	"github.com/batchq/batchq/store"
	"github.com/nats-io/nats.go"
)

// TestFailBeforeDispatchMark fails every job of a large parallel batch at
// once, so the first failure can be applied while the dispatcher is still
// publishing a chunk. The jobs it never published count as skipped, and
// the counters stay within the total.
func TestFailBeforeDispatchMark(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		const total = 2000
		e.startCoordinator(func(c *Config) { c.DispatchChunk = total })
		e.startExecutor("default", map[string]executor.Handler{
			"boom": func(context.Context, *executor.Job) error { return executor.Permanent(errors.New("boom")) },
		}, func(c *executor.Config) { c.Concurrency = 8 })

		jobs := make([]batchq.Job, total)
		for i := range jobs {
			jobs[i] = batchq.Job{Name: "boom"}
		}
		id, err := e.client.NewBatch(jobs...).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		info := e.wait(id)
		if info.Status != batchq.StatusFailed {
			t.Fatalf("batch = %+v, want failed", info)
		}
		// Fail-fast does not stop jobs that are already published, so every
		// job runs and fails in the end.
		eventually(t, "every job to fail", func() bool {
			b, err := e.client.Batch(e.ctx(), id)
			return err == nil && b.Failed == total
		})
		b, err := e.client.Batch(e.ctx(), id)
		if err != nil {
			t.Fatal(err)
		}
		if sum := b.Completed + b.Failed + b.Skipped; sum > b.Total {
			t.Errorf("completed %d + failed %d + skipped %d = %d, above the total %d", b.Completed, b.Failed, b.Skipped, sum, b.Total)
		}
	})
}
