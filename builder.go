package batchq

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/batchq/batchq/events"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
)

// messageOverhead is room for headers, the subject and the CloudEvents
// attributes around a job inside a work message.
const messageOverhead = 4 << 10

// Builder collects the settings of a batch until Dispatch. Its methods
// change the builder and return it for chaining; errors surface at Dispatch.
type Builder struct {
	client        *Client
	typ           events.BatchType
	jobs          []Job
	context       any
	queueName     string
	queue         string
	onComplete    *Call
	onFailure     *Call
	onJobFailure  *Call
	allowFailures bool
	maxAttempts   int
	timeout       time.Duration
	id            string
}

// NewBatch starts a parallel batch: every job runs at once and all share a
// read-only context.
func (c *Client) NewBatch(jobs ...Job) *Builder {
	return &Builder{client: c, typ: events.Parallel, jobs: jobs}
}

// NewChain starts a chain: the jobs run one after another in the given
// order, and each sees the context that the one before it left.
func (c *Client) NewChain(jobs ...Job) *Builder {
	return &Builder{client: c, typ: events.Chain, jobs: jobs}
}

// Add appends jobs to the batch before it is dispatched.
func (b *Builder) Add(jobs ...Job) *Builder {
	b.jobs = append(b.jobs, jobs...)
	return b
}

// Context sets the shared context of a parallel batch or the initial
// context of a chain. It must encode to a JSON object.
func (b *Builder) Context(v any) *Builder {
	b.context = v
	return b
}

// Queue routes the batch to a queue through the client's queue mapping.
func (b *Builder) Queue(name string) *Builder {
	b.queueName = name
	b.queue = b.client.ResolveQueue(name)
	return b
}

// QueueConfig routes the batch to the queue name as given, bypassing the
// client's queue mapping.
func (b *Builder) QueueConfig(name string) *Builder {
	b.queueName = name
	b.queue = name
	return b
}

// OnComplete names a job to run once when the batch completes. It receives
// the batch id, status and error through Job.Callback, and its own args.
func (b *Builder) OnComplete(name string, args any) *Builder {
	b.onComplete = &Call{Name: name, Args: args}
	return b
}

// OnFailure names a job to run once when the batch fails, after its
// compensations have finished. With AllowFailures it also runs when a
// completed batch has failed jobs.
func (b *Builder) OnFailure(name string, args any) *Builder {
	b.onFailure = &Call{Name: name, Args: args}
	return b
}

// OnJobFailure names a job to run once for each job that fails for good. It
// receives the failed job's id, position and error through Job.Callback.
func (b *Builder) OnJobFailure(name string, args any) *Builder {
	b.onJobFailure = &Call{Name: name, Args: args}
	return b
}

// AllowFailures lets a parallel batch run every job even when some fail.
// The batch then completes with its failures counted; OnComplete runs, and
// OnFailure runs too if any job failed. Chains reject it at Dispatch.
func (b *Builder) AllowFailures() *Builder {
	b.allowFailures = true
	return b
}

// MaxAttempts sets how often a job runs before it fails for good, counting
// the first run. Jobs may override it. Zero leaves the executor's default.
func (b *Builder) MaxAttempts(n int) *Builder {
	b.maxAttempts = n
	return b
}

// Timeout bounds each attempt of each job; the handler's context is
// cancelled after it. Jobs may override it. Zero leaves the executor's
// default.
func (b *Builder) Timeout(d time.Duration) *Builder {
	b.timeout = d
	return b
}

// ID sets the batch id instead of a new UUIDv7. With a caller-chosen id a
// Dispatch can be retried after an error without creating a second batch:
// the stream drops a republished copy within its duplicate window, and the
// coordinator ignores a submission for a batch it stores already. The id is
// one subject token: letters, digits, '-' and '_', at most 128 bytes.
func (b *Builder) ID(id string) *Builder {
	b.id = id
	return b
}

