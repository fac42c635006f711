package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchq/batchq"
	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/executor"
	"github.com/batchq/batchq/store"
	"github.com/nats-io/nats.go"
)

func TestParallelArgsAndSharedContext(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		rec := &recorder{}
		var writeErr error
		var mu sync.Mutex
		e.startExecutor("default", map[string]executor.Handler{
			"order": rec.record(func(ctx context.Context, j *executor.Job) error {
				mu.Lock()
				defer mu.Unlock()
				writeErr = j.Set("x", 1)
				var id int
				if _, err := j.Arg("order_id", &id); err != nil {
					return err
				}
				return j.SetResult(map[string]any{"order": id, "user": j.Position()})
			}),
		}, nil)
		id, err := e.client.NewBatch(
			batchq.Job{Name: "order", Args: map[string]int{"order_id": 1}},
			batchq.Job{Name: "order", Args: map[string]int{"order_id": 2}},
			batchq.Job{Name: "order", Args: map[string]any{"order_id": 3, "user_id": 99}},
		).Context(map[string]any{"user_id": 123, "operation": "bulk"}).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		info := e.wait(id)
		if info.Status != batchq.StatusCompleted {
			t.Fatalf("status %s, error %q", info.Status, info.Error)
		}
		calls := rec.named("order")
		if len(calls) != 3 {
			t.Fatalf("%d calls, want 3", len(calls))
		}
		for _, c := range calls {
			if c.input["operation"] != "bulk" {
				t.Errorf("job %s input %v lacks the shared context", c.jobID, c.input)
			}
			wantUser := 123.0
			if c.position == 2 {
				wantUser = 99 // the job's own args win over the context
			}
			if c.input["user_id"] != wantUser {
				t.Errorf("job %s user_id = %v, want %v", c.jobID, c.input["user_id"], wantUser)
			}
			if c.input["order_id"] != float64(c.position+1) {
				t.Errorf("job %s order_id = %v", c.jobID, c.input["order_id"])
			}
		}
		if !errors.Is(writeErr, executor.ErrReadOnlyContext) {
			t.Errorf("Set in a parallel job returned %v, want ErrReadOnlyContext", writeErr)
		}
		for i := range 3 {
			r, err := e.client.JobResult(e.ctx(), id, fmt.Sprint(i))
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf(`{"order":%d,"user":%d}`, i+1, i); string(r.Result) != want {
				t.Errorf("result of job %d = %s, want %s", i, r.Result, want)
			}
			if r.Status != events.JobStatusCompleted || r.Attempts != 1 {
				t.Errorf("job %d status %s attempts %d", i, r.Status, r.Attempts)
			}
		}
		if _, err := e.client.JobResult(e.ctx(), id, "7"); !errors.Is(err, batchq.ErrJobNotFound) {
			t.Errorf("JobResult of a missing job: %v, want ErrJobNotFound", err)
		}
		if _, err := e.client.Batch(e.ctx(), "no-such-batch"); !errors.Is(err, batchq.ErrBatchNotFound) {
			t.Errorf("Batch of a missing batch: %v, want ErrBatchNotFound", err)
		}
	})
}

func TestParallelBareAndMixedJobs(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		rec := &recorder{}
		e.startExecutor("default", map[string]executor.Handler{
			"a": rec.record(nil), "b": rec.record(nil), "c": rec.record(nil),
		}, nil)
		jobs := append(batchq.Jobs("a", "b"), batchq.Job{Name: "c", Args: []int{1, 2}}, batchq.Job{Name: "a"})
		id, err := e.client.NewBatch(jobs...).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		info := e.wait(id)
		if info.Status != batchq.StatusCompleted || info.Total != 4 || info.Completed != 4 {
			t.Fatalf("batch = %+v", info)
		}
		if n := len(rec.named("a")); n != 2 {
			t.Errorf("job a ran %d times, want 2", n)
		}
		for _, c := range rec.all() {
			switch c.name {
			case "c":
				if string(c.args) != "[1,2]" {
					t.Errorf("job c args = %s", c.args)
				}
			default:
				if c.args != nil {
					t.Errorf("bare job %s has args %s", c.name, c.args)
				}
			}
		}
	})
}

