package coordinator

import (
	"context"
	"testing"
	"time"

	"github.com/batchq/batchq"
	"github.com/batchq/batchq/executor"
	"github.com/batchq/batchq/store"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// settledCount sums batchq_coordinator_batches_settled_total over its
// status labels.
func settledCount(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, f := range families {
		if f.GetName() != "batchq_coordinator_batches_settled_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			total += m.GetCounter().GetValue()
		}
	}
	return total
}

// TestSettledCountedOnce settles one batch while the publish after
// the commit is slow, longer than OutboxAge, as when the stream is slow to
// acknowledge. The sweeper then publishes the same batch.completed message
// from the outbox, and the stream drops one copy as a duplicate. The
// settled counter must still count the batch once. Two replicas whose
// sweepers take the same outbox rows count the same way.
func TestSettledCountedOnce(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		reg := prometheus.NewRegistry()
		e.startCoordinator(func(c *Config) {
			c.Metrics = reg
			c.afterCommit = func() error {
				// Longer than OutboxAge plus SweepInterval of the harness.
				time.Sleep(1500 * time.Millisecond)
				return nil
			}
		})
		e.startExecutor("default", map[string]executor.Handler{
			"noop": func(context.Context, *executor.Job) error { return nil },
		}, nil)

		id, err := e.client.NewBatch(batchq.Jobs("noop")...).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		if info := e.wait(id); info.Status != batchq.StatusCompleted {
			t.Fatalf("batch = %+v, want completed", info)
		}
		// Let the delayed publish after the commit run and count.
		time.Sleep(2 * time.Second)
		if got := settledCount(t, reg); got != 1 {
			t.Errorf("batches_settled_total = %v after one batch settled, want 1", got)
		}
	})
}
