package coordinator

import (
	"fmt"

	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/store"
)

// tooLargeError reports a message above the size the server accepts.
type tooLargeError struct {
	what      string
	size, max int
}

func (e *tooLargeError) Error() string {
	return fmt.Sprintf("%s would be %d bytes, above the limit of %d; keep args and context smaller, for example by storing large data elsewhere and passing its key", e.what, e.size, e.max)
}

func (c *Coordinator) checkSize(msg events.Message, what string) error {
	// Headers and the subject add to the payload; 512 bytes covers them.
	if size := len(msg.Data) + 512; size > c.cfg.MaxMessageSize {
		return &tooLargeError{what: what, size: size, max: c.cfg.MaxMessageSize}
	}
	return nil
}

func (c *Coordinator) maxAttempts(b *store.Batch, j *store.Job) int {
	if j.MaxAttempts > 0 {
		return j.MaxAttempts
	}
	return b.Options.MaxAttempts
}

func (c *Coordinator) timeoutMS(b *store.Batch, j *store.Job) int64 {
	if j.TimeoutMS > 0 {
		return j.TimeoutMS
	}
	return b.Options.TimeoutMS
}

// workMessage builds the work message of one attempt of a job or callback.
func (c *Coordinator) workMessage(b *store.Batch, j *store.Job, attempt int, cb *events.CallbackInfo) (events.Message, error) {
	data := events.JobQueued{
		BatchID:     b.ID,
		BatchType:   b.Type,
		Queue:       b.Queue,
		Role:        j.Role,
		JobID:       j.ID,
		Position:    j.Position,
		Name:        j.Name,
		Args:        j.Args,
		Context:     b.Context,
		Attempt:     attempt,
		MaxAttempts: c.maxAttempts(b, j),
		TimeoutMS:   c.timeoutMS(b, j),
		Callback:    cb,
	}
	route := events.Route{BatchID: b.ID, JobID: j.ID, Queue: b.Queue, Attempt: attempt}
	msg, err := c.enc.Encode(events.TypeJobQueued, events.WorkSubject(b.Queue, b.ID),
		events.JobMsgID(b.ID, j.ID, events.TypeJobQueued, attempt), route, data)
	if err != nil {
		return msg, err
	}
	return msg, c.checkSize(msg, fmt.Sprintf("the work message of job %s of batch %s", j.ID, b.ID))
}

// compensationMessage builds the work message of j's compensation.
func (c *Coordinator) compensationMessage(b *store.Batch, j *store.Job, attempt int, trigger string) (events.Message, error) {
	data := events.CompensationQueued{
		BatchID:     b.ID,
		Queue:       b.Queue,
		JobID:       j.ID,
		Name:        j.Compensation.Name,
		Args:        j.Compensation.Args,
		Attempt:     attempt,
		MaxAttempts: b.Options.MaxAttempts,
		TimeoutMS:   b.Options.TimeoutMS,
		Compensation: events.CompensationInfo{
			BatchID:  b.ID,
			JobID:    j.ID,
			JobName:  j.Name,
			Args:     j.Args,
			Result:   j.Result,
			Position: j.Position,
			Error:    trigger,
			Context:  b.Context,
		},
	}
	route := events.Route{BatchID: b.ID, JobID: j.ID, Queue: b.Queue, Attempt: attempt}
	msg, err := c.enc.Encode(events.TypeCompensationQueued, events.CompensationSubject(b.Queue, b.ID),
		events.JobMsgID(b.ID, j.ID, events.TypeCompensationQueued, attempt), route, data)
	if err != nil {
		return msg, err
	}
	return msg, c.checkSize(msg, fmt.Sprintf("the compensation of job %s of batch %s", j.ID, b.ID))
}

// lifecycleMessage builds a batch.* event with the batch's read model.
func (c *Coordinator) lifecycleMessage(b *store.Batch, t events.Type) (events.Message, error) {
	route := events.Route{BatchID: b.ID, Queue: b.Queue}
	return c.enc.Encode(t, events.EventSubject(b.Queue, b.ID, t), events.BatchMsgID(b.ID, t), route,
		events.BatchLifecycle{Batch: b.Info()})
}

// answerMessage builds a jobs.accepted or jobs.rejected event.
func (c *Coordinator) answerMessage(queue string, t events.Type, ans events.JobsAnswer) (events.Message, error) {
	route := events.Route{BatchID: ans.BatchID, Queue: queue}
	return c.enc.Encode(t, events.EventSubject(queue, ans.BatchID, t), events.AddMsgID(ans.BatchID, ans.AddID, t), route, ans)
}

// cancelledMarker is the write that records a cancelled batch in the bucket
// that executors watch. It is a plain key-value write, not an event.
func (c *Coordinator) cancelledMarker(b *store.Batch, reason string) events.Message {
	return events.Message{
		Subject: "$KV." + events.CancelledBucket + "." + b.ID,
		ID:      b.ID + ":cancelled-marker",
		Data:    []byte(reason),
	}
}
