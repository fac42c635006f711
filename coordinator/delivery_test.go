package coordinator

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batchq/batchq"
	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/executor"
	"github.com/batchq/batchq/internal/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// These tests cover delivery: retries, timeouts, panics, prefetch, progress
// acknowledgements and crashes. The store does not matter to them, so they
// run on the KV store only.

func kvEnv(t *testing.T) *env {
	return newEnv(t, stores()[0].open)
}

func TestRetrySurvivesRestart(t *testing.T) {
	e := kvEnv(t)
	e.startCoordinator(nil)
	var attempts atomic.Int32
	failedOnce := make(chan struct{})
	handler := func(ctx context.Context, j *executor.Job) error {
		attempts.Add(1)
		if j.Attempt() == 1 {
			close(failedOnce)
			return errors.New("first attempt fails")
		}
		return j.SetResult(j.Attempt())
	}
	slow := func(c *executor.Config) { c.MinBackoff, c.MaxBackoff = 2*time.Second, 2*time.Second }
	first := e.startExecutor("default", map[string]executor.Handler{"job": handler}, slow)
	id, err := e.client.NewBatch(batchq.Jobs("job")...).Dispatch(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	<-failedOnce
	if err := first.stop(); err != nil {
		t.Fatal(err)
	}
	e.startExecutor("default", map[string]executor.Handler{"job": handler}, nil)
	info := e.wait(id)
	if info.Status != batchq.StatusCompleted {
		t.Fatalf("batch = %+v", info)
	}
	j, _ := e.client.JobResult(e.ctx(), id, "0")
	if j.Attempts != 2 || string(j.Result) != "2" || attempts.Load() != 2 {
		t.Errorf("job = %+v after %d runs, want attempt 2 after 2 runs", j, attempts.Load())
	}
}

func TestTimeoutCancelsHandler(t *testing.T) {
	e := kvEnv(t)
	e.startCoordinator(nil)
	sawCancel := make(chan struct{}, 1)
	e.startExecutor("default", map[string]executor.Handler{
		"slow": func(ctx context.Context, j *executor.Job) error {
			<-ctx.Done()
			sawCancel <- struct{}{}
			return ctx.Err()
		},
	}, nil)
	id, err := e.client.NewBatch(batchq.Job{Name: "slow", Timeout: 100 * time.Millisecond}).MaxAttempts(1).Dispatch(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	info := e.wait(id)
	if info.Status != batchq.StatusFailed || !strings.Contains(info.Error, "timed out after 100ms") {
		t.Fatalf("batch = %+v", info)
	}
	select {
	case <-sawCancel:
	default:
		t.Error("the handler's context was not cancelled")
	}
}

func TestPanicFailsJob(t *testing.T) {
	e := kvEnv(t)
	e.startCoordinator(nil)
	e.startExecutor("default", map[string]executor.Handler{
		"boom": func(context.Context, *executor.Job) error { panic("nil map write") },
	}, nil)
	id, err := e.client.NewBatch(batchq.Jobs("boom")...).MaxAttempts(2).Dispatch(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	info := e.wait(id)
	if info.Status != batchq.StatusFailed || !strings.Contains(info.Error, "panic: nil map write") {
		t.Fatalf("batch = %+v", info)
	}
	j, _ := e.client.JobResult(e.ctx(), id, "0")
	if j.Attempts != 2 {
		t.Errorf("attempts = %d, want 2", j.Attempts)
	}
}

func TestPrefetchBoundedByConcurrency(t *testing.T) {
	e := kvEnv(t)
	e.startCoordinator(nil)
	var running, peak atomic.Int32
	e.startExecutor("default", map[string]executor.Handler{
		"work": func(ctx context.Context, j *executor.Job) error {
			n := running.Add(1)
			defer running.Add(-1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			time.Sleep(30 * time.Millisecond)
			return nil
		},
	}, func(c *executor.Config) { c.Concurrency = 2 })
	jobs := make([]batchq.Job, 30)
	for i := range jobs {
		jobs[i] = batchq.Job{Name: "work"}
	}
	id, err := e.client.NewBatch(jobs...).Dispatch(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(e.nc)
	var maxPending int
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			cons, err := js.Consumer(context.Background(), events.WorkStream, events.WorkConsumer("default"))
			if err == nil {
				if ci, err := cons.Info(context.Background()); err == nil {
					maxPending = max(maxPending, ci.NumAckPending)
					if ci.NumPending == 0 && ci.NumAckPending == 0 && ci.Delivered.Stream > 0 {
						return
					}
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	e.wait(id)
	<-done
	if p := peak.Load(); p > 2 {
		t.Errorf("%d jobs ran at once with Concurrency 2", p)
	}
	if maxPending > 2 {
		t.Errorf("the consumer had %d unacknowledged messages with Concurrency 2", maxPending)
	}
}

func TestLongJobNotRedelivered(t *testing.T) {
	e := kvEnv(t)
	e.startCoordinator(nil)
	var runs atomic.Int32
	var deliveries atomic.Int32
	long := func(ctx context.Context, j *executor.Job) error {
		runs.Add(1)
		deliveries.Store(int32(j.Deliveries()))
		time.Sleep(3500 * time.Millisecond) // longer than AckWait (2s)
		return nil
	}
	// A second executor would take a redelivery at once.
	e.startExecutor("default", map[string]executor.Handler{"long": long}, nil)
	e.startExecutor("default", map[string]executor.Handler{"long": long}, nil)
	id, err := e.client.NewBatch(batchq.Jobs("long")...).Dispatch(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	e.wait(id)
	time.Sleep(settleTime)
	if n := runs.Load(); n != 1 {
		t.Errorf("a job longer than AckWait ran %d times; progress acknowledgements should keep it on one executor", n)
	}
	if d := deliveries.Load(); d != 1 {
		t.Errorf("deliveries = %d, want 1", d)
	}
}

// TestCrashRedeliveryIsNotAnAttempt stops an executor's connection while a
// job runs, as a crash would. The job runs again elsewhere with the same
// attempt number, and a job allowed one attempt still completes.
func TestCrashRedeliveryIsNotAnAttempt(t *testing.T) {
	e := kvEnv(t)
	e.startCoordinator(nil)
	started := make(chan struct{})
	block := make(chan struct{})
	defer close(block)
	crashConn := natstest.Connect(t, e.srv)
	x, err := executor.New(executor.Config{Conn: crashConn, Queue: "default", Concurrency: 1, AckWait: 2 * time.Second, Logger: e.log})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	x.Handle("job", func(ctx context.Context, j *executor.Job) error {
		once.Do(func() { close(started) })
		<-block
		return nil
	})
	e.run(t, x.Run)
	id, err := e.client.NewBatch(batchq.Jobs("job")...).MaxAttempts(1).Dispatch(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	<-started
	crashConn.Close()

	var got struct {
		attempt, deliveries int
	}
	var mu sync.Mutex
	e.startExecutor("default", map[string]executor.Handler{
		"job": func(ctx context.Context, j *executor.Job) error {
			mu.Lock()
			got.attempt, got.deliveries = j.Attempt(), j.Deliveries()
			mu.Unlock()
			return nil
		},
	}, nil)
	info := e.wait(id)
	if info.Status != batchq.StatusCompleted {
		t.Fatalf("batch = %+v; a crash must not count as a failed attempt", info)
	}
	mu.Lock()
	defer mu.Unlock()
	if got.attempt != 1 || got.deliveries < 2 {
		t.Errorf("redelivered run saw attempt %d deliveries %d, want attempt 1 and at least 2 deliveries", got.attempt, got.deliveries)
	}
}

// crashingExecutor starts an executor whose handler blocks until the test
// ends, and returns a channel closed when the handler started and the
// connection to close to simulate a crash.
func crashingExecutor(t *testing.T, e *env, block chan struct{}, change func(*executor.Config)) (<-chan struct{}, *nats.Conn) {
	conn := natstest.Connect(t, e.srv)
	cfg := executor.Config{Conn: conn, Queue: "default", Concurrency: 1, AckWait: time.Second, Logger: e.log}
	if change != nil {
		change(&cfg)
	}
	x, err := executor.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	var once sync.Once
	x.Handle("job", func(ctx context.Context, j *executor.Job) error {
		once.Do(func() { close(started) })
		<-block
		return nil
	})
	e.run(t, x.Run)
	return started, conn
}

// TestDeliveryLimitFailsJob crashes executors on one job until the delivery
// limit; the job then fails with an error that says so, rather than staying
// in the work stream.
func TestDeliveryLimitFailsJob(t *testing.T) {
	e := kvEnv(t)
	e.startCoordinator(nil)
	block := make(chan struct{})
	defer close(block)
	limit := func(c *executor.Config) { c.MaxDeliver = 3 }
	started, conn := crashingExecutor(t, e, block, limit)
	id, err := e.client.NewBatch(batchq.Jobs("job")...).Dispatch(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	<-started
	conn.Close()
	started, conn = crashingExecutor(t, e, block, limit)
	<-started
	conn.Close()

	ran := make(chan struct{}, 1)
	e.startExecutor("default", map[string]executor.Handler{
		"job": func(context.Context, *executor.Job) error { ran <- struct{}{}; return nil },
	}, limit)
	info := e.wait(id)
	if info.Status != batchq.StatusFailed || !strings.Contains(info.Error, "delivered 3 times without an outcome") {
		t.Fatalf("batch = %+v", info)
	}
	select {
	case <-ran:
		t.Error("the job ran a third time past the delivery limit")
	default:
	}
	js, _ := jetstream.New(e.nc)
	stream, err := js.Stream(e.ctx(), events.WorkStream)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the work stream to be empty", func() bool {
		info, err := stream.Info(e.ctx())
		return err == nil && info.State.Msgs == 0
	})
}

// TestRetriesWithinDeliveryLimit runs a job that fails twice with
// MaxDeliver 2: the deliveries that wait out retry delays do not count, so
// the third attempt runs and completes.
func TestRetriesWithinDeliveryLimit(t *testing.T) {
	e := kvEnv(t)
	e.startCoordinator(nil)
	var runs atomic.Int32
	e.startExecutor("default", map[string]executor.Handler{
		"flaky": func(ctx context.Context, j *executor.Job) error {
			runs.Add(1)
			if j.Attempt() < 3 {
				return errors.New("not yet")
			}
			return nil
		},
	}, func(c *executor.Config) {
		c.MaxDeliver = 2
		c.MinBackoff, c.MaxBackoff = 200*time.Millisecond, 200*time.Millisecond
	})
	id, err := e.client.NewBatch(batchq.Jobs("flaky")...).MaxAttempts(3).Dispatch(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	info := e.wait(id)
	if info.Status != batchq.StatusCompleted || runs.Load() != 3 {
		t.Errorf("batch %+v after %d runs, want completed after 3", info, runs.Load())
	}
}

// TestUndecodableWorkFailsJob publishes a work message whose envelope names
// its job but whose data is invalid: the job fails with the reason, and its
// batch settles instead of waiting forever.
func TestUndecodableWorkFailsJob(t *testing.T) {
	e := kvEnv(t)
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
	// A second attempt of job 0 whose data lacks the job name.
	enc := events.Encoder{Source: "test"}
	msg, err := enc.Encode(events.TypeJobQueued, events.WorkSubject("default", id), "broken-work",
		events.Route{BatchID: id, JobID: "0", Queue: "default", Attempt: 2},
		map[string]any{"batch_id": id, "job_id": "0", "role": "job", "attempt": 2})
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(e.nc)
	if _, err := js.PublishMsg(e.ctx(), msg.NATS()); err != nil {
		t.Fatal(err)
	}
	info := e.wait(id)
	if info.Status != batchq.StatusFailed || !strings.Contains(info.Error, "invalid work message") {
		t.Errorf("batch = %+v", info)
	}
	g.release(0)
}
