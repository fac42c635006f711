package batchq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/batchq/batchq/events"
	"github.com/nats-io/nats.go"
)

// Read models, shared with the wire format.
type (
	// BatchInfo is the state of a batch.
	BatchInfo = events.BatchInfo
	// JobInfo is the state of a job, with its result once it completed.
	JobInfo = events.JobInfo
	// Status is the status of a batch.
	Status = events.BatchStatus
)

// Batch statuses.
const (
	StatusPending      = events.StatusPending
	StatusRunning      = events.StatusRunning
	StatusCompensating = events.StatusCompensating
	StatusCompleted    = events.StatusCompleted
	StatusFailed       = events.StatusFailed
	StatusCancelled    = events.StatusCancelled
)

// request sends a request to the coordinator's read API and decodes the
// reply into out.
func (c *Client) request(ctx context.Context, subject string, req, out any) error {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("batchq: encode request for %s: %w", subject, err)
	}
	resp, err := c.nc.RequestWithContext(ctx, subject, body)
	if errors.Is(err, nats.ErrNoResponders) {
		return fmt.Errorf("%w (subject %s)", ErrNoCoordinator, subject)
	}
	if err != nil {
		return fmt.Errorf("batchq: request %s: %w", subject, err)
	}
	if err := json.Unmarshal(resp.Data, out); err != nil {
		return fmt.Errorf("batchq: decode reply from %s: %w", subject, err)
	}
	return nil
}

// apiErr converts an API error into the client's errors.
func apiErr(e *events.APIError, notFound error) error {
	if e == nil {
		return nil
	}
	switch e.Code {
	case events.CodeNotFound:
		return fmt.Errorf("%w: %s", notFound, e.Message)
	case events.CodeFinished:
		return fmt.Errorf("%w: %s", ErrBatchFinished, e.Message)
	}
	return fmt.Errorf("batchq: coordinator: %w", e)
}

// Batch returns the state of a batch, or ErrBatchNotFound.
func (c *Client) Batch(ctx context.Context, id string) (*BatchInfo, error) {
	var reply events.BatchReply
	if err := c.request(ctx, events.APIBatchGet, events.BatchRequest{BatchID: id}, &reply); err != nil {
		return nil, err
	}
	if err := apiErr(reply.Error, ErrBatchNotFound); err != nil {
		return nil, err
	}
	return reply.Batch, nil
}

// Progress returns the whole-number percentage of a batch's jobs that
// completed, rounded down; failed jobs do not count.
func (c *Client) Progress(ctx context.Context, id string) (int, error) {
	b, err := c.Batch(ctx, id)
	if err != nil {
		return 0, err
	}
	return b.Progress, nil
}

// JobResult returns one job of a batch with its result, or ErrJobNotFound.
// Callbacks can be read too, by their ids "on_complete" and "on_failure".
func (c *Client) JobResult(ctx context.Context, batchID, jobID string) (*JobInfo, error) {
	var reply events.JobReply
	if err := c.request(ctx, events.APIJobGet, events.JobRequest{BatchID: batchID, JobID: jobID}, &reply); err != nil {
		return nil, err
	}
	if reply.Error != nil && reply.Error.Code == events.CodeNotFound {
		if _, err := c.Batch(ctx, batchID); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %s", ErrJobNotFound, reply.Error.Message)
	}
	if err := apiErr(reply.Error, ErrJobNotFound); err != nil {
		return nil, err
	}
	return reply.Job, nil
}

// EachResult calls fn for every job of a batch in position order, reading
// one page at a time, and stops at the first error fn returns.
func (c *Client) EachResult(ctx context.Context, id string, fn func(JobInfo) error) error {
	from := 0
	for {
		var reply events.ResultsReply
		if err := c.request(ctx, events.APIBatchResults, events.ResultsRequest{BatchID: id, From: from}, &reply); err != nil {
			return err
		}
		if err := apiErr(reply.Error, ErrBatchNotFound); err != nil {
			return err
		}
		for _, j := range reply.Jobs {
			if err := fn(j); err != nil {
				return err
			}
			from = j.Position + 1
		}
		if !reply.More || len(reply.Jobs) == 0 {
			return nil
		}
	}
}

// Results returns every job of a batch with its result, in position order.
// Use EachResult for batches too large to hold in memory.
func (c *Client) Results(ctx context.Context, id string) ([]JobInfo, error) {
	var jobs []JobInfo
	err := c.EachResult(ctx, id, func(j JobInfo) error {
		jobs = append(jobs, j)
		return nil
	})
	return jobs, err
}

// waitResync is how often Wait reads the batch even without an event. It
// covers lifecycle events missed while the connection was reconnecting.
const waitResync = 30 * time.Second

// Wait blocks until a batch is final (completed, failed or cancelled) and
// returns its state. It wakes on the batch's lifecycle events rather than
// polling.
func (c *Client) Wait(ctx context.Context, id string) (*BatchInfo, error) {
	if err := events.ValidateID("batch id", id); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBatchNotFound, err)
	}
	wake := make(chan *nats.Msg, 64)
	sub, err := c.nc.ChanSubscribe(events.BatchEventsFilter(id), wake)
	if err != nil {
		return nil, fmt.Errorf("batchq: subscribe to events of batch %s: %w", id, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	resync := time.NewTicker(waitResync)
	defer resync.Stop()
	for {
		b, err := c.readForWait(ctx, id)
		switch {
		case errors.Is(err, errTransient):
			// The coordinator is restarting or slow; its lifecycle events
			// or the resync wake this loop once it is back.
			b = &BatchInfo{ID: id, Status: StatusPending}
		case err != nil:
			return nil, err
		case b.Status.Final():
			return b, nil
		}
		select {
		case <-ctx.Done():
			return b, fmt.Errorf("batchq: wait for batch %s: %w", id, ctx.Err())
		case <-wake:
		case <-resync.C:
		}
	}
}

// errTransient marks read errors that Wait outlives: no coordinator, a
// request that timed out, or a store that did not respond.
var errTransient = errors.New("batchq: transient read error")

// readForWait reads a batch with its own request timeout, so one lost reply
// does not hold Wait until the caller's deadline.
func (c *Client) readForWait(ctx context.Context, id string) (*BatchInfo, error) {
	rctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	b, err := c.Batch(rctx, id)
	if err == nil || ctx.Err() != nil {
		return b, err
	}
	var apiErr *events.APIError
	if errors.Is(err, ErrNoCoordinator) || errors.Is(err, context.DeadlineExceeded) ||
		(errors.As(err, &apiErr) && apiErr.Code == events.CodeUnavailable) {
		return nil, fmt.Errorf("%w: %w", errTransient, err)
	}
	return nil, err
}

// RejectedEvents returns the most recent events that the coordinator
// rejected as malformed, newest first.
func (c *Client) RejectedEvents(ctx context.Context, limit int) ([]events.EventRejected, error) {
	var reply events.RejectedReply
	if err := c.request(ctx, events.APIRejected, events.RejectedRequest{Limit: limit}, &reply); err != nil {
		return nil, err
	}
	if reply.Error != nil {
		return nil, fmt.Errorf("batchq: coordinator: %w", reply.Error)
	}
	return reply.Events, nil
}
