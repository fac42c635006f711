package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/store"
)

// applier applies events to the batches of one store transaction. Every
// method is safe to run again after a conflict: it reads the state it
// changes and leaves alone what an earlier run already changed.
type applier struct {
	c   *Coordinator
	ctx context.Context
	tx  store.Tx
	now time.Time
	// dispatch collects parallel batches with work to publish after the
	// commit.
	dispatch map[string]bool
	// direct collects messages about batches that are not stored, which
	// have no outbox; they are published after the commit.
	direct []events.Message
}

func (c *Coordinator) newApplier(ctx context.Context, tx store.Tx) *applier {
	return &applier{c: c, ctx: ctx, tx: tx, now: time.Now().UTC(), dispatch: map[string]bool{}}
}

// apply applies one event. It returns an error only when the store failed;
// events that cannot be applied get a verdict instead.
func (a *applier) apply(o *op) error {
	switch d := o.data.(type) {
	case *events.BatchSubmitted:
		return a.submitted(o, d)
	case *events.JobCompleted:
		return a.jobCompleted(o, d)
	case *events.JobFailed:
		return a.jobFailed(o, d)
	case *events.JobRetrying:
		return a.jobRetrying(o, d)
	case *events.JobSkipped:
		return a.jobSkipped(o, d)
	case *events.JobsAdded:
		return a.jobsAdded(o, d)
	case *events.CompensationOutcome:
		return a.compensationOutcome(o, d)
	}
	o.setReject(fmt.Sprintf("type %s is not an input of the coordinator", o.env.Type))
	return nil
}

// batch returns the batch of an op. A missing batch is not an error of the
// store: the event is acknowledged and logged, since its batch was pruned or
// never submitted.
func (a *applier) batch(o *op) (*store.Batch, error) {
	b, err := a.tx.Batch(o.batchID)
	if errors.Is(err, store.ErrNotFound) {
		a.c.log.Warn("event for an unknown batch ignored", "type", o.env.Type, "batch_id", o.batchID)
		return nil, nil
	}
	return b, err
}

// job returns one job or callback of b, or nil with the op rejected when b
// has no such job.
func (a *applier) job(o *op, b *store.Batch, jobID string) (*store.Job, error) {
	jobs, err := a.tx.Jobs(a.ctx, b.ID, []string{jobID})
	if err != nil {
		return nil, err
	}
	j, ok := jobs[jobID]
	if !ok {
		o.setReject(fmt.Sprintf("batch %s has no job %q", b.ID, jobID))
		return nil, nil
	}
	return j, nil
}

