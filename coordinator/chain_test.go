package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batchq/batchq"
	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/executor"
	"github.com/batchq/batchq/store"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestChainOrderOneInFlight(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		rec := &recorder{}
		var inFlight, maxInFlight atomic.Int32
		step := rec.record(func(ctx context.Context, j *executor.Job) error {
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for {
				m := maxInFlight.Load()
				if n <= m || maxInFlight.CompareAndSwap(m, n) {
					break
				}
			}
			time.Sleep(20 * time.Millisecond)
			return j.SetResult(j.Position())
		})
		e.startExecutor("default", map[string]executor.Handler{"s1": step, "s2": step, "s3": step, "s4": step, "s5": step}, func(c *executor.Config) { c.Concurrency = 8 })
		id, err := e.client.NewChain(batchq.Jobs("s1", "s2", "s3", "s4", "s5")...).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		info := e.wait(id)
		if info.Status != batchq.StatusCompleted || info.Completed != 5 {
			t.Fatalf("chain = %+v", info)
		}
		if got := rec.names(); got != "s1,s2,s3,s4,s5" {
			t.Errorf("steps ran as %s", got)
		}
		if m := maxInFlight.Load(); m != 1 {
			t.Errorf("%d steps ran at once, want 1", m)
		}
	})
}

func TestChainContextReplace(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		rec := &recorder{}
		e.startExecutor("default", map[string]executor.Handler{
			"validate": rec.record(func(ctx context.Context, j *executor.Job) error {
				var orderID int
				if ok, err := j.Get("order_id", &orderID); !ok || err != nil {
					return errors.New("order_id missing from the initial context")
				}
				if err := j.Set("validation", map[string]any{"ok": true, "total": 99.99}); err != nil {
					return err
				}
				return j.Set("temp", "scratch")
			}),
			"charge": rec.record(func(ctx context.Context, j *executor.Job) error {
				if err := j.Set("payment", "txn_123"); err != nil {
					return err
				}
				return j.Delete("temp")
			}),
			"confirm": rec.record(func(ctx context.Context, j *executor.Job) error {
				return j.SetResult(j.ContextKeys())
			}),
		}, nil)
		id, err := e.client.NewChain(
			batchq.Job{Name: "validate"},
			batchq.Job{Name: "charge", Args: map[string]any{"order_id": 7}},
			batchq.Job{Name: "confirm"},
		).Context(map[string]any{"order_id": 123}).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		if info := e.wait(id); info.Status != batchq.StatusCompleted {
			t.Fatalf("chain = %+v", info)
		}
		calls := rec.all()
		if calls[1].input["order_id"] != 7.0 {
			t.Errorf("step 2 order_id = %v; its args must win over the context", calls[1].input["order_id"])
		}
		if calls[1].input["temp"] != "scratch" || calls[1].input["validation"] == nil {
			t.Errorf("step 2 input %v misses what step 1 set", calls[1].input)
		}
		if _, ok := calls[2].input["temp"]; ok {
			t.Errorf("step 3 still sees the key step 2 deleted: %v", calls[2].input)
		}
		if calls[2].input["order_id"] != 123.0 {
			t.Errorf("step 3 order_id = %v; args of step 2 must not leak into the context", calls[2].input["order_id"])
		}
		r, err := e.client.JobResult(e.ctx(), id, "2")
		if err != nil {
			t.Fatal(err)
		}
		if string(r.Result) != `["order_id","payment","validation"]` {
			t.Errorf("final context keys = %s", r.Result)
		}
	})
}

func TestChainStopsAtFailure(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		rec := &recorder{}
		e.startExecutor("default", map[string]executor.Handler{
			"a":    rec.record(nil),
			"bad":  rec.record(func(context.Context, *executor.Job) error { return executor.Permanent(errors.New("card declined")) }),
			"c":    rec.record(nil),
			"oops": rec.record(nil),
		}, nil)
		id, err := e.client.NewChain(batchq.Jobs("a", "bad", "c")...).OnFailure("oops", nil).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		info := e.wait(id)
		if info.Status != batchq.StatusFailed || info.Completed != 1 || info.Failed != 1 || info.Skipped != 1 {
			t.Fatalf("chain = %+v", info)
		}
		eventually(t, "the failure callback", func() bool { return len(rec.named("oops")) == 1 })
		if got := rec.names(); got != "a,bad,oops" {
			t.Errorf("ran %s; a permanent error must not retry and step c must not run", got)
		}
	})
}

// TestChainContextFromOtherExecutors applies completions that an executor
// in another language might send: JSON null clears the context, and a
// value that is not an object fails the step.
func TestChainContextFromOtherExecutors(t *testing.T) {
	e := kvEnv(t)
	e.startCoordinator(nil)
	g := newGate()
	rec := &recorder{}
	e.startExecutor("default", map[string]executor.Handler{"held": g.handler(), "next": rec.record(nil)}, nil)
	js, _ := jetstream.New(e.nc)
	complete := func(id, context string) {
		t.Helper()
		enc := events.Encoder{Source: "other-executor"}
		msg, err := enc.Encode(events.TypeJobCompleted, events.EventSubject("default", id, events.TypeJobCompleted),
			id+":0:done", events.Route{BatchID: id, JobID: "0"},
			events.JobCompleted{BatchID: id, JobID: "0", Role: events.RoleJob, Attempt: 1, Context: json.RawMessage(context)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsg(e.ctx(), msg.NATS()); err != nil {
			t.Fatal(err)
		}
	}
	start := func() string {
		t.Helper()
		id, err := e.client.NewChain(batchq.Jobs("held", "next")...).Context(map[string]int{"k": 1}).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "step 0 to be queued", func() bool {
			j, err := e.client.JobResult(e.ctx(), id, "0")
			return err == nil && j.Status == events.JobStatusQueued
		})
		return id
	}

	cleared := start()
	complete(cleared, "null")
	if info := e.wait(cleared); info.Status != batchq.StatusCompleted {
		t.Fatalf("chain after a null context = %+v", info)
	}
	if calls := rec.named("next"); len(calls) != 1 || len(calls[0].input) != 0 {
		t.Errorf("step 2 saw %+v, want an empty context", calls)
	}

	broken := start()
	tp := newTap(t, e.nc, events.EventsPrefix+".*."+broken+".job.failed")
	complete(broken, "[1,2]")
	info := e.wait(broken)
	if info.Status != batchq.StatusFailed || !strings.Contains(info.Error, "not a JSON object") {
		t.Errorf("chain after an array context = %+v", info)
	}
	eventually(t, "the job.failed event", func() bool { return tp.count("job.failed:0") == 1 })
	g.release(0)
}
