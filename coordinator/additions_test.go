package coordinator

import (
	"context"
	"errors"
	"fmt"
	"sync"
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

func TestAllowFailures(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		rec := &recorder{}
		e.startExecutor("default", map[string]executor.Handler{
			"ok":      rec.record(nil),
			"bad":     rec.record(func(context.Context, *executor.Job) error { return executor.Permanent(errors.New("bad row")) }),
			"done":    rec.record(nil),
			"failed":  rec.record(nil),
			"jobfail": rec.record(nil),
		}, nil)
		id, err := e.client.NewBatch(batchq.Jobs("ok", "bad", "ok", "bad", "ok")...).AllowFailures().
			OnComplete("done", nil).OnFailure("failed", nil).OnJobFailure("jobfail", map[string]string{"alert": "ops"}).
			Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		info := e.wait(id)
		if info.Status != batchq.StatusCompleted || info.Completed != 3 || info.Failed != 2 || info.Progress != 60 {
			t.Fatalf("batch = %+v", info)
		}
		eventually(t, "all callbacks", func() bool {
			return len(rec.named("done")) == 1 && len(rec.named("failed")) == 1 && len(rec.named("jobfail")) == 2
		})
		time.Sleep(settleTime)
		if n := len(rec.named("ok")); n != 3 {
			t.Errorf("%d ok jobs ran, want every one", n)
		}
		if n, m := len(rec.named("done")), len(rec.named("failed")); n != 1 || m != 1 {
			t.Errorf("OnComplete ran %d times and OnFailure %d times, want once each", n, m)
		}
		seen := map[string]bool{}
		for _, c := range rec.named("jobfail") {
			fj := c.callback.FailedJob
			if c.callback.Kind != events.OnJobFailure || fj == nil || fj.Error != "bad row" || fj.Name != "bad" {
				t.Errorf("per-job failure callback got %+v", c.callback)
				continue
			}
			if fmt.Sprint(fj.Position) != fj.JobID {
				t.Errorf("failed job id %s and position %d disagree", fj.JobID, fj.Position)
			}
			seen[fj.JobID] = true
			if string(c.args) != `{"alert":"ops"}` {
				t.Errorf("per-job failure callback args = %s", c.args)
			}
		}
		if !seen["1"] || !seen["3"] {
			t.Errorf("per-job failure callbacks for %v, want jobs 1 and 3", seen)
		}
	})
}

func TestAddJobsFromParallelJob(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		rec := &recorder{}
		e.startExecutor("default", map[string]executor.Handler{
			"crawl": rec.record(func(ctx context.Context, j *executor.Job) error {
				ids, err := j.AddJobs(ctx, batchq.Job{Name: "fetch", Args: map[string]string{"url": "a"}}, batchq.Job{}, batchq.Job{Name: "fetch", Args: map[string]string{"url": "b"}})
				if err != nil {
					return err
				}
				return j.SetResult(ids)
			}),
			"fetch": rec.record(nil),
			"done":  rec.record(nil),
		}, nil)
		id, err := e.client.NewBatch(batchq.Jobs("crawl")...).Context(map[string]int{"depth": 2}).OnComplete("done", nil).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		info := e.wait(id)
		if info.Status != batchq.StatusCompleted || info.Total != 3 || info.Completed != 3 {
			t.Fatalf("batch = %+v", info)
		}
		eventually(t, "the callback", func() bool { return len(rec.named("done")) == 1 })
		r, _ := e.client.JobResult(e.ctx(), id, "0")
		if string(r.Result) != `["1","2"]` {
			t.Errorf("AddJobs returned %s, want the new ids [1 2]", r.Result)
		}
		for _, c := range rec.named("fetch") {
			if c.input["depth"] != 2.0 {
				t.Errorf("added job did not see the shared context: %v", c.input)
			}
		}
		if c := rec.named("done")[0].callback; c.Total != 3 {
			t.Errorf("callback saw total %d, want 3", c.Total)
		}
	})
}

func TestAddJobsChainOrder(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		log := &sagaLog{}
		add := func(names ...string) executor.Handler {
			return func(ctx context.Context, j *executor.Job) error {
				log.add(j.Name())
				if err := j.Set("seen_"+j.Name(), true); err != nil {
					return err
				}
				for _, n := range names {
					if _, err := j.AddJobs(ctx, batchq.Job{Name: n}); err != nil {
						return err
					}
				}
				return nil
			}
		}
		var xInput map[string]any
		var mu sync.Mutex
		e.startExecutor("default", map[string]executor.Handler{
			"a": add(), "b": add("x", "y"), "c": add(), "y": add(),
			"x": func(ctx context.Context, j *executor.Job) error {
				mu.Lock()
				_ = j.Decode(&xInput)
				mu.Unlock()
				return add("z")(ctx, j)
			},
			"z": add(),
		}, nil)
		id, err := e.client.NewChain(batchq.Jobs("a", "b", "c")...).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		info := e.wait(id)
		if info.Status != batchq.StatusCompleted || info.Total != 6 {
			t.Fatalf("chain = %+v", info)
		}
		if got := log.String(); got != "a,b,c,x,y,z" {
			t.Errorf("ran %s, want a,b,c,x,y,z", got)
		}
		mu.Lock()
		defer mu.Unlock()
		if xInput["seen_c"] != true {
			t.Errorf("added step x did not see the context of the step before it: %v", xInput)
		}
	})
}

