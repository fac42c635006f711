package coordinator

import (
	"context"
	"testing"
	"time"

	"github.com/batchq/batchq"
	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/executor"
	"github.com/batchq/batchq/store"
	"github.com/nats-io/nats.go"
)

// TestCancelDuringDispatch cancels a parallel batch while job 0 is
// running and the dispatcher is still publishing the batch's only chunk.
// The cancelled batch waits until every published job has reported, and
// then compensates job 0, which completed after the cancel.
func TestCancelDuringDispatch(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		const total = 1000
		// A small publish window makes the dispatch of the chunk take long
		// enough for the cancel to land before the mark is recorded.
		e.startCoordinator(func(c *Config) { c.DispatchChunk, c.PublishWindow = total, 1 })
		started := make(chan struct{})
		release := make(chan struct{})
		e.startExecutor("default", map[string]executor.Handler{
			"work": func(ctx context.Context, j *executor.Job) error {
				if j.Position() == 0 {
					close(started)
					select {
					case <-release:
					case <-ctx.Done():
						return ctx.Err()
					}
				}
				return nil
			},
		}, func(c *executor.Config) { c.Concurrency = 1 })
		e.startCompensator("default", map[string]executor.Handler{
			"undo": func(context.Context, *executor.Job) error { return nil },
		})

		jobs := make([]batchq.Job, total)
		for i := range jobs {
			jobs[i] = batchq.Job{Name: "work"}.WithCompensation("undo", nil)
		}
		id, err := e.client.NewBatch(jobs...).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-started:
		case <-time.After(20 * time.Second):
			t.Fatal("job 0 did not start")
		}
		if err := e.client.Cancel(e.ctx(), id, "stop"); err != nil {
			t.Fatalf("Cancel during dispatch: %v", err)
		}
		b, err := e.client.Batch(e.ctx(), id)
		if err != nil {
			t.Fatal(err)
		}
		if b.Status.Final() {
			t.Errorf("batch is %s right after the cancel although job 0 is still running: %+v", b.Status, *b)
		}

		close(release)
		info := e.wait(id)
		if info.Status != batchq.StatusCancelled {
			t.Fatalf("batch = %+v, want cancelled", info)
		}
		eventually(t, "job 0 to report", func() bool {
			j, err := e.client.JobResult(e.ctx(), id, "0")
			return err == nil && j.Status.Final()
		})
		time.Sleep(settleTime)
		j, err := e.client.JobResult(e.ctx(), id, "0")
		if err != nil {
			t.Fatal(err)
		}
		if j.Status == events.JobStatusCompleted && j.Compensation == "" {
			t.Errorf("job 0 completed in the cancelled batch but was never compensated: %+v", *j)
		}
	})
}

// TestCancelAfterEarlyOutcome cancels a parallel batch after job 0
// completed but while the dispatcher is still publishing the chunk that
// holds it. Job 0 counts once, as completed, and the counters stay within
// the total on both stores.
func TestCancelAfterEarlyOutcome(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		const total = 1000
		e.startCoordinator(func(c *Config) { c.DispatchChunk, c.PublishWindow = total, 1 })
		// Job 1 holds the only executor slot, so no outcome competes with
		// the cancel for the batch.
		release := make(chan struct{})
		e.startExecutor("default", map[string]executor.Handler{
			"work": func(ctx context.Context, j *executor.Job) error {
				if j.Position() == 1 {
					select {
					case <-release:
					case <-ctx.Done():
						return ctx.Err()
					}
				}
				return nil
			},
		}, func(c *executor.Config) { c.Concurrency = 1 })

		jobs := make([]batchq.Job, total)
		for i := range jobs {
			jobs[i] = batchq.Job{Name: "work"}
		}
		id, err := e.client.NewBatch(jobs...).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "job 0 to complete", func() bool {
			b, err := e.client.Batch(e.ctx(), id)
			return err == nil && b.Completed >= 1
		})
		err = e.client.Cancel(e.ctx(), id, "stop")
		close(release)
		if err != nil {
			t.Fatalf("Cancel after job 0 completed: %v", err)
		}
		info := e.wait(id)
		if sum := info.Completed + info.Failed + info.Skipped; sum > info.Total {
			t.Errorf("completed %d + failed %d + skipped %d = %d, above the total %d", info.Completed, info.Failed, info.Skipped, sum, info.Total)
		}
	})
}
