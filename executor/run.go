package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/internal/streams"
	"github.com/nats-io/nats.go/jetstream"
)

// fetchWait bounds one pull request.
const fetchWait = 5 * time.Second

// publishTimeout bounds the wait for the stream to store one outcome.
const publishTimeout = 30 * time.Second

var (
	errShutdown = errors.New("the executor is shutting down")
	errTimeout  = errors.New("the attempt timed out")
)

// PermanentError marks an error that no retry can fix.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err so that the job fails for good without further
// attempts.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// Run consumes work until ctx ends, then waits up to DrainTimeout for the
// running jobs. Jobs still running after that are cancelled and their
// messages put back for redelivery, so no work is lost; Run returns at most
// abandonGrace later.
func (e *Executor) Run(ctx context.Context) error {
	e.mu.Lock()
	if e.running {
		e.mu.Unlock()
		return errors.New("executor: Run called twice")
	}
	e.running = true
	e.mu.Unlock()

	if err := streams.Ensure(ctx, e.js, e.cfg.Streams); err != nil {
		return fmt.Errorf("executor: %w", err)
	}
	cons, err := e.consumer(ctx)
	if err != nil {
		return err
	}
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	ready, err := e.watchCancelled(watchCtx)
	if err != nil {
		return fmt.Errorf("executor: watch bucket %s: %w", events.CancelledBucket, err)
	}
	select {
	case <-ready:
	case <-ctx.Done():
		return nil
	}

	jobsCtx, cancelJobs := context.WithCancelCause(context.Background())
	defer cancelJobs(nil)
	var wg sync.WaitGroup
	slots := make(chan struct{}, e.cfg.Concurrency)
	e.log.Info("executor started", "queue", e.cfg.Queue, "work", e.workName(), "concurrency", e.cfg.Concurrency, "handlers", len(e.handlers))

	for ctx.Err() == nil {
		n := e.acquire(ctx, slots)
		if n == 0 {
			break
		}
		fetchCtx, cancelFetch := context.WithTimeout(ctx, fetchWait)
		batch, err := cons.Fetch(n, jetstream.FetchContext(fetchCtx))
		if err != nil {
			cancelFetch()
			release(slots, n)
			if ctx.Err() == nil {
				e.log.Warn("fetch work", "queue", e.cfg.Queue, "error", err)
				sleep(ctx, time.Second)
				cons = e.recreateConsumer(ctx, cons, err)
			}
			continue
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			f := e.track(msg)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer release(slots, 1)
				defer e.untrack(f)
				e.process(jobsCtx, f)
			}()
		}
		cancelFetch()
		release(slots, n-got)
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) && ctx.Err() == nil {
			e.log.Warn("fetch work", "queue", e.cfg.Queue, "error", err)
		}
	}

	e.drain(&wg, cancelJobs)
	e.log.Info("executor stopped", "queue", e.cfg.Queue, "work", e.workName())
	return nil
}

// abandonGrace is how long Run waits, after cancelling the running jobs,
// for handlers that ignore their context before it gives up on them.
const abandonGrace = 5 * time.Second

// drain waits up to DrainTimeout for the running jobs, then cancels them
// and waits abandonGrace more. Jobs whose handlers still run then are put
// back for redelivery, and whatever those handlers return later is dropped.
func (e *Executor) drain(wg *sync.WaitGroup, cancelJobs context.CancelCauseFunc) {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return
	case <-time.After(e.cfg.DrainTimeout):
	}
	e.log.Warn("jobs still running after the drain timeout; cancelling them for redelivery", "queue", e.cfg.Queue, "drain_timeout", e.cfg.DrainTimeout)
	cancelJobs(errShutdown)
	select {
	case <-done:
		return
	case <-time.After(abandonGrace):
	}
	n := e.abandonAll()
	e.log.Error("handlers ignored the cancellation of their context; their jobs are left for redelivery and their outcomes will be dropped", "queue", e.cfg.Queue, "jobs", n)
}