func (a *applier) submitted(o *op, d *events.BatchSubmitted) error {
	if _, err := a.tx.Batch(d.BatchID); err == nil {
		return nil // stored by an earlier delivery
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	want := d.Chunks
	if len(d.Jobs) > 0 {
		want++
	}
	staged, err := a.tx.StagedChunks(a.ctx, d.BatchID)
	if err != nil {
		return err
	}
	if staged < want {
		o.setRetry(fmt.Sprintf("%d of %d job chunks are stored", staged, want))
		return nil
	}
	if staged > want {
		o.setReject(fmt.Sprintf("batch %s declares %d job chunks but %d are stored", d.BatchID, want, staged))
		return nil
	}
	b := &store.Batch{
		ID:        d.BatchID,
		Type:      d.Type,
		Status:    events.StatusRunning,
		QueueName: d.QueueName,
		Queue:     d.Queue,
		Context:   d.Context,
		Options:   d.Options,
		Total:     d.Total,
		CreatedAt: a.now,
	}
	if b.QueueName == "" {
		b.QueueName = b.Queue
	}
	err = a.tx.CreateBatch(a.ctx, b)
	switch {
	case errors.Is(err, store.ErrInvalidJobs):
		o.setReject(err.Error())
		return nil
	case errors.Is(err, store.ErrExists):
		return nil
	case err != nil:
		return err
	}
	b, err = a.tx.Batch(d.BatchID)
	if err != nil {
		return err
	}
	if err := a.emitLifecycle(b, events.TypeBatchStarted); err != nil {
		return err
	}
	switch {
	case b.Total == 0:
		// A batch without jobs has nothing to wait for: it completes at
		// once and runs its completion callback.
		if err := a.finish(b, events.StatusCompleted); err != nil {
			return err
		}
	case b.Type == events.Chain:
		if err := a.startStep(b, 0); err != nil {
			return err
		}
	default:
		a.dispatch[b.ID] = true
	}
	a.tx.SaveBatch(b)
	return nil
}

// jsonObject reports whether raw is empty, JSON null or a JSON object: the
// forms a chain step may leave as its context.
func jsonObject(raw json.RawMessage) bool {
	trimmed := bytes.TrimSpace(raw)
	return len(trimmed) == 0 || trimmed[0] == '{' || bytes.Equal(trimmed, []byte("null"))
}

// nextContext returns the context a chain step leaves: the one it reported,
// with JSON null meaning an empty context, or the stored one when it
// reported none.
func nextContext(stored, reported json.RawMessage) json.RawMessage {
	switch {
	case reported == nil:
		return stored
	case bytes.Equal(bytes.TrimSpace(reported), []byte("null")):
		return nil
	}
	return reported
}

// openJob returns the batch and job that an outcome of attempt is about,
// or a nil job when the outcome changes nothing: its batch is unknown, it is
// stale, or it was rejected.
func (a *applier) openJob(o *op, jobID string, attempt int) (*store.Batch, *store.Job, error) {
	b, err := a.batch(o)
	if b == nil || err != nil {
		return nil, nil, err
	}
	j, err := a.job(o, b, jobID)
	if j == nil || err != nil {
		return nil, nil, err
	}
	if stale(j, attempt) || unstarted(o, b, j) {
		return nil, nil, nil
	}
	return b, j, nil
}

// stale reports whether an outcome of attempt for job j changes nothing:
// the job has finished, or a later attempt has already reported.
func stale(j *store.Job, attempt int) bool {
	return j.Status.Final() || attempt < j.Attempt
}

// unstarted reports, and rejects o for, an outcome of a chain step whose
// work was never published: no executor can have run it, and applying it
// would let the chain skip a step.
func unstarted(o *op, b *store.Batch, j *store.Job) bool {
	if b.Type != events.Chain || j.Role != events.RoleJob || j.Status != events.JobStatusPending {
		return false
	}
	o.setReject(fmt.Sprintf("step %s of chain %s has not started, so it cannot have an outcome", j.ID, b.ID))
	return true
}

func (a *applier) jobCompleted(o *op, d *events.JobCompleted) error {
	b, j, err := a.openJob(o, d.JobID, d.Attempt)
	if j == nil || err != nil {
		return err
	}
	if b.Type == events.Chain && j.Role == events.RoleJob && !jsonObject(d.Context) {
		// The next step could not read such a context, so the step fails.
		msg := fmt.Sprintf("the step left a context that is not a JSON object (%.40s); a context must be an object", d.Context)
		if err := a.failJobHere(b, j, d.Attempt, msg, events.ReasonInvalidMessage); err != nil {
			return err
		}
		a.tx.SaveBatch(b)
		return nil
	}
	if d.Added > 0 {
		ids := make([]string, d.Added)
		for i := range ids {
			ids[i] = events.AddID(d.JobID, i)
		}
		adds, err := a.tx.Additions(a.ctx, b.ID, ids)
		if err != nil {
			return err
		}
		if len(adds) < d.Added {
			o.setRetry(fmt.Sprintf("job %s added jobs %d times and %d of them are stored", d.JobID, d.Added, len(adds)))
			return nil
		}
	}
	j.Status = events.JobStatusCompleted
	j.Attempt = d.Attempt
	j.Result = d.Result
	j.Error = ""
	j.FinishedAt = &a.now
	a.tx.SaveJob(j)
	if j.Role == events.RoleCallback {
		return nil
	}

	countFinal(b, j, &b.Completed)
	if b.Status == events.StatusRunning {
		if b.Type == events.Chain {
			b.Context = nextContext(b.Context, d.Context)
			if err := a.nextStep(b, j); err != nil {
				return err
			}
		} else if err := a.maybeFinishParallel(b); err != nil {
			return err
		}
	} else if err := a.advanceCompensation(b); err != nil {
		return err
	}
	a.tx.SaveBatch(b)
	return nil
}

// nextStep starts the step after j, or completes the chain after its last
// step.
func (a *applier) nextStep(b *store.Batch, j *store.Job) error {
	if j.Position != b.Current {
		a.c.log.Warn("chain step completed out of turn", "batch_id", b.ID, "job_id", j.ID, "current", b.Current)
		return nil
	}
	if next := j.Position + 1; next < b.Total {
		return a.startStep(b, next)
	}
	return a.finish(b, events.StatusCompleted)
}

func (a *applier) jobFailed(o *op, d *events.JobFailed) error {
	b, j, err := a.openJob(o, d.JobID, d.Attempt)
	if j == nil || err != nil {
		return err
	}
	if err := a.failJob(b, j, d.Attempt, d.Error); err != nil {
		return err
	}
	if j.Role != events.RoleCallback {
		a.tx.SaveBatch(b)
	}
	return nil
}

// failJob records that j failed for good and applies the batch's failure
// policy. The caller saves b.
func (a *applier) failJob(b *store.Batch, j *store.Job, attempt int, msg string) error {
	j.Status = events.JobStatusFailed
	j.Attempt = attempt
	j.Error = msg
	j.FinishedAt = &a.now
	a.tx.SaveJob(j)
	if j.Role == events.RoleCallback {
		a.c.log.Error("callback failed", "batch_id", b.ID, "job_id", j.ID, "name", j.Name, "error", msg)
		return nil
	}

	countFinal(b, j, &b.Failed)
	if err := a.queueJobFailureCallback(b, j); err != nil {
		return err
	}
	failure := fmt.Sprintf("job %s (%s) failed: %s", j.ID, j.Name, msg)
	if b.Type == events.Parallel && !b.Cancelled && store.Compensable(j) {
		if _, err := a.queueCompensation(b, j, failure); err != nil {
			return err
		}
	}
	if b.Status != events.StatusRunning {
		return a.advanceCompensation(b)
	}
	if b.Type == events.Parallel && b.Options.AllowFailures {
		return a.maybeFinishParallel(b)
	}
	b.Error = failure
	if b.Type == events.Chain {
		b.Skipped += b.Total - j.Position - 1
	} else {
		b.Skipped += b.Total - b.Dispatching // never published: the dispatcher stops here
	}
	return a.startCompensating(b)
}

// failJobHere fails a job for a reason the coordinator found itself, and
// emits the job.failed event an executor would have sent, so that taps see
// every failure. The coordinator reads that event back as a duplicate.
func (a *applier) failJobHere(b *store.Batch, j *store.Job, attempt int, msg, reason string) error {
	if err := a.failJob(b, j, attempt, msg); err != nil {
		return err
	}
	ev, err := a.c.enc.Encode(events.TypeJobFailed, events.EventSubject(b.Queue, b.ID, events.TypeJobFailed),
		events.JobMsgID(b.ID, j.ID, events.TypeJobFailed, attempt), events.Route{BatchID: b.ID, JobID: j.ID, Queue: b.Queue, Attempt: attempt},
		events.JobFailed{BatchID: b.ID, JobID: j.ID, Role: j.Role, Attempt: attempt, Error: msg, Reason: reason})
	if err != nil {
		return err
	}
	a.tx.Emit(b.ID, ev)
	return nil
}

func (a *applier) jobRetrying(o *op, d *events.JobRetrying) error {
	_, j, err := a.openJob(o, d.JobID, d.Attempt)
	if j == nil || err != nil {
		return err
	}
	j.Status = events.JobStatusRetrying
	j.Attempt = d.Attempt
	j.Error = d.Error
	a.tx.SaveJob(j)
	return nil
}

func (a *applier) jobSkipped(o *op, d *events.JobSkipped) error {
	b, j, err := a.openJob(o, d.JobID, d.Attempt)
	if j == nil || err != nil {
		return err
	}
	j.Status = events.JobStatusSkipped
	j.Attempt = d.Attempt
	j.Error = d.Reason
	j.FinishedAt = &a.now
	a.tx.SaveJob(j)
	if j.Role == events.RoleCallback {
		return nil
	}
	if b.Status == events.StatusRunning {
		// Executors skip only the jobs of cancelled batches. A skip in a
		// running batch means the job did not do its work, which fails it,
		// so the batch still settles.
		if err := a.failJob(b, j, d.Attempt, "the executor skipped the job: "+d.Reason); err != nil {
			return err
		}
		a.tx.SaveBatch(b)
		return nil
	}
	countFinal(b, j, &b.Skipped)
	if err := a.advanceCompensation(b); err != nil {
		return err
	}
	a.tx.SaveBatch(b)
	return nil
}

// countFinal counts a job's final outcome in counter. A parallel batch that
// stops running, because it failed or was cancelled, counts the jobs from
// its Dispatching mark on as skipped at once. Dispatchers never publish
// those, but should an outcome for one arrive all the same, it replaces the
// skip, so the counters never exceed the total.
func countFinal(b *store.Batch, j *store.Job, counter *int) {
	if b.Type == events.Parallel && b.Status != events.StatusRunning && j.Position >= b.Dispatching && b.Skipped > 0 {
		b.Skipped--
	}
	*counter++
}

// maybeFinishParallel completes a running parallel batch once every job has
// finished and no compensation is open.
func (a *applier) maybeFinishParallel(b *store.Batch) error {
	if b.Completed+b.Failed+b.Skipped < b.Total || openCompensations(b) > 0 {
		return nil
	}
	return a.finish(b, events.StatusCompleted)
}

// startStep queues the chain step at position.
func (a *applier) startStep(b *store.Batch, position int) error {
	j, err := a.tx.JobAt(a.ctx, b.ID, position)
	if err != nil {
		return fmt.Errorf("chain %s step %d: %w", b.ID, position, err)
	}
	b.Current = position
	msg, err := a.c.workMessage(b, j, 1, nil)
	if err != nil {
		var tooLarge *tooLargeError
		if errors.As(err, &tooLarge) {
			return a.failJobHere(b, j, 1, tooLarge.Error(), events.ReasonContextTooLarge)
		}
		return err
	}
	j.Status = events.JobStatusQueued
	a.tx.SaveJob(j)
	a.tx.Emit(b.ID, msg)
	return nil
}

// finish settles b with a final status, queues its callbacks and emits its
// lifecycle event. It is called once per batch, because every caller checks
// that b is not final.
func (a *applier) finish(b *store.Batch, status events.BatchStatus) error {
	b.Status = status
	b.FinishedAt = &a.now
	switch status {
	case events.StatusCompleted:
		if err := a.queueCallback(b, events.OnComplete, b.Options.OnComplete); err != nil {
			return err
		}
		if b.Failed > 0 {
			if err := a.queueCallback(b, events.OnFailure, b.Options.OnFailure); err != nil {
				return err
			}
		}
		return a.emitLifecycle(b, events.TypeBatchCompleted)
	case events.StatusFailed:
		if err := a.queueCallback(b, events.OnFailure, b.Options.OnFailure); err != nil {
			return err
		}
		return a.emitLifecycle(b, events.TypeBatchFailed)
	case events.StatusCancelled:
		return a.emitLifecycle(b, events.TypeBatchCancelled)
	}
	return fmt.Errorf("finish batch %s with status %q", b.ID, status)
}

// queueCallback stores and queues one callback of b, once.
func (a *applier) queueCallback(b *store.Batch, kind events.CallbackKind, ref *events.JobRef) error {
	if ref == nil {
		return nil
	}
	info := &events.CallbackInfo{
		Kind: kind, Status: b.Status, Error: b.Error,
		Total: b.Total, Completed: b.Completed, Failed: b.Failed,
	}
	return a.insertCallback(b, events.CallbackJobID(kind, ""), ref, info)
}

func (a *applier) queueJobFailureCallback(b *store.Batch, failed *store.Job) error {
	ref := b.Options.OnJobFailure
	if ref == nil {
		return nil
	}
	info := &events.CallbackInfo{
		Kind: events.OnJobFailure, Status: b.Status, Error: failed.Error,
		Total: b.Total, Completed: b.Completed, Failed: b.Failed,
		FailedJob: &events.FailedJob{JobID: failed.ID, Position: failed.Position, Name: failed.Name, Error: failed.Error},
	}
	return a.insertCallback(b, events.CallbackJobID(events.OnJobFailure, failed.ID), ref, info)
}

func (a *applier) insertCallback(b *store.Batch, id string, ref *events.JobRef, info *events.CallbackInfo) error {
	cb := &store.Job{
		BatchID:  b.ID,
		ID:       id,
		Position: -1,
		Role:     events.RoleCallback,
		Name:     ref.Name,
		Args:     ref.Args,
		Status:   events.JobStatusQueued,
	}
	msg, err := a.c.workMessage(b, cb, 1, info)
	if err != nil {
		var tooLarge *tooLargeError
		if !errors.As(err, &tooLarge) {
			return err
		}
		cb.Status = events.JobStatusFailed
		cb.Error = tooLarge.Error()
		a.c.log.Error("callback not queued", "batch_id", b.ID, "job_id", id, "error", cb.Error)
	}
	err = a.tx.InsertJobs(a.ctx, b.ID, []*store.Job{cb})
	if errors.Is(err, store.ErrExists) {
		return nil
	}
	if err != nil {
		return err
	}
	if cb.Status == events.JobStatusQueued {
		a.tx.Emit(b.ID, msg)
	}
	return nil
}

func (a *applier) emitLifecycle(b *store.Batch, t events.Type) error {
	msg, err := a.c.lifecycleMessage(b, t)
	if err != nil {
		return err
	}
	a.tx.Emit(b.ID, msg)
	return nil
}

// positionID returns the job id of a position.
func positionID(p int) string { return strconv.Itoa(p) }
