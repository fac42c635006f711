package coordinator

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/batchq/batchq"
	"github.com/batchq/batchq/executor"
	"github.com/batchq/batchq/store"
	"github.com/nats-io/nats.go"
)

// TestJobErrorWithNULSettles runs a job whose handler fails with an
// error message that contains a NUL byte, for example one that quotes
// binary input. The batch must fail and settle on every store.
func TestJobErrorWithNULSettles(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		e.startExecutor("default", map[string]executor.Handler{
			"parse": func(context.Context, *executor.Job) error {
				return executor.Permanent(errors.New("parse header: unexpected byte \x00 at offset 4"))
			},
		}, nil)

		id, err := e.client.NewBatch(batchq.Jobs("parse")...).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		info, err := e.client.Wait(ctx, id)
		if err != nil {
			b, _ := e.client.Batch(context.Background(), id)
			t.Fatalf("batch did not settle within 15s: %v; state %+v", err, b)
		}
		if info.Status != batchq.StatusFailed {
			t.Errorf("batch status = %s, want failed", info.Status)
		}
	})
}
