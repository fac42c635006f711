package coordinator

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/store"
	"github.com/nats-io/nats.go/jetstream"
)

// verdict is the settlement of an event's message after its group is
// applied.
type verdict int

const (
	ack    verdict = iota
	retry          // put back for RetryDelay: something it needs is not stored yet
	reject         // terminate and record: the event can never be applied
)

// op is one decoded event of a group.
type op struct {
	msg     jetstream.Msg
	env     events.Envelope
	batchID string
	data    any

	verdict verdict
	reason  string
}

func (o *op) setRetry(reason string) {
	o.verdict, o.reason = retry, reason
}

func (o *op) setReject(reason string) {
	o.verdict, o.reason = reject, reason
}

// consume reads events in groups and applies each group until ctx ends.
func (c *Coordinator) consume(ctx context.Context, cons jetstream.Consumer) error {
	buffered := make(chan jetstream.Msg, 2*c.cfg.GroupSize)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case buffered <- m:
		case <-ctx.Done():
			_ = m.Nak()
		}
	}, jetstream.PullMaxMessages(2*c.cfg.GroupSize), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if ctx.Err() == nil {
			c.log.Warn("events consumer", "error", err)
		}
	}))
	if err != nil {
		return fmt.Errorf("coordinator: consume events: %w", err)
	}
	defer func() {
		cc.Stop()
		// Buffered events go back to the server at once, so a restarted or
		// sibling coordinator takes them without waiting for AckWait.
		for {
			select {
			case m := <-buffered:
				_ = m.Nak()
			default:
				return
			}
		}
	}()

	group := make([]jetstream.Msg, 0, c.cfg.GroupSize)
	for {
		group = group[:0]
		select {
		case <-ctx.Done():
			return nil
		case m := <-buffered:
			group = append(group, m)
		}
	drain:
		for len(group) < c.cfg.GroupSize {
			select {
			case m := <-buffered:
				group = append(group, m)
			default:
				break drain
			}
		}
		if err := c.applyGroup(ctx, group); err != nil {
			return err
		}
	}
}

// applyGroup decodes a group, stages chunks, applies the rest in one store
// update, publishes the outbox and settles every message.
func (c *Coordinator) applyGroup(ctx context.Context, msgs []jetstream.Msg) error {
	start := time.Now()
	ops := make([]*op, 0, len(msgs))
	for _, m := range msgs {
		ops = append(ops, c.decode(m))
	}
	c.stageChunks(ctx, ops)

	var pending []*op
	var ids []string
	seen := map[string]bool{}
	for _, o := range ops {
		if o.verdict != ack || o.data == nil {
			continue
		}
		if _, isChunk := o.data.(*events.BatchJobs); isChunk {
			continue
		}
		pending = append(pending, o)
		if !seen[o.batchID] {
			seen[o.batchID] = true
			ids = append(ids, o.batchID)
		}
	}

	if len(pending) > 0 {
		err := c.update(ctx, ids, pending)
		if err != nil && len(pending) > 1 && !isStop(err) && ctx.Err() == nil {
			// One event the store cannot take must not hold back the rest
			// of its group, so the events are applied one at a time.
			c.log.Warn("apply events failed, applying them one at a time", "events", len(pending), "error", err)
			for _, o := range pending {
				if err := c.update(ctx, []string{o.batchID}, []*op{o}); err != nil {
					if isStop(err) || ctx.Err() != nil {
						return c.stopped(ctx, ops, err)
					}
					c.failedApply(o, err)
				}
			}
			err = nil
		}
		if err != nil {
			if isStop(err) || ctx.Err() != nil {
				return c.stopped(ctx, ops, err)
			}
			for _, o := range pending {
				c.failedApply(o, err)
			}
		}
	}
	c.settle(ctx, ops)
	c.metrics.countEvents(ops)
	c.metrics.observeGroup(len(ops), start)
	return nil
}

