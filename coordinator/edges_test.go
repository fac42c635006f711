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

// TestAddJobsTooLargeNotCounted adds jobs from a handler in one call that
// is too large for one message, then in two calls that fit. The first call
// publishes nothing, so it must not count as an addition that the job's
// completion waits for.
func TestAddJobsTooLargeNotCounted(t *testing.T) {
	e := kvEnv(t)
	e.startCoordinator(nil)
	tooLarge := make(chan error, 1)
	e.startExecutor("default", map[string]executor.Handler{
		"parent": func(ctx context.Context, j *executor.Job) error {
			big := strings.Repeat("x", 300_000)
			jobs := []batchq.Job{
				{Name: "leaf", Args: big}, {Name: "leaf", Args: big},
				{Name: "leaf", Args: big}, {Name: "leaf", Args: big},
			}
			_, err := j.AddJobs(ctx, jobs...)
			tooLarge <- err
			if err == nil {
				return nil
			}
			// Fall back to smaller additions, as the error message advises.
			for _, job := range jobs {
				if _, err := j.AddJobs(ctx, job); err != nil {
					return err
				}
			}
			return nil
		},
		"leaf": func(context.Context, *executor.Job) error { return nil },
	}, nil)

	id, err := e.client.NewBatch(batchq.Jobs("parent")...).Dispatch(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	if err := <-tooLarge; err == nil {
		t.Fatal("adding 1.2 MB of jobs in one call succeeded; the test needs it to be rejected")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	info, err := e.client.Wait(ctx, id)
	if err != nil {
		b, _ := e.client.Batch(context.Background(), id)
		t.Fatalf("batch did not settle within 15s: %v; state %+v", err, b)
	}
	if info.Status != batchq.StatusCompleted || info.Total != 5 {
		t.Errorf("batch %+v, want completed with 5 jobs", info)
	}
}

// TestDrainTimeoutBoundsRun stops an executor whose handler ignores its
// context: Run returns after DrainTimeout and the grace for handlers that
// ignore cancellation, and leaves the job for redelivery.
func TestDrainTimeoutBoundsRun(t *testing.T) {
	e := kvEnv(t)
	e.startCoordinator(nil)
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	defer close(release)
	r := e.startExecutor("default", map[string]executor.Handler{
		"stubborn": func(context.Context, *executor.Job) error {
			started <- struct{}{}
			<-release // ignores ctx, as a blocking library call would
			return nil
		},
	}, func(c *executor.Config) { c.DrainTimeout = 200 * time.Millisecond })

	if _, err := e.client.NewBatch(batchq.Jobs("stubborn")...).Dispatch(e.ctx()); err != nil {
		t.Fatal(err)
	}
	<-started
	begin := time.Now()
	r.cancel()
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("Run has not returned %s after its context ended, with DrainTimeout 200ms", time.Since(begin).Round(time.Millisecond))
	}
}

// TestSetRejectsInvalidUTF8 stores a string that is not valid UTF-8 with
// Job.Set in a chain step: Set returns an error rather than letting the
// next step read a changed string.
func TestSetRejectsInvalidUTF8(t *testing.T) {
	e := kvEnv(t)
	e.startCoordinator(nil)
	const name = "caf\xe9.txt"
	setErr := make(chan error, 1)
	got := make(chan string, 1)
	e.startExecutor("default", map[string]executor.Handler{
		"set": func(ctx context.Context, j *executor.Job) error {
			err := j.Set("name", name)
			select {
			case setErr <- err:
			default:
			}
			return executor.Permanent(err)
		},
		"get": func(ctx context.Context, j *executor.Job) error {
			var v string
			_, err := j.Get("name", &v)
			got <- v
			return err
		},
	}, nil)
	id, err := e.client.NewChain(batchq.Jobs("set", "get")...).Dispatch(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	e.wait(id)
	err = <-setErr
	if err == nil || !strings.Contains(err.Error(), "UTF-8") {
		t.Fatalf("Set(%q) returned %v, want an error about UTF-8", name, err)
	}
	select {
	case v := <-got:
		t.Errorf("the next step ran and read %q", v)
	default:
	}
}

// TestResultsPageEscapedErrors reads the results of a batch whose jobs
// failed with errors full of '<', as an HTML error page from an upstream
// server would be. JSON escapes each '<' as six bytes, and the pages must
// still fit in one reply.
func TestResultsPageEscapedErrors(t *testing.T) {
	e := kvEnv(t)
	e.startCoordinator(nil)
	e.startExecutor("default", map[string]executor.Handler{
		"fetch": func(context.Context, *executor.Job) error {
			return executor.Permanent(errors.New(strings.Repeat("<", 4000)))
		},
	}, nil)
	jobs := make([]batchq.Job, 60)
	for i := range jobs {
		jobs[i] = batchq.Job{Name: "fetch"}
	}
	id, err := e.client.NewBatch(jobs...).AllowFailures().Dispatch(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	if info := e.wait(id); info.Failed != len(jobs) {
		t.Fatalf("batch %+v, want %d failed jobs", info, len(jobs))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	results, err := e.client.Results(ctx, id)
	if err != nil {
		t.Fatalf("Results: %v", err)
	}
	if len(results) != len(jobs) {
		t.Errorf("Results returned %d jobs, want %d", len(results), len(jobs))
	}
}

// TestCancelRightAfterDispatch cancels batches as soon as Dispatch returns,
// while the coordinator may not have stored them yet.
func TestCancelRightAfterDispatch(t *testing.T) {
	e := kvEnv(t)
	e.startCoordinator(nil)
	g := newGate()
	e.startExecutor("default", map[string]executor.Handler{"held": g.handler()}, nil)
	notFound := 0
	for range 20 {
		id, err := e.client.NewBatch(batchq.Jobs("held")...).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		if err := e.client.Cancel(e.ctx(), id, "changed my mind"); errors.Is(err, batchq.ErrBatchNotFound) {
			notFound++
		} else if err != nil {
			t.Fatalf("Cancel: %v", err)
		}
	}
	g.release(0)
	if notFound > 0 {
		t.Errorf("Cancel right after Dispatch returned ErrBatchNotFound for %d of 20 dispatched batches", notFound)
	}
}

// TestDispatchWithIDIsIdempotent dispatches the same batch twice under one
// caller-chosen id, as a retry after a lost reply would: it runs once.
func TestDispatchWithIDIsIdempotent(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		rec := &recorder{}
		e.startExecutor("default", map[string]executor.Handler{"job": rec.record(nil)}, nil)
		for range 2 {
			id, err := e.client.NewBatch(batchq.Jobs("job", "job")...).ID("order-1001-import").Dispatch(e.ctx())
			if err != nil {
				t.Fatal(err)
			}
			if id != "order-1001-import" {
				t.Fatalf("Dispatch returned id %q", id)
			}
		}
		info := e.wait("order-1001-import")
		time.Sleep(settleTime)
		if info.Total != 2 || len(rec.named("job")) != 2 {
			t.Errorf("batch %+v ran %d jobs, want 2 jobs run once", info, len(rec.named("job")))
		}
		if _, err := e.client.NewBatch(batchq.Jobs("job")...).ID("bad.id").Dispatch(e.ctx()); !errors.Is(err, batchq.ErrInvalidSpec) {
			t.Errorf("Dispatch with id %q: %v, want ErrInvalidSpec", "bad.id", err)
		}
	})
}
