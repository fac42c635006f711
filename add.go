package batchq

import (
	"context"
	"fmt"
	"time"

	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/internal/addition"
	"github.com/google/uuid"
)

// AddJobs appends jobs to a running batch and returns their ids. A parallel
// batch runs them at once; a chain runs them after every step already
// queued, in the given order. Entries without a name, args or compensation
// are dropped, and a call with nothing else changes nothing. Adding to a
// settled batch returns ErrBatchFinished and to an unknown one
// ErrBatchNotFound; the jobs are then not stored.
func (c *Client) AddJobs(ctx context.Context, batchID string, jobs ...Job) ([]string, error) {
	specs, err := AddSpecs(jobs)
	if err != nil || len(specs) == 0 {
		return nil, err
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	b, err := c.storedBatch(ctx, batchID)
	if err != nil {
		return nil, err
	}
	if b.Status != StatusRunning {
		return nil, fmt.Errorf("%w: batch %s is %s", ErrBatchFinished, batchID, b.Status)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("batchq: generate add id: %w", err)
	}
	ans, err := addition.Add(ctx, c.nc, c.js, addition.Request{
		BatchID:        batchID,
		Queue:          b.Queue,
		AddID:          "c-" + id.String(),
		Jobs:           specs,
		MaxMessageSize: c.maxMessage,
		Source:         "batchq/client",
	})
	if err != nil {
		return nil, fmt.Errorf("batchq: %w", err)
	}
	return AnswerIDs(ans)
}

// storedBatch returns a batch once the coordinator has stored it. A batch
// read as pending right after Dispatch is read again with a growing pause,
// so an addition never reaches the coordinator before its batch.
func (c *Client) storedBatch(ctx context.Context, id string) (*BatchInfo, error) {
	pause := 10 * time.Millisecond
	for {
		b, err := c.Batch(ctx, id)
		if err != nil || b.Status != StatusPending {
			return b, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("batchq: batch %s is still pending: %w", id, ctx.Err())
		case <-time.After(pause):
		}
		pause = min(2*pause, time.Second)
	}
}

// AddSpecs drops empty entries from jobs and encodes the rest for a
// jobs.added event. The executor's Job.AddJobs uses it too.
func AddSpecs(jobs []Job) ([]events.JobSpec, error) {
	var specs []events.JobSpec
	for i, j := range jobs {
		if j.empty() {
			continue
		}
		spec, err := j.Spec(i)
		if err != nil {
			return nil, err
		}
		spec.ID, spec.Position = "", 0
		specs = append(specs, spec)
	}
	return specs, nil
}

// AnswerIDs converts the coordinator's answer to an addition into the ids
// of the added jobs or an error.
func AnswerIDs(ans events.JobsAnswer) ([]string, error) {
	switch ans.Code {
	case "":
	case events.CodeNotFound:
		return nil, fmt.Errorf("%w: %s", ErrBatchNotFound, ans.Error)
	case events.CodeFinished:
		return nil, fmt.Errorf("%w: %s", ErrBatchFinished, ans.Error)
	default:
		return nil, fmt.Errorf("batchq: jobs rejected: %s", ans.Error)
	}
	ids := make([]string, ans.Count)
	for i := range ids {
		ids[i] = events.PositionJobID(ans.FirstPosition + i)
	}
	return ids, nil
}

// Cancel cancels a running batch: jobs that have not started are skipped,
// and once no job is in flight the compensations of the jobs that took
// effect run, in reverse position order. The batch then settles as
// cancelled and a batch.cancelled event carries reason. Cancelling a
// settled or compensating batch returns ErrBatchFinished.
func (c *Client) Cancel(ctx context.Context, batchID, reason string) error {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	if _, err := c.storedBatch(ctx, batchID); err != nil {
		return err
	}
	var reply events.BatchReply
	if err := c.request(ctx, events.APIBatchCancel, events.CancelRequest{BatchID: batchID, Reason: reason}, &reply); err != nil {
		return err
	}
	return apiErr(reply.Error, ErrBatchNotFound)
}