// gate holds jobs until released, so a test can read a batch mid-way.
type gate struct {
	mu   sync.Mutex
	open map[int]chan struct{}
}

func newGate() *gate { return &gate{open: map[int]chan struct{}{}} }

func (g *gate) ch(position int) chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	c, ok := g.open[position]
	if !ok {
		c = make(chan struct{})
		g.open[position] = c
	}
	return c
}

func (g *gate) release(position int) { close(g.ch(position)) }

func (g *gate) handler() executor.Handler {
	return func(ctx context.Context, j *executor.Job) error {
		select {
		case <-g.ch(j.Position()):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func TestProgressRoundsDown(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		g := newGate()
		e.startExecutor("default", map[string]executor.Handler{"held": g.handler()}, nil)
		id, err := e.client.NewBatch(batchq.Jobs("held", "held", "held")...).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		g.release(0)
		eventually(t, "one of three jobs to complete", func() bool {
			b, err := e.client.Batch(e.ctx(), id)
			return err == nil && b.Completed == 1
		})
		p, err := e.client.Progress(e.ctx(), id)
		if err != nil {
			t.Fatal(err)
		}
		if p != 33 {
			t.Errorf("Progress with 1 of 3 done = %d, want 33", p)
		}
		g.release(1)
		eventually(t, "two of three", func() bool {
			p, _ := e.client.Progress(e.ctx(), id)
			return p == 66
		})
		g.release(2)
		if info := e.wait(id); info.Progress != 100 {
			t.Errorf("final progress %d", info.Progress)
		}
	})
}

func TestProgressOf(t *testing.T) {
	cases := []struct{ done, total, want int }{
		{0, 3, 0}, {1, 3, 33}, {2, 3, 66}, {3, 3, 100}, {1, 7, 14}, {999, 1000, 99}, {0, 0, 100},
	}
	for _, c := range cases {
		if got := events.ProgressOf(c.done, c.total); got != c.want {
			t.Errorf("ProgressOf(%d, %d) = %d, want %d", c.done, c.total, got, c.want)
		}
	}
}

func TestCallbacksOnce(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		rec := &recorder{}
		e.startExecutor("default", map[string]executor.Handler{
			"ok":   rec.record(nil),
			"done": rec.record(func(ctx context.Context, j *executor.Job) error { return j.SetResult("reduced") }),
			"oops": rec.record(nil),
		}, nil)
		id, err := e.client.NewBatch(batchq.Jobs("ok", "ok", "ok", "ok")...).
			OnComplete("done", map[string]string{"to": "ops"}).
			OnFailure("oops", nil).
			Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		e.wait(id)
		eventually(t, "the completion callback", func() bool { return len(rec.named("done")) == 1 })
		time.Sleep(settleTime)
		done := rec.named("done")
		if len(done) != 1 {
			t.Fatalf("completion callback ran %d times, want 1", len(done))
		}
		if n := len(rec.named("oops")); n != 0 {
			t.Errorf("failure callback ran %d times for a completed batch", n)
		}
		cb := done[0].callback
		if cb == nil || cb.Kind != events.OnComplete || cb.Status != batchq.StatusCompleted || cb.Error != "" || cb.Total != 4 || cb.Completed != 4 {
			t.Errorf("callback info = %+v", cb)
		}
		if string(done[0].args) != `{"to":"ops"}` {
			t.Errorf("callback args = %s", done[0].args)
		}
		if done[0].jobID != "on_complete" {
			t.Errorf("callback job id = %s", done[0].jobID)
		}
		eventually(t, "the callback's result", func() bool {
			r, err := e.client.JobResult(e.ctx(), id, "on_complete")
			return err == nil && r.Status == events.JobStatusCompleted && string(r.Result) == `"reduced"`
		})
		info, err := e.client.Batch(e.ctx(), id)
		if err != nil {
			t.Fatal(err)
		}
		if len(info.Callbacks) != 1 || info.Callbacks[0].Kind != events.OnComplete || info.Callbacks[0].Status != events.JobStatusCompleted {
			t.Errorf("Batch().Callbacks = %+v", info.Callbacks)
		}
	})
}

