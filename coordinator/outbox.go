package coordinator

import (
	"context"
	"errors"
	"time"

	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/store"
	"github.com/nats-io/nats.go/jetstream"
)

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }

// publishTimeout bounds the wait for the stream to acknowledge one window of
// publishes.
const publishTimeout = 30 * time.Second

// publish publishes msgs asynchronously, PublishWindow at a time, and
// returns how many leading messages the stream acknowledged. A duplicate
// acknowledgement counts as stored: the message id is deterministic, so the
// stream already holds this very message.
func (c *Coordinator) publish(ctx context.Context, msgs []events.Message) (int, error) {
	done := 0
	for done < len(msgs) {
		end := min(done+c.cfg.PublishWindow, len(msgs))
		futures := make([]jetstream.PubAckFuture, 0, end-done)
		for _, m := range msgs[done:end] {
			f, err := c.js.PublishMsgAsync(m.NATS())
			if err != nil {
				return done, err
			}
			futures = append(futures, f)
		}
		timeout := time.NewTimer(publishTimeout)
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				timeout.Stop()
				return done, err
			case <-timeout.C:
				return done, errors.New("timed out waiting for the stream to acknowledge published messages")
			case <-ctx.Done():
				timeout.Stop()
				return done, ctx.Err()
			}
			done++
		}
		timeout.Stop()
	}
	return done, nil
}

// relay publishes committed outbox messages and deletes those the stream
// stored. What it cannot publish stays in the outbox for the sweeper, which
// calls it with swept set.
func (c *Coordinator) relay(ctx context.Context, msgs []store.OutboxMessage, swept bool) {
	if len(msgs) == 0 {
		return
	}
	plain := make([]events.Message, len(msgs))
	for i, m := range msgs {
		plain[i] = m.Message
	}
	n, err := c.publish(ctx, plain)
	if err != nil && ctx.Err() == nil {
		c.log.Warn("publish outbox messages, the sweeper retries them", "published", n, "total", len(msgs), "error", err)
	}
	if n == 0 {
		return
	}
	c.metrics.addPublished(n, swept)
	c.metrics.countSettled(plain[:n])
	if err := c.store.DeleteOutbox(ctx, msgs[:n]); err != nil && ctx.Err() == nil {
		c.log.Warn("delete published outbox messages, they will be published again", "count", n, "error", err)
	}
}

// publishDirect publishes messages that have no outbox.
func (c *Coordinator) publishDirect(ctx context.Context, msgs []events.Message) {
	if len(msgs) == 0 {
		return
	}
	if n, err := c.publish(ctx, msgs); err != nil && ctx.Err() == nil {
		c.log.Warn("publish replies about unknown batches", "published", n, "total", len(msgs), "error", err)
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
		c.relay(ctx, msgs, true)
		if len(msgs) < limit || ctx.Err() != nil {
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
