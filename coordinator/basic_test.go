package coordinator

import (
	"context"
	"testing"

	"github.com/batchq/batchq"
	"github.com/batchq/batchq/executor"
	"github.com/batchq/batchq/store"
	"github.com/nats-io/nats.go"
)

func TestParallelSmoke(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		e.startExecutor("default", map[string]executor.Handler{
			"double": func(ctx context.Context, j *executor.Job) error {
				var args struct{ N int }
				if err := j.Args(&args); err != nil {
					return err
				}
				return j.SetResult(args.N * 2)
			},
		}, nil)
		id, err := e.client.NewBatch(
			batchq.Job{Name: "double", Args: map[string]int{"n": 1}},
			batchq.Job{Name: "double", Args: map[string]int{"n": 2}},
			batchq.Job{Name: "double", Args: map[string]int{"n": 3}},
		).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		info := e.wait(id)
		if info.Status != batchq.StatusCompleted || info.Completed != 3 || info.Progress != 100 {
			t.Fatalf("batch = %+v", info)
		}
		results, err := e.client.Results(e.ctx(), id)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range results {
			if want := []string{"2", "4", "6"}[i]; string(r.Result) != want {
				t.Errorf("job %d result %s, want %s", i, r.Result, want)
			}
		}
	})
}