func TestFailFast(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		rec := &recorder{}
		g := newGate()
		e.startExecutor("default", map[string]executor.Handler{
			"held": g.handler(),
			"boom": rec.record(func(context.Context, *executor.Job) error { return errors.New("disk full") }),
			"done": rec.record(nil),
			"oops": rec.record(nil),
		}, nil)
		id, err := e.client.NewBatch(batchq.Jobs("held", "boom")...).
			MaxAttempts(2).
			OnComplete("done", nil).OnFailure("oops", map[string]int{"n": 1}).
			Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		info := e.wait(id)
		if info.Status != batchq.StatusFailed || info.Failed != 1 {
			t.Fatalf("batch = %+v", info)
		}
		if want := "job 1 (boom) failed: disk full"; info.Error != want {
			t.Errorf("batch error %q, want %q", info.Error, want)
		}
		if n := len(rec.named("boom")); n != 2 {
			t.Errorf("failing job ran %d times, want 2 attempts", n)
		}
		eventually(t, "the failure callback", func() bool { return len(rec.named("oops")) == 1 })

		g.release(0) // the sibling succeeds after the batch failed
		eventually(t, "the late sibling outcome to be stored", func() bool {
			r, err := e.client.JobResult(e.ctx(), id, "0")
			return err == nil && r.Status == events.JobStatusCompleted
		})
		time.Sleep(settleTime)
		after, err := e.client.Batch(e.ctx(), id)
		if err != nil {
			t.Fatal(err)
		}
		if after.Status != batchq.StatusFailed || after.Completed != 1 || after.Failed != 1 {
			t.Errorf("after a late success: %+v", after)
		}
		if n := len(rec.named("oops")); n != 1 {
			t.Errorf("failure callback ran %d times, want 1", n)
		}
		if n := len(rec.named("done")); n != 0 {
			t.Errorf("completion callback ran %d times for a failed batch", n)
		}
		cb := rec.named("oops")[0].callback
		if cb.Status != batchq.StatusFailed || cb.Error != "job 1 (boom) failed: disk full" || string(rec.named("oops")[0].args) != `{"n":1}` {
			t.Errorf("failure callback got %+v args %s", cb, rec.named("oops")[0].args)
		}
	})
}

func TestInvalidSpecsRejected(t *testing.T) {
	e := newEnv(t, stores()[0].open)
	c := e.client
	cases := []struct {
		name  string
		b     *batchq.Builder
		field string
	}{
		{"no jobs", c.NewBatch(), "jobs"},
		{"empty name", c.NewBatch(batchq.Job{Name: ""}), "job 0"},
		{"queue with dot", c.NewBatch(batchq.Jobs("a")...).QueueConfig("a.b"), "queue"},
		{"queue with space", c.NewBatch(batchq.Jobs("a")...).Queue("my queue"), "queue"},
		{"args not encodable", c.NewBatch(batchq.Job{Name: "a", Args: map[string]any{"f": func() {}}}), "job 0 (a) args"},
		{"bad raw args", c.NewBatch(batchq.Job{Name: "a", Args: json.RawMessage(`{bad`)}), "job 0 (a) args"},
		{"context not object", c.NewBatch(batchq.Jobs("a")...).Context([]int{1}), "context"},
		{"allow failures on chain", c.NewChain(batchq.Jobs("a")...).AllowFailures(), "AllowFailures"},
		{"too large", c.NewBatch(batchq.Job{Name: "a", Args: string(make([]byte, 2<<20))}), "job 0 (a) args"},
		{"callback name", c.NewBatch(batchq.Jobs("a")...).OnComplete("", nil), "OnComplete"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.b.Dispatch(e.ctx())
			var se *batchq.SpecError
			if !errors.As(err, &se) {
				t.Fatalf("Dispatch error = %v, want a *SpecError", err)
			}
			if se.Field != tc.field {
				t.Errorf("SpecError.Field = %q, want %q (error: %v)", se.Field, tc.field, err)
			}
			if !errors.Is(err, batchq.ErrInvalidSpec) {
				t.Errorf("error does not match ErrInvalidSpec")
			}
		})
	}
	// Nothing was published: the events stream holds no message.
	js, _ := jetstreamNew(e.nc)
	if s, err := js.Stream(e.ctx(), events.EventsStream); err == nil {
		if n := s.CachedInfo().State.Msgs; n != 0 {
			t.Errorf("events stream holds %d messages after rejected dispatches", n)
		}
	}
}

