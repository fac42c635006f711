package coordinator

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/batchq/batchq"
	"github.com/batchq/batchq/executor"
	"github.com/batchq/batchq/store"
	"github.com/nats-io/nats.go"
)

// TestWalkTooLargeCompensation runs a chain whose first step has 10 KiB
// of args and leaves a result just under what the executor allows, and
// whose second step fails. The compensation of the first step would be
// above the 1 MiB limit, so it fails without running, and the walk goes on
// to settle the chain as failed.
func TestWalkTooLargeCompensation(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		result := strings.Repeat("r", 1<<20-4096-1024)
		e.startExecutor("default", map[string]executor.Handler{
			"big": func(ctx context.Context, j *executor.Job) error { return j.SetResult(result) },
			"bad": func(context.Context, *executor.Job) error { return executor.Permanent(errors.New("bad")) },
		}, nil)
		e.startCompensator("default", map[string]executor.Handler{
			"undo": func(context.Context, *executor.Job) error { return nil },
		})

		args := map[string]string{"pad": strings.Repeat("a", 10<<10)}
		id, err := e.client.NewChain(
			batchq.Job{Name: "big", Args: args}.WithCompensation("undo", nil),
			batchq.Job{Name: "bad"},
		).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		info, err := e.client.Wait(ctx, id)
		if err != nil {
			now, _ := e.client.Batch(e.ctx(), id)
			t.Fatalf("chain did not settle within 15s: %v; batch now %+v", err, now)
		}
		if info.Status != batchq.StatusFailed || info.Compensation.Failed != 1 {
			t.Errorf("chain = %+v, want failed with one failed compensation", *info)
		}
	})
}
