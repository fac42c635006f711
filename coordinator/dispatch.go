package coordinator

import (
	"context"
	"errors"

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

// dispatchBatch publishes the work of a parallel batch in chunks and records
// after each chunk how far it got. A crash between publish and record
// publishes the chunk again; the stream drops the copies by message id.
func (c *Coordinator) dispatchBatch(ctx context.Context, id string) error {
	for {
		b, err := c.store.Batch(ctx, id)
		if err != nil {
			return err
		}
		if b.Status != events.StatusRunning || b.Type != events.Parallel || b.Dispatched >= b.Total {
			return nil
		}
		jobs, err := c.store.Jobs(ctx, id, b.Dispatched-1, c.cfg.DispatchChunk)
		if err != nil {
			return err
		}
		if len(jobs) == 0 {
			return errors.New("no jobs stored after the dispatched ones")
		}
		msgs := make([]events.Message, 0, len(jobs))
		var tooLarge []*store.Job
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
		n, err := c.publish(ctx, msgs)
		c.metrics.addPublished(n, false)
		if err != nil {
			return err
		}
		if n < len(msgs) {
			return errors.New("not every work message was published")
		}
		through := jobs[len(jobs)-1].Position + 1
		if err := c.recordDispatched(ctx, id, through, tooLarge); err != nil {
			return err
		}
	}
}

// recordDispatched moves the dispatch mark of a batch forward and fails the
// jobs whose work did not fit in a message.
func (c *Coordinator) recordDispatched(ctx context.Context, id string, through int, tooLarge []*store.Job) error {
	var a *applier
	msgs, err := c.store.Update(ctx, []string{id}, func(tx store.Tx) error {
		a = c.newApplier(ctx, tx)
		b, err := tx.Batch(id)
		if err != nil {
			return err
		}
		if b.Dispatched >= through || b.Status != events.StatusRunning {
			// A batch that stopped running counted its undispatched jobs
			// as skipped with the old mark, so the mark must stay.
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