// TestFailFastSkipsUndispatchedJobs fails a large parallel batch at once:
// the jobs the dispatcher never published count as skipped and read as
// skipped, so the counts add up to the total.
func TestFailFastSkipsUndispatchedJobs(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(func(c *Config) { c.DispatchChunk = 10 })
		e.startExecutor("default", map[string]executor.Handler{
			"bad": func(context.Context, *executor.Job) error { return executor.Permanent(errors.New("no")) },
			"ok":  func(context.Context, *executor.Job) error { time.Sleep(time.Millisecond); return nil },
		}, func(c *executor.Config) { c.Concurrency = 1 })
		jobs := append(batchq.Jobs("bad"), make([]batchq.Job, 2000)...)
		for i := 1; i < len(jobs); i++ {
			jobs[i] = batchq.Job{Name: "ok"}
		}
		id, err := e.client.NewBatch(jobs...).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		info := e.wait(id)
		if info.Status != batchq.StatusFailed || info.Skipped == 0 {
			t.Fatalf("batch = %+v, want failed with undispatched jobs skipped", info)
		}
		var seen *batchq.BatchInfo
		defer func() { t.Logf("last read: %+v", seen) }()
		eventually(t, "the counts to add up", func() bool {
			b, err := e.client.Batch(e.ctx(), id)
			if err == nil {
				seen = b
			}
			return err == nil && b.Completed+b.Failed+b.Skipped == b.Total
		})
		last, err := e.client.JobResult(e.ctx(), id, "2000")
		if err != nil {
			t.Fatal(err)
		}
		if last.Status != events.JobStatusSkipped {
			t.Errorf("an undispatched job reads as %s, want skipped", last.Status)
		}
	})
}

// TestPrunedBatchNotPending removes a finished batch by retention: reads
// then report it as not found, not as pending.
func TestPrunedBatchNotPending(t *testing.T) {
	e := kvEnv(t)
	e.startCoordinator(nil)
	e.startExecutor("default", map[string]executor.Handler{"ok": func(context.Context, *executor.Job) error { return nil }}, nil)
	id, err := e.client.NewBatch(batchq.Jobs("ok")...).Dispatch(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	e.wait(id)
	if n, err := e.store.Prune(e.ctx(), time.Now().Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v", n, err)
	}
	_, err = e.client.Batch(e.ctx(), id)
	if !errors.Is(err, batchq.ErrBatchNotFound) {
		t.Fatalf("Batch of a pruned batch: %v, want ErrBatchNotFound", err)
	}
	if !strings.Contains(err.Error(), id) {
		t.Errorf("error %q does not name the batch", err)
	}
	if _, err := e.client.Wait(e.ctx(), id); !errors.Is(err, batchq.ErrBatchNotFound) {
		t.Errorf("Wait on a pruned batch: %v, want ErrBatchNotFound", err)
	}
}
