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

// TestLargeResultCompensation runs a chain whose first step leaves a
// result of 800 KiB and whose second step fails. The compensation of the
// first step carries that result, close to the 1 MiB limit, and the outbox
// of either store must hold it.
func TestLargeResultCompensation(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		big := strings.Repeat("x", 800<<10)
		e.startExecutor("default", map[string]executor.Handler{
			"big": func(ctx context.Context, j *executor.Job) error { return j.SetResult(big) },
			"bad": func(context.Context, *executor.Job) error { return executor.Permanent(errors.New("bad")) },
		}, nil)
		undone := make(chan struct{}, 4)
		e.startCompensator("default", map[string]executor.Handler{
			"undo": func(context.Context, *executor.Job) error { undone <- struct{}{}; return nil },
		})

		id, err := e.client.NewChain(
			batchq.Job{Name: "big"}.WithCompensation("undo", nil),
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
		if info.Status != batchq.StatusFailed || info.Compensation.Completed != 1 {
			t.Errorf("chain = %+v, want failed with one completed compensation", *info)
		}
		select {
		case <-undone:
		default:
			t.Error("the compensation of step 0 never ran")
		}
	})
}
