package coordinator

import (
	"context"
	"errors"
	"fmt"

	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/store"
)

// dispatchWorkers is how many parallel batches are dispatched at once.
const dispatchWorkers = 4

func (c *Coordinator) signalDispatch(batchID string) {
	select {
	case c.dispatchSignal <- batchID:
	default:
		// The channel is full; the sweeper lists undispatched batches again
		// within SweepInterval.
	}
}

// dispatchLoop publishes the work of parallel batches, a few batches at a
// time and each batch in one goroutine at most.
func (c *Coordinator) dispatchLoop(ctx context.Context) error {
	sem := make(chan struct{}, dispatchWorkers)
	defer func() {
		// Wait for the dispatches in flight: they stop once ctx ends.
		for range cap(sem) {
			sem <- struct{}{}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case id := <-c.dispatchSignal:
			c.dispatchMu.Lock()
			busy := c.dispatching[id]
			c.dispatching[id] = true
			c.dispatchMu.Unlock()
			if busy {
				continue
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return nil
			}
			go func() {
				defer func() {
					c.dispatchMu.Lock()
					delete(c.dispatching, id)
					c.dispatchMu.Unlock()
					<-sem
				}()
				if err := c.dispatchBatch(ctx, id); err != nil && ctx.Err() == nil {
					c.log.Warn("dispatch batch, the sweeper retries it", "batch_id", id, "error", err)
				}
			}()
		}
	}
}

// dispatchBatch publishes the work of a parallel batch in chunks. For each
// chunk it first raises the batch's Dispatching mark, then publishes, then
// raises Dispatched. A batch that fails or is cancelled counts the jobs from
// Dispatching on as never published, so the mark must lead the publish. A
// crash between the marks leaves positions that may or may not be
// published; the next dispatch publishes them again, and the stream drops
// the copies by message id.
func (c *Coordinator) dispatchBatch(ctx context.Context, id string) error {
	for {
		b, err := c.store.Batch(ctx, id)
		if err != nil {
			return err
		}
		if b.Type != events.Parallel {
			return nil
		}
		if b.Dispatched < b.Dispatching {
			if err := c.publishRange(ctx, b, b.Dispatched, b.Dispatching); err != nil {
				return err
			}
			continue
		}
		if b.Status != events.StatusRunning || b.Dispatching >= b.Total {
			return nil
		}
		if err := c.raiseDispatching(ctx, id, b.Dispatching, min(b.Dispatching+c.cfg.DispatchChunk, b.Total)); err != nil {
			return err
		}
	}
}

// raiseDispatching moves the Dispatching mark of a running batch from from
// to to. It changes nothing when the batch moved on meanwhile; the caller
// reads the batch again either way.
func (c *Coordinator) raiseDispatching(ctx context.Context, id string, from, to int) error {
	_, err := c.store.Update(ctx, []string{id}, func(tx store.Tx) error {
		b, err := tx.Batch(id)
		if err != nil {
			return err
		}
		if b.Status != events.StatusRunning || b.Dispatching != from || b.Dispatched != from {
			return nil
		}
		b.Dispatching = to
		tx.SaveBatch(b)
		return nil
	})
	return err
}

// publishRange publishes the work of the jobs at positions from to to-1
// that have not reported yet, and then raises Dispatched to to.
func (c *Coordinator) publishRange(ctx context.Context, b *store.Batch, from, to int) error {
	var tooLarge []*store.Job
	for from < to {
		jobs, err := c.store.Jobs(ctx, b.ID, from-1, min(to-from, c.cfg.DispatchChunk))
		if err != nil {
			return err
		}
		if len(jobs) == 0 {
			return fmt.Errorf("batch %s stores no jobs from position %d, below its mark %d", b.ID, from, to)
		}
		msgs := make([]events.Message, 0, len(jobs))
		for _, j := range jobs {
			if j.Status != events.JobStatusPending {
				continue // it reported already, so its work was published
			}
			msg, err := c.workMessage(b, j, 1, nil)
			var tl *tooLargeError
			if errors.As(err, &tl) {
				tooLarge = append(tooLarge, j)
				continue
			}
			if err != nil {
				return err
			}
			msgs = append(msgs, msg)
		}
		results, err := c.publish(ctx, msgs)
		c.metrics.addPublished(countStored(results), false)
		if err != nil {
			return err
		}
		if n := countStored(results); n < len(msgs) {
			return fmt.Errorf("%d of %d work messages were not published", len(msgs)-n, len(msgs))
		}
		from = jobs[len(jobs)-1].Position + 1
	}
	return c.recordDispatched(ctx, b.ID, to, tooLarge)
}

// recordDispatched raises the Dispatched mark of a batch and fails the jobs
// whose work did not fit in a message.
func (c *Coordinator) recordDispatched(ctx context.Context, id string, through int, tooLarge []*store.Job) error {
	var a *applier
	msgs, err := c.store.Update(ctx, []string{id}, func(tx store.Tx) error {
		a = c.newApplier(ctx, tx)
		b, err := tx.Batch(id)
		if err != nil {
			return err
		}
		if b.Dispatched >= through {
			return nil
		}
		b.Dispatched = through
		for _, stored := range tooLarge {
			jobs, err := tx.Jobs(ctx, id, []string{stored.ID})
			if err != nil {
				return err
			}
			j := jobs[stored.ID]
			if j == nil || j.Status.Final() {
				continue
			}
			_, sizeErr := c.workMessage(b, j, 1, nil)
			if sizeErr == nil {
				continue
			}
			if err := a.failJobHere(b, j, 1, sizeErr.Error(), events.ReasonContextTooLarge); err != nil {
				return err
			}
		}
		tx.SaveBatch(b)
		return nil
	})
	if err != nil {
		return err
	}
	c.relay(ctx, msgs, false)
	return nil
}