// update applies ops in one store update and publishes the outbox.
func (c *Coordinator) update(ctx context.Context, ids []string, ops []*op) error {
	var a *applier
	msgs, err := c.store.Update(ctx, ids, func(tx store.Tx) error {
		a = c.newApplier(ctx, tx)
		if err := prefetchJobs(ctx, tx, ops); err != nil {
			return err
		}
		for _, o := range ops {
			o.verdict, o.reason = ack, ""
			if err := a.apply(o); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if c.cfg.afterCommit != nil {
		if err := c.cfg.afterCommit(); err != nil {
			return &stopError{err}
		}
	}
	c.relay(ctx, msgs, false)
	c.publishDirect(ctx, a.direct)
	for id := range a.dispatch {
		c.signalDispatch(id)
	}
	return nil
}

func isStop(err error) bool {
	var stop *stopError
	return errors.As(err, &stop)
}

// stopped ends the consumer loop: a stop from the afterCommit hook returns
// its error as a crash would, and a cancelled context puts the group back.
func (c *Coordinator) stopped(ctx context.Context, ops []*op, err error) error {
	var stop *stopError
	if errors.As(err, &stop) {
		return stop.err
	}
	c.nakAll(ops)
	return nil
}

// failedApply schedules an event whose update failed for another try.
func (c *Coordinator) failedApply(o *op, err error) {
	c.metrics.applyFailed()
	c.log.Error("apply event failed, retrying it later", "type", o.env.Type, "batch_id", o.batchID, "job_id", o.env.JobID, "error", err)
	o.setRetry(err.Error())
}

// retryDelay grows with the deliveries of a message: an event that waits for
// another stays quick, and one the store keeps failing backs off to
// maxRetryDelay.
func (c *Coordinator) retryDelay(m jetstream.Msg) time.Duration {
	d := c.cfg.RetryDelay
	if meta, err := m.Metadata(); err == nil {
		for i := uint64(1); i < meta.NumDelivered && d < maxRetryDelay; i++ {
			d *= 2
		}
	}
	return min(d, maxRetryDelay)
}

// maxRetryDelay bounds the delay between tries of one event.
const maxRetryDelay = 30 * time.Second

// prefetchJobs reads the jobs that ops name with one read per batch, so the
// events of a group cost one round trip to the store rather than one each.
func prefetchJobs(ctx context.Context, tx store.Tx, ops []*op) error {
	byBatch := map[string][]string{}
	for _, o := range ops {
		if id := jobIDOf(o.data); id != "" {
			byBatch[o.batchID] = append(byBatch[o.batchID], id)
		}
	}
	for batchID, ids := range byBatch {
		if _, err := tx.Batch(batchID); err != nil {
			continue // the apply step handles a missing batch
		}
		if _, err := tx.Jobs(ctx, batchID, ids); err != nil {
			return err
		}
	}
	return nil
}

func jobIDOf(data any) string {
	switch d := data.(type) {
	case *events.JobCompleted:
		return d.JobID
	case *events.JobFailed:
		return d.JobID
	case *events.JobRetrying:
		return d.JobID
	case *events.JobSkipped:
		return d.JobID
	case *events.CompensationOutcome:
		return d.JobID
	}
	return ""
}

// stopError carries an error from the afterCommit hook, which stops the
// coordinator as a crash would.
type stopError struct{ err error }

func (e *stopError) Error() string { return e.err.Error() }

// settle acknowledges, delays or terminates each message by its verdict.
func (c *Coordinator) settle(ctx context.Context, ops []*op) {
	for _, o := range ops {
		var err error
		switch o.verdict {
		case ack:
			err = o.msg.Ack()
		case retry:
			c.log.Debug("event delayed", "type", o.env.Type, "batch_id", o.batchID, "reason", o.reason)
			err = o.msg.NakWithDelay(c.retryDelay(o.msg))
		case reject:
			c.recordRejected(ctx, o)
			err = o.msg.TermWithReason(o.reason)
		}
		if err != nil && ctx.Err() == nil {
			c.log.Warn("settle event message", "type", o.env.Type, "batch_id", o.batchID, "error", err)
		}
	}
}

func (c *Coordinator) nakAll(ops []*op) {
	for _, o := range ops {
		_ = o.msg.Nak()
	}
}

// decode parses a message into an op. A message that cannot be decoded is
// marked for rejection.
func (c *Coordinator) decode(m jetstream.Msg) *op {
	o := &op{msg: m}
	env, err := events.Decode(m.Data())
	if err != nil {
		o.setReject(err.Error())
		return o
	}
	o.env = env
	o.batchID = env.BatchID
	o.data, err = decodeData(env)
	if err != nil {
		o.setReject(err.Error())
		return o
	}
	if id := batchIDOf(o.data); id != env.BatchID {
		o.setReject(fmt.Sprintf("extension batchid %q does not match data batch_id %q", env.BatchID, id))
	}
	return o
}

func decodeData(env events.Envelope) (any, error) {
	switch env.Type {
	case events.TypeBatchJobs:
		return decodeInto[events.BatchJobs](env)
	case events.TypeBatchSubmitted:
		return decodeInto[events.BatchSubmitted](env)
	case events.TypeJobCompleted:
		return decodeInto[events.JobCompleted](env)
	case events.TypeJobFailed:
		return decodeInto[events.JobFailed](env)
	case events.TypeJobRetrying:
		return decodeInto[events.JobRetrying](env)
	case events.TypeJobSkipped:
		return decodeInto[events.JobSkipped](env)
	case events.TypeJobsAdded:
		return decodeInto[events.JobsAdded](env)
	case events.TypeCompensationCompleted, events.TypeCompensationFailed, events.TypeCompensationRetrying:
		return decodeInto[events.CompensationOutcome](env)
	default:
		return nil, fmt.Errorf("type %s is not an input of the coordinator", env.Type)
	}
}

func decodeInto[T any](env events.Envelope) (any, error) {
	v, err := events.DecodeData[T](env)
	if err != nil {
		return nil, err
	}
	clipTexts(&v)
	return &v, nil
}

// maxTextBytes bounds an error or reason that the coordinator stores and
// repeats in lifecycle events, so an executor that sends a huge one cannot
// push those events past the max payload.
const maxTextBytes = 4 << 10

// clipText cuts s to maxTextBytes at a character boundary.
func clipText(s string) string {
	if len(s) <= maxTextBytes {
		return s
	}
	cut := maxTextBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "... (cut)"
}

// clipTexts clips the free text of an outcome event.
func clipTexts(v any) {
	switch d := v.(type) {
	case *events.JobFailed:
		d.Error = clipText(d.Error)
	case *events.JobRetrying:
		d.Error = clipText(d.Error)
	case *events.JobSkipped:
		d.Reason = clipText(d.Reason)
	case *events.CompensationOutcome:
		d.Error = clipText(d.Error)
	}
}

func batchIDOf(data any) string {
	switch d := data.(type) {
	case *events.BatchJobs:
		return d.BatchID
	case *events.BatchSubmitted:
		return d.BatchID
	case *events.JobCompleted:
		return d.BatchID
	case *events.JobFailed:
		return d.BatchID
	case *events.JobRetrying:
		return d.BatchID
	case *events.JobSkipped:
		return d.BatchID
	case *events.JobsAdded:
		return d.BatchID
	case *events.CompensationOutcome:
		return d.BatchID
	}
	return ""
}

// stageChunks stores the job chunks of the group, and the inline jobs of
// submissions, before the update that seals their batches.
func (c *Coordinator) stageChunks(ctx context.Context, ops []*op) {
	for _, o := range ops {
		if o.verdict != ack {
			continue
		}
		var (
			chunk int
			specs []events.JobSpec
		)
		switch d := o.data.(type) {
		case *events.BatchJobs:
			chunk, specs = d.Chunk, d.Jobs
		case *events.BatchSubmitted:
			chunk, specs = d.Chunks, d.Jobs
		default:
			continue
		}
		if len(specs) == 0 {
			continue
		}
		jobs := make([]*store.Job, len(specs))
		for i, s := range specs {
			jobs[i] = store.JobFromSpec(o.batchID, s)
		}
		err := c.store.StageJobs(ctx, o.batchID, chunk, jobs)
		switch {
		case errors.Is(err, store.ErrInvalidJobs):
			o.setReject(err.Error())
		case errors.Is(err, store.ErrExists):
			o.setReject(fmt.Sprintf("batch %s already exists with other jobs; give each batch a new id: %v", o.batchID, err))
		case err != nil:
			c.log.Error("stage jobs failed, retrying later", "batch_id", o.batchID, "chunk", chunk, "error", err)
			o.setRetry(err.Error())
		}
	}
}

// recordRejected stores a rejected event and publishes event.rejected for
// taps. Failures are logged: the message is terminated either way, so one
// bad event never blocks the stream.
func (c *Coordinator) recordRejected(ctx context.Context, o *op) {
	meta, _ := o.msg.Metadata()
	var seq uint64
	if meta != nil {
		seq = meta.Sequence.Stream
	}
	data := o.msg.Data()
	if len(data) > 1024 {
		data = data[:1024]
	}
	ev := events.EventRejected{Subject: o.msg.Subject(), Reason: o.reason, Sequence: seq, Data: data}
	c.log.Warn("event rejected", "subject", ev.Subject, "sequence", seq, "reason", o.reason)
	if err := c.store.RecordRejected(ctx, ev); err != nil {
		c.log.Error("record rejected event", "sequence", seq, "error", err)
	}
	id := fmt.Sprintf("rejected:%d", seq)
	msg, err := c.enc.Encode(events.TypeEventRejected, events.EventsPrefix+"._._.event.rejected", id, events.Route{}, ev)
	if err != nil {
		c.log.Error("encode event.rejected", "sequence", seq, "error", err)
		return
	}
	if _, err := c.js.PublishMsg(ctx, msg.NATS()); err != nil {
		c.log.Warn("publish event.rejected", "sequence", seq, "error", err)
	}
}