func (e *Executor) workName() string {
	if e.cfg.Work == Compensations {
		return "compensations"
	}
	return "jobs"
}

// acquire waits for one free slot and takes every other free one, so that a
// fetch never requests more messages than can run at once. It returns 0
// when ctx ends first.
func (e *Executor) acquire(ctx context.Context, slots chan struct{}) int {
	select {
	case slots <- struct{}{}:
	case <-ctx.Done():
		return 0
	}
	n := 1
	for n < cap(slots) {
		select {
		case slots <- struct{}{}:
			n++
		default:
			return n
		}
	}
	return n
}

func release(slots chan struct{}, n int) {
	for range n {
		<-slots
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// recreateConsumer creates the consumer again when err says that it is
// gone, for example after an operator deleted it, and otherwise returns
// cons.
func (e *Executor) recreateConsumer(ctx context.Context, cons jetstream.Consumer, err error) jetstream.Consumer {
	if !errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, jetstream.ErrConsumerDeleted) {
		return cons
	}
	fresh, cerr := e.consumer(ctx)
	if cerr != nil {
		e.log.Error("create the work consumer again", "queue", e.cfg.Queue, "error", cerr)
		return cons
	}
	e.log.Info("work consumer created again", "queue", e.cfg.Queue)
	return fresh
}

func (e *Executor) consumer(ctx context.Context) (jetstream.Consumer, error) {
	name, filter := events.WorkConsumer(e.cfg.Queue), events.WorkFilter(e.cfg.Queue)
	if e.cfg.Work == Compensations {
		name, filter = events.CompensationConsumer(e.cfg.Queue), events.CompensationFilter(e.cfg.Queue)
	}
	cons, err := e.js.CreateOrUpdateConsumer(ctx, events.WorkStream, jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "batchq " + e.workName() + " of queue " + e.cfg.Queue,
		FilterSubject: filter,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       e.cfg.AckWait,
		// One more than MaxDeliver, for the delivery of a retry that
		// arrives before its not_before time and waits.
		MaxDeliver:    e.cfg.MaxDeliver + 1,
		MaxAckPending: -1,
	})
	if err != nil {
		return nil, fmt.Errorf("executor: create consumer %s: %w", name, err)
	}
	return cons, nil
}

// inflight is a work message that an executor goroutine is running.
type inflight struct {
	msg jetstream.Msg
	// abandoned is set when Run stopped waiting for the handler; the
	// message was put back and the handler's outcome must be dropped.
	abandoned atomic.Bool
}

func (e *Executor) track(msg jetstream.Msg) *inflight {
	f := &inflight{msg: msg}
	e.inflightMu.Lock()
	e.inflight[f] = struct{}{}
	e.inflightMu.Unlock()
	return f
}

func (e *Executor) untrack(f *inflight) {
	e.inflightMu.Lock()
	delete(e.inflight, f)
	e.inflightMu.Unlock()
}

// abandonAll puts back every message still running and returns how many.
func (e *Executor) abandonAll() int {
	e.inflightMu.Lock()
	defer e.inflightMu.Unlock()
	n := 0
	for f := range e.inflight {
		if !f.abandoned.Swap(true) {
			_ = f.msg.Nak()
			n++
		}
	}
	return n
}