func TestCallbackCannotAddJobs(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		var calls atomic.Int32
		addErr := make(chan error, 4)
		e.startExecutor("default", map[string]executor.Handler{
			"ok": func(context.Context, *executor.Job) error { return nil },
			"done": func(ctx context.Context, j *executor.Job) error {
				calls.Add(1)
				_, err := j.AddJobs(ctx, batchq.Job{Name: "ok"})
				addErr <- err
				return nil
			},
		}, nil)
		id, err := e.client.NewBatch(batchq.Jobs("ok")...).OnComplete("done", nil).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		e.wait(id)
		select {
		case err := <-addErr:
			if !errors.Is(err, batchq.ErrBatchFinished) {
				t.Errorf("AddJobs from the completion callback: %v, want ErrBatchFinished", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the callback did not run")
		}
		time.Sleep(settleTime)
		info, _ := e.client.Batch(e.ctx(), id)
		if calls.Load() != 1 || info.Total != 1 || info.Status != batchq.StatusCompleted {
			t.Errorf("callback ran %d times, batch %+v", calls.Load(), info)
		}
	})
}

// TestAddThousandWhileLastJobCompletes adds 1,000 jobs in chunks of 100
// from the batch's only original job as it completes: none is lost and the
// callback runs once, after all of them.
func TestAddThousandWhileLastJobCompletes(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		var ran atomic.Int32
		var callbacks atomic.Int32
		var cbTotal atomic.Int32
		e.startExecutor("default", map[string]executor.Handler{
			"root": func(ctx context.Context, j *executor.Job) error {
				for chunk := range 10 {
					jobs := make([]batchq.Job, 100)
					for i := range jobs {
						jobs[i] = batchq.Job{Name: "leaf", Args: chunk*100 + i}
					}
					if _, err := j.AddJobs(ctx, jobs...); err != nil {
						return err
					}
				}
				return nil
			},
			"leaf": func(context.Context, *executor.Job) error { ran.Add(1); return nil },
			"done": func(ctx context.Context, j *executor.Job) error {
				callbacks.Add(1)
				cbTotal.Store(int32(j.Callback().Completed))
				return nil
			},
		}, func(c *executor.Config) { c.Concurrency = 16 })
		id, err := e.client.NewBatch(batchq.Jobs("root")...).OnComplete("done", nil).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		info := e.wait(id)
		if info.Status != batchq.StatusCompleted || info.Total != 1001 || info.Completed != 1001 {
			t.Fatalf("batch = %+v", info)
		}
		eventually(t, "the callback", func() bool { return callbacks.Load() == 1 })
		time.Sleep(settleTime)
		if ran.Load() != 1000 || callbacks.Load() != 1 || cbTotal.Load() != 1001 {
			t.Errorf("leaves ran %d, callbacks %d saw %d completed", ran.Load(), callbacks.Load(), cbTotal.Load())
		}
	})
}

// TestClientAddRacesSettlement adds from a client in chunks while the last
// job completes: every chunk is either stored and run, or rejected with
// ErrBatchFinished; none is accepted and lost.
func TestClientAddRacesSettlement(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		g := newGate()
		var leaves atomic.Int32
		var callbacks atomic.Int32
		e.startExecutor("default", map[string]executor.Handler{
			"held": g.handler(),
			"leaf": func(context.Context, *executor.Job) error { leaves.Add(1); return nil },
			"done": func(context.Context, *executor.Job) error { callbacks.Add(1); return nil },
		}, func(c *executor.Config) { c.Concurrency = 8 })
		id, err := e.client.NewBatch(batchq.Jobs("held")...).OnComplete("done", nil).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "the batch to run", func() bool {
			b, err := e.client.Batch(e.ctx(), id)
			return err == nil && b.Status == batchq.StatusRunning
		})
		accepted := 0
		for chunk := range 10 {
			if chunk == 3 {
				g.release(0)
			}
			jobs := make([]batchq.Job, 100)
			for i := range jobs {
				jobs[i] = batchq.Job{Name: "leaf"}
			}
			ids, err := e.client.AddJobs(e.ctx(), id, jobs...)
			switch {
			case err == nil:
				if len(ids) != 100 {
					t.Fatalf("chunk %d: %d ids", chunk, len(ids))
				}
				accepted++
			case errors.Is(err, batchq.ErrBatchFinished):
			default:
				t.Fatalf("chunk %d: %v", chunk, err)
			}
		}
		info := e.wait(id)
		eventually(t, "the callback", func() bool { return callbacks.Load() == 1 })
		time.Sleep(settleTime)
		if info.Total != 1+100*accepted || info.Completed != info.Total {
			t.Errorf("accepted %d chunks, batch %+v", accepted, info)
		}
		if int(leaves.Load()) != 100*accepted || callbacks.Load() != 1 {
			t.Errorf("leaves ran %d for %d accepted chunks, callbacks %d", leaves.Load(), accepted, callbacks.Load())
		}
		if accepted < 3 {
			t.Errorf("only %d chunks accepted; the first three were added while the job was held", accepted)
		}
	})
}

