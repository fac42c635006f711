package coordinator

import (
	"context"
	"errors"
	"time"

	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/store"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }

// publishTimeout bounds the wait for the stream to acknowledge one window of
// publishes.
const publishTimeout = 30 * time.Second

// publishResult is what became of one published message.
type publishResult struct {
	// stored is set when the stream acknowledged the message. A duplicate
	// acknowledgement counts as stored: the message id is deterministic, so
	// the stream already holds this very message.
	stored bool
	// fresh is set when the stream stored the message just now, not as a
	// duplicate.
	fresh bool
	// permanent is set when no retry can publish the message, because it
	// exceeds the server's max payload.
	permanent bool
}

// publish publishes msgs asynchronously, PublishWindow at a time, and
// reports for each message what became of it. It always waits for the
// messages it sent, even after an error, so a stored message is never
// taken for a lost one. The error is the first transient failure.
func (c *Coordinator) publish(ctx context.Context, msgs []events.Message) ([]publishResult, error) {
	results := make([]publishResult, len(msgs))
	var firstErr error
	for start := 0; start < len(msgs); start += c.cfg.PublishWindow {
		end := min(start+c.cfg.PublishWindow, len(msgs))
		futures := make([]jetstream.PubAckFuture, end-start)
		for i, m := range msgs[start:end] {
			f, err := c.js.PublishMsgAsync(m.NATS())
			if err != nil {
				results[start+i].permanent = errors.Is(err, nats.ErrMaxPayload)
				if !results[start+i].permanent && firstErr == nil {
					firstErr = err
				}
				continue
			}
			futures[i] = f
		}
		timeout := time.NewTimer(publishTimeout)
		for i, f := range futures {
			if f == nil {
				continue
			}
			select {
			case ack := <-f.Ok():
				results[start+i] = publishResult{stored: true, fresh: !ack.Duplicate}
			case err := <-f.Err():
				if firstErr == nil {
					firstErr = err
				}
			case <-timeout.C:
				if firstErr == nil {
					firstErr = errors.New("timed out waiting for the stream to acknowledge published messages")
				}
			case <-ctx.Done():
				timeout.Stop()
				return results, ctx.Err()
			}
		}
		timeout.Stop()
	}
	return results, firstErr
}

// countStored returns how many results are stored.
func countStored(results []publishResult) int {
	n := 0
	for _, r := range results {
		if r.stored {
			n++
		}
	}
	return n
}

// relay publishes committed outbox messages and deletes those the stream
// stored. A message that can never be published, because it exceeds the
// server's max payload, is logged and deleted too, so it cannot hold up the
// sweeper. What fails for another reason stays in the outbox for the
// sweeper, which calls relay with swept set. It reports whether every
// message was stored or dropped.
func (c *Coordinator) relay(ctx context.Context, msgs []store.OutboxMessage, swept bool) bool {
	if len(msgs) == 0 {
		return true
	}
	plain := make([]events.Message, len(msgs))
	for i, m := range msgs {
		plain[i] = m.Message
	}
	results, err := c.publish(ctx, plain)
	var done []store.OutboxMessage
	var fresh []events.Message
	for i, r := range results {
		switch {
		case r.permanent:
			c.log.Error("outbox message exceeds the server's max payload and is dropped", "batch_id", msgs[i].BatchID, "msg_id", msgs[i].ID, "type", msgs[i].Type, "bytes", len(msgs[i].Data))
			done = append(done, msgs[i])
		case r.stored:
			done = append(done, msgs[i])
			if r.fresh {
				fresh = append(fresh, plain[i])
			}
		}
	}
	if err != nil && ctx.Err() == nil {
		c.log.Warn("publish outbox messages, the sweeper retries them", "stored", countStored(results), "total", len(msgs), "error", err)
	}
	c.metrics.addPublished(len(fresh), swept)
	c.metrics.countSettled(fresh)
	if len(done) > 0 {
		if err := c.store.DeleteOutbox(ctx, done); err != nil && ctx.Err() == nil {
			c.log.Warn("delete published outbox messages, they will be published again", "count", len(done), "error", err)
			return false
		}
	}
	return len(done) == len(msgs)
}

// publishDirect publishes messages that have no outbox.
func (c *Coordinator) publishDirect(ctx context.Context, msgs []events.Message) {
	if len(msgs) == 0 {
		return
	}
	if results, err := c.publish(ctx, msgs); err != nil && ctx.Err() == nil {
		c.log.Warn("publish replies about unknown batches", "stored", countStored(results), "total", len(msgs), "error", err)
	}
}

// sweepLoop republishes outbox messages that a crash or a failed publish
// left behind, and restarts the dispatch of parallel batches. The first
// sweep takes every outbox message, because at start no update of this
// process is still publishing.
func (c *Coordinator) sweepLoop(ctx context.Context) error {
	cutoff := time.Now()
	ticker := time.NewTicker(c.cfg.SweepInterval)
	defer ticker.Stop()
	for {
		c.sweep(ctx, cutoff)
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
			cutoff = time.Now().Add(-c.cfg.OutboxAge)
		}
	}
}

func (c *Coordinator) sweep(ctx context.Context, cutoff time.Time) {
	const limit = 1000
	for {
		msgs, err := c.store.Outbox(ctx, cutoff, limit)
		if err != nil {
			if ctx.Err() == nil {
				c.log.Warn("read outbox", "error", err)
			}
			return
		}
		if len(msgs) > 0 {
			c.log.Info("republishing outbox messages", "count", len(msgs))
		}
		// A page that did not go through leaves its messages in place, and
		// reading again would return the same page, so the sweep stops
		// until the next tick.
		if !c.relay(ctx, msgs, true) || len(msgs) < limit || ctx.Err() != nil {
			break
		}
	}
	c.metrics.observeConsumer(ctx, c.cons)
	ids, err := c.store.Undispatched(ctx, 100)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Warn("list undispatched batches", "error", err)
		}
		return
	}
	for _, id := range ids {
		c.signalDispatch(id)
	}
}

// pruneLoop removes batches older than Retention.
func (c *Coordinator) pruneLoop(ctx context.Context) error {
	if c.cfg.Retention <= 0 {
		return nil
	}
	ticker := time.NewTicker(c.cfg.PruneInterval)
	defer ticker.Stop()
	for {
		cutoff := time.Now().Add(-c.cfg.Retention)
		n, err := c.store.Prune(ctx, cutoff)
		switch {
		case err != nil && ctx.Err() == nil:
			c.log.Warn("prune finished batches", "error", err)
		case n > 0:
			c.log.Info("pruned finished batches", "count", n, "finished_before", cutoff)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}