// process runs one work message to an outcome.
func (e *Executor) process(jobsCtx context.Context, f *inflight) {
	msg := f.msg
	deliveries := 1
	if meta, err := msg.Metadata(); err == nil {
		deliveries = int(meta.NumDelivered)
	}
	w, err := decodeWork(e.cfg.Work, msg.Subject(), msg.Data(), deliveries)
	if err != nil {
		e.rejectWork(msg, err)
		return
	}
	log := e.log.With("batch_id", w.batchID(), "job_id", w.jobID(), "name", w.name(), "attempt", w.attempt())
	e.metrics.redelivery(deliveries)

	if nb := w.notBefore(); nb != nil {
		if wait := time.Until(*nb); wait > 0 {
			_ = msg.NakWithDelay(wait)
			return
		}
	}
	if w.kind == Jobs && e.cancelled.has(w.batchID()) {
		e.metrics.outcome("skipped")
		e.finish(msg, w, log, e.skipped(w, "batch cancelled before the job started"))
		return
	}
	if deliveries >= e.deliveryLimit(w) {
		err := fmt.Errorf("the work message was delivered %d times without an outcome; executors crashed or stalled while running it", deliveries)
		log.Error("job failed: delivery limit reached", "deliveries", deliveries)
		e.metrics.outcome("failed")
		e.finish(msg, w, log, e.failed(w, err, events.ReasonDeliveryLimit))
		return
	}

	h, known := e.handler(w.name())
	maxAttempts := w.maxAttempts(e.cfg.MaxAttempts)
	var (
		job     = newJob(e, w)
		reason  string
		runErr  error
		started = time.Now()
	)
	if !known {
		runErr = fmt.Errorf("no handler for job %q on queue %q; register one with Executor.Handle(%q, ...)", w.name(), e.cfg.Queue, w.name())
		reason = events.ReasonUnknownJob
		maxAttempts = min(maxAttempts, e.cfg.UnknownJobAttempts)
	} else {
		var cause error
		done := e.metrics.start()
		runErr, cause = e.runHandler(jobsCtx, msg, w, job, h)
		done()
		if f.abandoned.Load() {
			log.Warn("handler returned after its job was left for redelivery; its outcome is dropped", "error", runErr)
			return
		}
		switch {
		case runErr == nil:
			// The handler finished its work, whatever was cancelled
			// meanwhile, so the attempt completes.
		case errors.Is(cause, errShutdown):
			log.Info("job interrupted by shutdown, left for redelivery")
			e.metrics.outcome("interrupted")
			_ = msg.Nak()
			return
		case errors.Is(cause, errBatchCancelled):
			e.metrics.outcome("failed")
			e.finish(msg, w, log, e.failed(w, fmt.Errorf("cancelled with its batch: %w", runErr), events.ReasonCancelled))
			return
		case errors.Is(cause, errTimeout):
			reason = events.ReasonTimeout
			runErr = fmt.Errorf("timed out after %s: %w", w.timeout(e.cfg.Timeout), runErr)
		case errors.As(runErr, new(*panicError)):
			reason = events.ReasonPanic
		default:
			reason = events.ReasonError
		}
	}
	duration := time.Since(started)

	if runErr == nil {
		e.metrics.outcome("completed")
		e.finish(msg, w, log, e.completed(w, job, duration))
		return
	}
	var permanent *PermanentError
	if w.attempt() >= maxAttempts || errors.As(runErr, &permanent) {
		log.Warn("job failed for good", "reason", reason, "error", runErr)
		e.metrics.outcome("failed")
		e.finish(msg, w, log, e.failed(w, runErr, reason))
		return
	}
	log.Info("job attempt failed, retrying", "reason", reason, "error", runErr)
	e.metrics.outcome("retried")
	e.finish(msg, w, log, e.retry(w, runErr, reason))
}

// rejectWork terminates a work message that cannot be decoded. When its
// envelope names the batch, job and attempt, the job fails with the reason,
// so that its batch still settles; otherwise only the log shows it.
func (e *Executor) rejectWork(msg jetstream.Msg, decodeErr error) {
	log := e.log.With("subject", msg.Subject())
	env, err := events.Decode(msg.Data())
	attempt, convErr := strconv.Atoi(extension(msg.Data(), events.ExtAttempt))
	if err != nil || env.BatchID == "" || env.JobID == "" || env.Queue == "" || convErr != nil || attempt < 1 {
		log.Error("invalid work message terminated; its job gets no outcome", "error", decodeErr)
		_ = msg.TermWithReason("invalid work message: " + decodeErr.Error())
		return
	}
	log = log.With("batch_id", env.BatchID, "job_id", env.JobID, "attempt", attempt)
	log.Error("invalid work message, failing its job", "error", decodeErr)
	w := &work{kind: e.cfg.Work, subject: msg.Subject()}
	if w.kind == Compensations {
		w.comp = events.CompensationQueued{BatchID: env.BatchID, JobID: env.JobID, Queue: env.Queue, Attempt: attempt}
	} else {
		w.job = events.JobQueued{BatchID: env.BatchID, JobID: env.JobID, Queue: env.Queue, Attempt: attempt, Role: events.RoleJob}
		if strings.HasPrefix(env.JobID, "on_") {
			w.job.Role = events.RoleCallback
		}
	}
	e.metrics.outcome("failed")
	e.finish(msg, w, log, e.failed(w, fmt.Errorf("invalid work message: %w", decodeErr), events.ReasonInvalidMessage))
}

