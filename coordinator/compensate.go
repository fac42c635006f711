package coordinator

import (
	"errors"
	"fmt"

	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/store"
)

// Compensation runs in two ways:
//
//   - A parallel job that fails for good gets its own compensation queued at
//     once, while its siblings go on.
//   - After a chain step fails for good, or once a cancelled batch has no
//     job left in flight, a walk queues the compensations of every job that
//     took effect (the failed step's own first), one at a time, from the
//     highest position down.
//
// The batch shows status compensating while either kind is open, and
// settles as failed (or cancelled) when both are done; the failure callback
// runs only then.

func openCompensations(b *store.Batch) int {
	return b.CompensationTotal - b.CompensationCompleted - b.CompensationFailed
}

// drained reports whether every job of b has reported a final outcome.
func drained(b *store.Batch) bool {
	return b.Completed+b.Failed+b.Skipped >= b.Total
}

// walkNeeded reports whether b undoes its jobs with a reverse walk.
func walkNeeded(b *store.Batch) bool {
	return b.Cancelled || b.Type == events.Chain
}

// startCompensating moves a running batch that failed or was cancelled to
// compensating, or settles it at once when there is nothing to undo.
func (a *applier) startCompensating(b *store.Batch) error {
	b.Status = events.StatusCompensating
	if err := a.advanceCompensation(b); err != nil {
		return err
	}
	if b.Status == events.StatusCompensating {
		return a.emitLifecycle(b, events.TypeBatchCompensating)
	}
	return nil
}

// advanceCompensation starts the walk once it may start and settles the
// batch once nothing is left to undo. It changes only compensating batches.
func (a *applier) advanceCompensation(b *store.Batch) error {
	if b.Status != events.StatusCompensating {
		return nil
	}
	if walkNeeded(b) && b.Walk == store.WalkNone {
		if !drained(b) {
			return nil // a cancelled batch waits for the jobs still in flight
		}
		if err := a.walkFrom(b, b.Total); err != nil {
			return err
		}
	}
	if b.Walk == store.WalkRunning || openCompensations(b) > 0 {
		return nil
	}
	if b.Cancelled {
		return a.finish(b, events.StatusCancelled)
	}
	return a.finish(b, events.StatusFailed)
}

// walkFrom queues the compensation of the highest compensable job below
// position before, or ends the walk when there is none. A compensation that
// fails at once, because its work would not fit in a message, does not stop
// the walk: it goes on below that job.
func (a *applier) walkFrom(b *store.Batch, before int) error {
	for {
		j, err := a.tx.PrevCompensable(a.ctx, b.ID, before)
		if errors.Is(err, store.ErrNotFound) {
			b.Walk = store.WalkDone
			return nil
		}
		if err != nil {
			return err
		}
		queued, err := a.queueCompensation(b, j, b.Error)
		if err != nil {
			return err
		}
		if queued {
			b.Walk = store.WalkRunning
			b.WalkPosition = j.Position
			return nil
		}
		before = j.Position
	}
}

// queueCompensation stores that j's compensation is queued and emits its
// work message; trigger is the error that made it necessary. It reports
// false when the compensation failed at once instead, because its work
// message would exceed the size limit.
func (a *applier) queueCompensation(b *store.Batch, j *store.Job, trigger string) (bool, error) {
	msg, err := a.c.compensationMessage(b, j, 1, trigger)
	if err != nil {
		var tooLarge *tooLargeError
		if !errors.As(err, &tooLarge) {
			return false, err
		}
		a.c.log.Error("compensation not queued", "batch_id", b.ID, "job_id", j.ID, "error", tooLarge.Error())
		j.CompensationStatus = events.CompensationStatusFailed
		j.CompensationError = tooLarge.Error()
		a.tx.SaveJob(j)
		b.CompensationTotal++
		b.CompensationFailed++
		return false, nil
	}
	j.CompensationStatus = events.CompensationStatusQueued
	j.CompensationAttempt = 1
	a.tx.SaveJob(j)
	b.CompensationTotal++
	a.tx.Emit(b.ID, msg)
	return true, nil
}

func (a *applier) compensationOutcome(o *op, d *events.CompensationOutcome) error {
	b, err := a.batch(o)
	if b == nil || err != nil {
		return err
	}
	j, err := a.job(o, b, d.JobID)
	if j == nil || err != nil {
		return err
	}
	if j.CompensationStatus == events.CompensationStatusNone {
		o.setReject(fmt.Sprintf("job %s of batch %s has no queued compensation", j.ID, b.ID))
		return nil
	}
	if j.CompensationStatus.Final() || d.Attempt < j.CompensationAttempt {
		return nil
	}
	j.CompensationAttempt = d.Attempt
	switch o.env.Type {
	case events.TypeCompensationRetrying:
		j.CompensationStatus = events.CompensationStatusRetrying
		j.CompensationError = d.Error
		a.tx.SaveJob(j)
		return nil
	case events.TypeCompensationCompleted:
		j.CompensationStatus = events.CompensationStatusCompleted
		j.CompensationError = ""
		b.CompensationCompleted++
	default:
		j.CompensationStatus = events.CompensationStatusFailed
		j.CompensationError = d.Error
		b.CompensationFailed++
		a.c.log.Error("compensation failed for good", "batch_id", b.ID, "job_id", j.ID, "name", j.Compensation.Name, "error", d.Error)
	}
	a.tx.SaveJob(j)

	if b.Walk == store.WalkRunning && b.WalkPosition == j.Position {
		if err := a.walkFrom(b, j.Position); err != nil {
			return err
		}
	}
	if b.Status == events.StatusRunning {
		if err := a.maybeFinishParallel(b); err != nil {
			return err
		}
	} else if err := a.advanceCompensation(b); err != nil {
		return err
	}
	a.tx.SaveBatch(b)
	return nil
}

// cancelError is the answer to a cancel request that cannot be applied.
type cancelError struct {
	code, message string
}

func (e *cancelError) Error() string { return e.message }

// cancel marks a running batch cancelled: its unstarted jobs are skipped
// and the compensations of its completed jobs run once no job is in flight.
func (a *applier) cancel(batchID, reason string) (*store.Batch, error) {
	b, err := a.tx.Batch(batchID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, &cancelError{events.CodeNotFound, fmt.Sprintf("batch %s not found", batchID)}
	}
	if err != nil {
		return nil, err
	}
	if b.Status != events.StatusRunning {
		return nil, &cancelError{events.CodeFinished, fmt.Sprintf("batch %s is %s and can no longer be cancelled", batchID, b.Status)}
	}
	b.Cancelled = true
	b.Error = "cancelled"
	if reason != "" {
		b.Error = "cancelled: " + reason
	}
	if b.Type == events.Chain {
		b.Skipped += b.Total - b.Current - 1
	} else {
		b.Skipped += b.Total - b.Dispatching
	}
	a.tx.Emit(b.ID, a.c.cancelledMarker(b, reason))
	if err := a.startCompensating(b); err != nil {
		return nil, err
	}
	a.tx.SaveBatch(b)
	return b, nil
}