func TestRetriedJobAddsOnce(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		var leaves atomic.Int32
		e.startExecutor("default", map[string]executor.Handler{
			"parent": func(ctx context.Context, j *executor.Job) error {
				if _, err := j.AddJobs(ctx, batchq.Job{Name: "leaf"}, batchq.Job{Name: "leaf"}); err != nil {
					return err
				}
				if j.Attempt() == 1 {
					return errors.New("fail after adding")
				}
				return nil
			},
			"leaf": func(context.Context, *executor.Job) error { leaves.Add(1); return nil },
		}, nil)
		id, err := e.client.NewBatch(batchq.Jobs("parent")...).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		info := e.wait(id)
		time.Sleep(settleTime)
		if info.Total != 3 || info.Completed != 3 || leaves.Load() != 2 {
			t.Errorf("batch %+v with %d leaves run; the retry must not add the jobs again", info, leaves.Load())
		}
	})
}

func TestAddJobsErrors(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		g := newGate()
		e.startExecutor("default", map[string]executor.Handler{"held": g.handler()}, nil)
		id, err := e.client.NewBatch(batchq.Jobs("held")...).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "the batch to run", func() bool {
			b, err := e.client.Batch(e.ctx(), id)
			return err == nil && b.Status == batchq.StatusRunning
		})
		ids, err := e.client.AddJobs(e.ctx(), id, batchq.Job{}, batchq.Job{})
		if err != nil || ids != nil {
			t.Errorf("adding only empty entries = %v, %v; want no change and no error", ids, err)
		}
		if _, err := e.client.AddJobs(e.ctx(), id, batchq.Job{Args: 1}); !errors.Is(err, batchq.ErrInvalidSpec) {
			t.Errorf("adding a job without a name: %v, want ErrInvalidSpec", err)
		}
		if _, err := e.client.AddJobs(e.ctx(), "no-such-batch", batchq.Job{Name: "held"}); !errors.Is(err, batchq.ErrBatchNotFound) {
			t.Errorf("adding to an unknown batch: %v, want ErrBatchNotFound", err)
		}
		g.release(0)
		e.wait(id)
		if _, err := e.client.AddJobs(e.ctx(), id, batchq.Job{Name: "held"}); !errors.Is(err, batchq.ErrBatchFinished) {
			t.Errorf("adding to a finished batch: %v, want ErrBatchFinished", err)
		}
		info, _ := e.client.Batch(e.ctx(), id)
		if info.Total != 1 {
			t.Errorf("total = %d, want 1", info.Total)
		}
	})
}

// TestEmptySubmissionCompletes publishes a batch without jobs, as a client
// in another language might. Dispatch rejects such a batch; the coordinator
// completes it at once and runs its completion callback.
func TestEmptySubmissionCompletes(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		rec := &recorder{}
		e.startExecutor("default", map[string]executor.Handler{"done": rec.record(nil)}, nil)
		enc := events.Encoder{Source: "test"}
		sub := events.BatchSubmitted{BatchID: "empty-1", Type: events.Parallel, QueueName: "default", Queue: "default",
			Options: events.Options{OnComplete: &events.JobRef{Name: "done"}}}
		msg, err := enc.Encode(events.TypeBatchSubmitted, events.EventSubject("default", sub.BatchID, events.TypeBatchSubmitted),
			events.SubmittedMsgID(sub.BatchID), events.Route{BatchID: sub.BatchID}, sub)
		if err != nil {
			t.Fatal(err)
		}
		js, _ := jetstream.New(e.nc)
		if _, err := js.PublishMsg(e.ctx(), msg.NATS()); err != nil {
			t.Fatal(err)
		}
		info := e.wait(sub.BatchID)
		if info.Status != batchq.StatusCompleted || info.Total != 0 || info.Progress != 100 {
			t.Errorf("empty batch = %+v", info)
		}
		eventually(t, "the completion callback", func() bool { return len(rec.named("done")) == 1 })
	})
}