// extension reads one CloudEvents extension attribute of a structured
// event as text, or "" when it is missing.
func extension(data []byte, name string) string {
	var attrs map[string]json.RawMessage
	if json.Unmarshal(data, &attrs) != nil {
		return ""
	}
	raw := attrs[name]
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

// deliveryLimit is the delivery at which a message counts as abandoned:
// MaxDeliver, plus one for a retry whose first delivery may have waited out
// its not_before time instead of running.
func (e *Executor) deliveryLimit(w *work) int {
	if w.notBefore() != nil {
		return e.cfg.MaxDeliver + 1
	}
	return e.cfg.MaxDeliver
}

// panicError is a recovered panic with its stack.
type panicError struct {
	value any
	stack string
}

func (e *panicError) Error() string {
	return fmt.Sprintf("panic: %v\n%s", e.value, e.stack)
}

// runHandler runs h with the attempt's timeout, sends progress while it
// runs, and turns a panic into an error. It returns the handler's error and
// the cause that cancelled its context, if any.
func (e *Executor) runHandler(jobsCtx context.Context, msg jetstream.Msg, w *work, job *Job, h Handler) (err error, cause error) {
	ctx, cancel := context.WithCancelCause(jobsCtx)
	defer cancel(nil)
	ctx, cancelTimeout := context.WithTimeoutCause(ctx, w.timeout(e.cfg.Timeout), errTimeout)
	defer cancelTimeout()
	if w.kind == Jobs {
		if !e.cancelled.track(w.batchID(), job, cancel) {
			cancel(errBatchCancelled)
		}
		defer e.cancelled.untrack(w.batchID(), job)
	}

	stopProgress := make(chan struct{})
	var progress sync.WaitGroup
	progress.Add(1)
	go func() {
		defer progress.Done()
		ticker := time.NewTicker(e.cfg.AckWait / 3)
		defer ticker.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-ticker.C:
				if err := msg.InProgress(); err != nil {
					e.log.Warn("send progress for running job", "batch_id", w.batchID(), "job_id", w.jobID(), "error", err)
				}
			}
		}
	}()
	defer func() {
		close(stopProgress)
		progress.Wait()
	}()

	func() {
		defer func() {
			if v := recover(); v != nil {
				err = &panicError{value: v, stack: trimStack(debug.Stack())}
			}
		}()
		err = h(ctx, job)
	}()
	return err, context.Cause(ctx)
}

// trimStack keeps the first lines of a stack trace, enough to find the
// handler, so a panic's error stays small.
func trimStack(stack []byte) string {
	lines := strings.SplitN(string(stack), "\n", 24)
	if len(lines) > 23 {
		lines = lines[:23]
	}
	return strings.Join(lines, "\n")
}

// backoff returns the delay before the attempt after attempt: MinBackoff
// doubled per attempt, capped at MaxBackoff, with up to 20% jitter so that
// jobs that failed together do not retry together.
func (e *Executor) backoff(attempt int) time.Duration {
	d := e.cfg.MinBackoff
	for i := 1; i < attempt && d < e.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, e.cfg.MaxBackoff)
	jitter := time.Duration(rand.Int64N(int64(d)/5 + 1))
	return d - jitter
}