// Dispatch validates the batch, publishes it, and returns its id once the
// events stream has stored it. An invalid batch is rejected with a
// *SpecError before anything is published.
func (b *Builder) Dispatch(ctx context.Context) (string, error) {
	sub, specs, err := b.build()
	if err != nil {
		return "", err
	}
	c := b.client
	msgs, err := c.encodeBatch(sub, specs)
	if err != nil {
		return "", err
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	if err := c.ensureStreams(ctx); err != nil {
		return "", err
	}
	if err := c.publishBatch(ctx, sub.BatchID, msgs); err != nil {
		return "", err
	}
	return sub.BatchID, nil
}

// build validates the builder and encodes the batch.
func (b *Builder) build() (*events.BatchSubmitted, []events.JobSpec, error) {
	c := b.client
	if len(b.jobs) == 0 {
		return nil, nil, specError("jobs", "the batch has no jobs; add at least one")
	}
	if b.typ == events.Chain && b.allowFailures {
		return nil, nil, specError("AllowFailures", "a chain stops at its first failed step, so AllowFailures applies to parallel batches only")
	}
	if b.maxAttempts < 0 {
		return nil, nil, specError("MaxAttempts", "%d is negative; use 0 for the default", b.maxAttempts)
	}
	if b.timeout < 0 || (b.timeout > 0 && b.timeout < time.Millisecond) {
		return nil, nil, specError("Timeout", "%s is not 0 or at least 1ms; timeouts count whole milliseconds", b.timeout)
	}
	queueName, queue := b.queueName, b.queue
	if queueName == "" {
		queueName, queue = c.cfg.DefaultQueue, c.ResolveQueue(c.cfg.DefaultQueue)
	}
	if err := events.ValidateQueueName(queue); err != nil {
		field := "queue"
		if queue != queueName {
			field = fmt.Sprintf("queue %q (mapped from %q)", queue, queueName)
		}
		return nil, nil, specError(field, "%v", err)
	}
	ctxJSON, err := encodeContext(b.context, c.cfg.MaxContextBytes)
	if err != nil {
		return nil, nil, err
	}
	opts := events.Options{AllowFailures: b.allowFailures, MaxAttempts: b.maxAttempts, TimeoutMS: b.timeout.Milliseconds()}
	for _, cb := range []struct {
		field string
		call  *Call
		ref   **events.JobRef
	}{
		{"OnComplete", b.onComplete, &opts.OnComplete},
		{"OnFailure", b.onFailure, &opts.OnFailure},
		{"OnJobFailure", b.onJobFailure, &opts.OnJobFailure},
	} {
		if *cb.ref, err = encodeCall(cb.field, cb.call); err != nil {
			return nil, nil, err
		}
	}

	limit := c.maxMessage - messageOverhead - len(ctxJSON)
	for field, ref := range map[string]*events.JobRef{"OnComplete": opts.OnComplete, "OnFailure": opts.OnFailure, "OnJobFailure": opts.OnJobFailure} {
		if ref != nil && len(ref.Args) > limit {
			return nil, nil, specError(field+" args", "%d bytes with a context of %d bytes do not fit in one message of at most %d bytes (the server's max payload); pass a reference to large data instead",
				len(ref.Args), len(ctxJSON), c.maxMessage)
		}
	}

	specs := make([]events.JobSpec, len(b.jobs))
	total := len(ctxJSON)
	for i, j := range b.jobs {
		if specs[i], err = j.Spec(i); err != nil {
			return nil, nil, err
		}
		size := len(specs[i].Args) + len(j.Name)
		if specs[i].Compensation != nil {
			size += len(specs[i].Compensation.Args)
		}
		if size > limit {
			return nil, nil, specError(fmt.Sprintf("job %d (%s) args", i, j.Name),
				"%d bytes with a context of %d bytes do not fit in one message of at most %d bytes (the server's max payload); pass a reference to large data instead",
				size, len(ctxJSON), c.maxMessage)
		}
		total += size
		if total > c.cfg.MaxSpecBytes {
			return nil, nil, specError("jobs", "the batch encodes to more than %d bytes (Config.MaxSpecBytes) at job %d; split it or raise the limit", c.cfg.MaxSpecBytes, i)
		}
	}
	id := b.id
	if id == "" {
		u, err := uuid.NewV7()
		if err != nil {
			return nil, nil, fmt.Errorf("batchq: generate batch id: %w", err)
		}
		id = u.String()
	} else if err := events.ValidateID("batch id", id); err != nil {
		return nil, nil, specError("ID", "%v", err)
	}
	return &events.BatchSubmitted{
		BatchID:   id,
		Type:      b.typ,
		QueueName: queueName,
		Queue:     queue,
		Context:   ctxJSON,
		Options:   opts,
		Total:     len(specs),
	}, specs, nil
}

// encodeContext encodes a context, which must be a JSON object or nil.
func encodeContext(v any, limit int) (json.RawMessage, error) {
	data, err := encodeJSON(v)
	if err != nil {
		return nil, specError("context", "cannot be encoded as JSON: %v", err)
	}
	if data == nil {
		return nil, nil
	}
	if data[0] != '{' {
		return nil, specError("context", "encodes to %.20s..., but a context must be a JSON object such as a map or a struct", data)
	}
	if len(data) > limit {
		return nil, specError("context", "encodes to %d bytes, above the limit of %d (Config.MaxContextBytes)", len(data), limit)
	}
	return data, nil
}

// encodeBatch encodes the batch as batch.jobs chunks and the
// batch.submitted event that seals it, which carries the last chunk when it
// fits. Every message is checked against the server's max payload, so a
// batch that cannot be published is rejected before anything is.
func (c *Client) encodeBatch(sub *events.BatchSubmitted, specs []events.JobSpec) ([]events.Message, error) {
	enc := events.Encoder{Source: "batchq/client"}
	route := events.Route{BatchID: sub.BatchID, Queue: sub.Queue}
	encodeChunk := func(i int, chunk []events.JobSpec) (events.Message, error) {
		msg, err := enc.Encode(events.TypeBatchJobs, events.EventSubject(sub.Queue, sub.BatchID, events.TypeBatchJobs),
			events.ChunkMsgID(sub.BatchID, i), route, events.BatchJobs{BatchID: sub.BatchID, Chunk: i, Jobs: chunk})
		if err != nil {
			return msg, fmt.Errorf("batchq: encode chunk %d: %w", i, err)
		}
		if err := c.fits(msg); err != nil {
			return msg, specError(fmt.Sprintf("jobs %d to %d", chunk[0].Position, chunk[len(chunk)-1].Position), "%v; lower Config.ChunkBytes", err)
		}
		return msg, nil
	}
	encodeSeal := func(chunks int, inline []events.JobSpec) (events.Message, error) {
		seal := *sub
		seal.Chunks, seal.Jobs = chunks, inline
		msg, err := enc.Encode(events.TypeBatchSubmitted, events.EventSubject(sub.Queue, sub.BatchID, events.TypeBatchSubmitted),
			events.SubmittedMsgID(sub.BatchID), route, seal)
		if err != nil {
			return msg, fmt.Errorf("batchq: encode batch %s: %w", sub.BatchID, err)
		}
		return msg, nil
	}

	chunks := splitChunks(specs, c.cfg.ChunkBytes)
	msgs := make([]events.Message, 0, len(chunks)+1)
	for i, chunk := range chunks[:len(chunks)-1] {
		msg, err := encodeChunk(i, chunk)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, msg)
	}
	last := chunks[len(chunks)-1]
	seal, err := encodeSeal(len(msgs), last)
	if err != nil {
		return nil, err
	}
	if c.fits(seal) != nil {
		// The last chunk does not fit next to the context and callbacks, so
		// it travels on its own.
		msg, err := encodeChunk(len(msgs), last)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, msg)
		if seal, err = encodeSeal(len(msgs), nil); err != nil {
			return nil, err
		}
		if err := c.fits(seal); err != nil {
			return nil, specError("context and callbacks", "%v; keep the context and callback args smaller", err)
		}
	}
	return append(msgs, seal), nil
}

