package coordinator

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batchq/batchq"
	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/executor"
	"github.com/batchq/batchq/internal/natstest"
	"github.com/batchq/batchq/internal/pgtest"
	"github.com/batchq/batchq/store"
	"github.com/nats-io/nats.go"
)

// TestSweepPastUnpublishable leaves a message in the outbox that the
// server can never accept, then leaves a second batch's completion in the
// outbox with a crash after the commit. A new coordinator's sweeper drops
// the first and publishes the second batch's messages, so its completion
// callback runs.
func TestSweepPastUnpublishable(t *testing.T) {
	e := newEnv(t, func(tb testing.TB, _ *nats.Conn) store.Store { return pgtest.Open(tb) })
	var crashNext atomic.Bool
	first := e.startCoordinator(func(c *Config) {
		c.afterCommit = func() error {
			if crashNext.Load() {
				return errors.New("simulated crash after commit")
			}
			return nil
		}
	})
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	var doneRuns atomic.Int32
	e.startExecutor("default", map[string]executor.Handler{
		"block": func(ctx context.Context, _ *executor.Job) error {
			select {
			case started <- struct{}{}:
			default:
			}
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		},
		"last": func(context.Context, *executor.Job) error {
			// The next commit applies this job's completion.
			crashNext.Store(true)
			return nil
		},
		"done": func(context.Context, *executor.Job) error {
			doneRuns.Add(1)
			return nil
		},
	}, nil)

	// Batch A: cancelled with a long reason while its job runs.
	a, err := e.client.NewBatch(batchq.Jobs("block")...).Dispatch(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("job of batch A did not start")
	}
	// An outbox message that the server can never accept, as a message
	// built past the size checks would be.
	_, err = e.store.Update(e.ctx(), []string{a}, func(tx store.Tx) error {
		tx.Emit(a, events.Message{Subject: events.EventSubject("default", a, events.TypeBatchCancelled), ID: a + ":oversized",
			Type: events.TypeBatchCancelled, Data: make([]byte, e.nc.MaxPayload()+1)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	close(release)

	// Batch B: the coordinator stops right after committing its
	// completion, so its callback's work waits in the outbox.
	b, err := e.client.NewBatch(batchq.Jobs("last")...).OnComplete("done", nil).Dispatch(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-first.done:
	case <-time.After(20 * time.Second):
		t.Fatal("the coordinator did not reach the crash point")
	}
	stored, err := e.store.Batch(e.ctx(), b)
	if err != nil || !stored.Status.Final() {
		t.Fatalf("batch B after the crash = %+v, %v; want it settled in the store", stored, err)
	}

	e.startCoordinator(nil)
	deadline := time.Now().Add(10 * time.Second)
	for doneRuns.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if doneRuns.Load() == 0 {
		t.Errorf("the completion callback of batch B did not run within 10s of the restart; the sweeper is stuck behind batch A's unpublishable message")
	}
}

// TestSweepReturnsWithFullPage puts an unpublishable message at the head of
// an outbox that holds more than one page of 1,000 messages. One sweep
// publishes what it can and returns instead of reading pages until its
// context ends.
func TestSweepReturnsWithFullPage(t *testing.T) {
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	s := pgtest.Open(t)
	ctx := context.Background()

	const id = "sweep-page"
	if err := s.StageJobs(ctx, id, 0, []*store.Job{store.JobFromSpec(id, events.JobSpec{ID: "0", Position: 0, Name: "job"})}); err != nil {
		t.Fatal(err)
	}
	_, err := s.Update(ctx, []string{id}, func(tx store.Tx) error {
		if err := tx.CreateBatch(ctx, &store.Batch{ID: id, Type: events.Parallel, Status: events.StatusRunning, Queue: "default", Total: 1}); err != nil {
			return err
		}
		big := events.Message{Subject: "batchq.test.big", ID: id + ":big", Type: events.TypeBatchCancelled, Data: make([]byte, nc.MaxPayload()+1)}
		tx.Emit(id, big)
		for i := range 1000 {
			tx.Emit(id, events.Message{Subject: "batchq.test.small", ID: fmt.Sprintf("%s:small:%d", id, i), Type: events.TypeBatchStarted, Data: []byte("{}")})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	c, err := New(Config{Conn: nc, Store: s, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	sweepCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	c.sweep(sweepCtx, time.Now().Add(time.Minute))
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("one sweep took %v and ended only with its context; it kept reading the same outbox page", elapsed.Round(time.Millisecond))
	}
}

// TestSweepRepublishesStoredWork leaves a batch's completion callback in
// the outbox next to an unpublishable message. The sweeper deletes what
// the stream stored, so no later sweep publishes the callback's work again
// after the duplicate window, and the callback runs once.
func TestSweepRepublishesStoredWork(t *testing.T) {
	e := newEnv(t, func(tb testing.TB, _ *nats.Conn) store.Store { return pgtest.Open(tb) })
	const duplicateWindow = time.Second
	var holdCommit atomic.Bool
	inHook := make(chan struct{}, 1)
	crash := make(chan struct{})
	first := e.startCoordinator(func(c *Config) {
		c.Streams.DuplicateWindow = duplicateWindow
		// The sweeper of this coordinator must not take batch B's
		// messages before the test crashes it.
		c.OutboxAge = time.Minute
		c.afterCommit = func() error {
			if !holdCommit.Load() {
				return nil
			}
			inHook <- struct{}{}
			<-crash
			return errors.New("simulated crash after commit")
		}
	})
	started := make(chan struct{}, 1)
	var doneRuns atomic.Int32
	e.startExecutor("default", map[string]executor.Handler{
		"block": func(ctx context.Context, _ *executor.Job) error {
			select {
			case started <- struct{}{}:
			default:
			}
			<-ctx.Done()
			return nil
		},
		"last": func(context.Context, *executor.Job) error {
			// The next commit applies this job's completion.
			holdCommit.Store(true)
			return nil
		},
		"done": func(context.Context, *executor.Job) error {
			doneRuns.Add(1)
			return nil
		},
	}, nil)

	// Batch A keeps a job running, so that a cancel moves it to
	// compensating.
	a, err := e.client.NewBatch(batchq.Jobs("block")...).Dispatch(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("job of batch A did not start")
	}

	// Batch B completes; the coordinator holds after the commit, so B's
	// batch.completed and callback work wait in the outbox.
	b, err := e.client.NewBatch(batchq.Jobs("last")...).OnComplete("done", nil).Dispatch(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-inHook:
	case <-time.After(20 * time.Second):
		t.Fatal("the coordinator did not commit batch B's completion")
	}

	// An outbox message that the server can never accept, as a message
	// built past the size checks would be.
	_, err = e.store.Update(e.ctx(), []string{a}, func(tx store.Tx) error {
		tx.Emit(a, events.Message{Subject: events.EventSubject("default", a, events.TypeBatchCancelled), ID: a + ":oversized",
			Type: events.TypeBatchCancelled, Data: make([]byte, e.nc.MaxPayload()+1)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	close(crash)
	<-first.done

	// Every sweep of the next coordinator, whose OutboxAge is 500ms, then
	// takes both of B's messages together with the unpublishable one, as a
	// sweep does with messages that cross its cutoff within one
	// SweepInterval.
	time.Sleep(time.Second)

	e.startCoordinator(func(c *Config) { c.Streams.DuplicateWindow = duplicateWindow })
	eventually(t, "the completion callback of batch B", func() bool { return doneRuns.Load() > 0 })
	time.Sleep(5 * duplicateWindow)
	if n := doneRuns.Load(); n != 1 {
		t.Errorf("the completion callback of batch %s ran %d times in %v, want 1", b, n, 5*duplicateWindow)
	}
}