// fits returns an error unless msg fits in one message of the server.
func (c *Client) fits(msg events.Message) error {
	if size := len(msg.Data) + len(msg.Subject) + 512; size > c.maxMessage {
		return fmt.Errorf("the encoded message would be %d bytes, above the server's max payload of %d", size, c.maxMessage)
	}
	return nil
}

// publishBatch publishes the chunks and then the submission that seals the
// batch. The coordinator runs nothing before the seal, so a dispatch that
// fails half way leaves no running batch.
func (c *Client) publishBatch(ctx context.Context, batchID string, msgs []events.Message) error {
	chunks, seal := msgs[:len(msgs)-1], msgs[len(msgs)-1]
	futures := make([]jetstream.PubAckFuture, 0, len(chunks))
	for i, msg := range chunks {
		f, err := c.js.PublishMsgAsync(msg.NATS())
		if err != nil {
			return fmt.Errorf("batchq: publish chunk %d of batch %s: %w", i, batchID, err)
		}
		futures = append(futures, f)
	}
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("batchq: publish chunk %d of batch %s: %w", i, batchID, err)
		case <-ctx.Done():
			return fmt.Errorf("batchq: publish chunks of batch %s: %w", batchID, ctx.Err())
		}
	}
	if _, err := c.js.PublishMsg(ctx, seal.NATS()); err != nil {
		return fmt.Errorf("batchq: publish batch %s: %w", batchID, err)
	}
	return nil
}

// splitChunks splits specs into runs whose encoded args stay under limit
// bytes; every run holds at least one job.
func splitChunks(specs []events.JobSpec, limit int) [][]events.JobSpec {
	var chunks [][]events.JobSpec
	start, size := 0, 0
	for i, s := range specs {
		n := 128 + len(s.Name) + len(s.Args)
		if s.Compensation != nil {
			n += len(s.Compensation.Name) + len(s.Compensation.Args)
		}
		if i > start && size+n > limit {
			chunks = append(chunks, specs[start:i])
			start, size = i, 0
		}
		size += n
	}
	return append(chunks, specs[start:])
}
