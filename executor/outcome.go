package executor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/batchq/batchq/events"
	"github.com/nats-io/nats.go/jetstream"
)

// maxErrorBytes bounds an error message inside an outcome event.
const maxErrorBytes = 4 << 10

// outcome is what an attempt publishes before its work message is
// acknowledged.
type outcome struct {
	msgs []events.Message
	err  error
}

func truncate(s string) string {
	if len(s) <= maxErrorBytes {
		return s
	}
	return s[:maxErrorBytes] + "... (truncated)"
}

// finish publishes an outcome and then acknowledges the work message. When
// the outcome cannot be published, the message is put back so the attempt
// runs again later rather than being lost.
func (e *Executor) finish(msg jetstream.Msg, w *work, log *slog.Logger, out outcome) {
	if out.err != nil {
		log.Error("build outcome, the message will be redelivered", "error", out.err)
		_ = msg.NakWithDelay(5 * time.Second)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	for _, m := range out.msgs {
		if _, err := e.js.PublishMsg(ctx, m.NATS()); err != nil {
			log.Error("publish outcome, the message will be redelivered", "type", m.Type, "error", err)
			_ = msg.NakWithDelay(time.Second)
			return
		}
	}
	// The server confirms the acknowledgement before the slot is freed, so
	// the messages held by this executor never exceed Concurrency, even in
	// the server's count.
	if err := msg.DoubleAck(ctx); err != nil {
		log.Warn("acknowledge work message; a redelivery will report the same outcome again", "error", err)
	}
}

func (e *Executor) event(w *work, t events.Type, data any) (events.Message, error) {
	return e.enc.Encode(t, events.EventSubject(w.queue(), w.batchID(), t),
		events.JobMsgID(w.batchID(), w.jobID(), t, w.attempt()), w.route(), data)
}

func (e *Executor) single(w *work, t events.Type, data any) outcome {
	msg, err := e.event(w, t, data)
	if err != nil {
		return outcome{err: err}
	}
	return outcome{msgs: []events.Message{msg}}
}

// completed builds the outcome of a successful attempt. A chain step whose
// context or result is too large fails instead, because the next message
// could not carry it.
func (e *Executor) completed(w *work, job *Job, duration time.Duration) outcome {
	result, context, added, err := job.outcome()
	var addErr *addError
	if errors.As(err, &addErr) {
		if w.attempt() < w.maxAttempts(e.cfg.MaxAttempts) {
			return e.retry(w, err, events.ReasonError)
		}
		return e.failed(w, err, events.ReasonError)
	}
	if err != nil {
		return e.failed(w, fmt.Errorf("encode the context: %w", err), events.ReasonError)
	}
	if len(context) > e.cfg.MaxContextBytes {
		return e.failed(w, fmt.Errorf("the step left a context of %d bytes, above the limit of %d; keep large data elsewhere and put its key in the context", len(context), e.cfg.MaxContextBytes), events.ReasonContextTooLarge)
	}
	if size := len(result) + len(context) + 4096; size > int(e.cfg.Conn.MaxPayload()) {
		return e.failed(w, fmt.Errorf("the result of %d bytes does not fit in one message of at most %d bytes; store large results elsewhere and return their key", len(result), e.cfg.Conn.MaxPayload()), events.ReasonError)
	}
	if w.kind == Compensations {
		return e.single(w, events.TypeCompensationCompleted, events.CompensationOutcome{
			BatchID: w.batchID(), JobID: w.jobID(), Attempt: w.attempt(), Result: result,
			Deliveries: w.deliveries, DurationMS: duration.Milliseconds(),
		})
	}
	return e.single(w, events.TypeJobCompleted, events.JobCompleted{
		BatchID: w.batchID(), JobID: w.jobID(), Role: w.role(), Attempt: w.attempt(),
		Result: result, Context: context, Added: added,
		Deliveries: w.deliveries, DurationMS: duration.Milliseconds(),
	})
}

// failed builds the outcome of an attempt that failed for good.
func (e *Executor) failed(w *work, err error, reason string) outcome {
	msg := truncate(err.Error())
	if w.kind == Compensations {
		return e.single(w, events.TypeCompensationFailed, events.CompensationOutcome{
			BatchID: w.batchID(), JobID: w.jobID(), Attempt: w.attempt(), Error: msg, Reason: reason, Deliveries: w.deliveries,
		})
	}
	return e.single(w, events.TypeJobFailed, events.JobFailed{
		BatchID: w.batchID(), JobID: w.jobID(), Role: w.role(), Attempt: w.attempt(),
		Error: msg, Reason: reason, Deliveries: w.deliveries,
	})
}

// retry builds the outcome of a failed attempt that will run again: the
// next attempt's work message, delayed by the backoff, then the retrying
// event. Both ids include the attempt, so a retry is never taken for a
// duplicate of the attempt before it.
func (e *Executor) retry(w *work, err error, reason string) outcome {
	at := time.Now().Add(e.backoff(w.attempt())).UTC()
	workType := events.TypeJobQueued
	if w.kind == Compensations {
		workType = events.TypeCompensationQueued
	}
	route := w.route()
	route.Attempt++
	next, encErr := e.enc.Encode(workType, w.subject, events.JobMsgID(w.batchID(), w.jobID(), workType, w.attempt()+1), route, w.next(at))
	if encErr != nil {
		return outcome{err: encErr}
	}
	var ev events.Message
	msg := truncate(err.Error())
	if w.kind == Compensations {
		ev, encErr = e.event(w, events.TypeCompensationRetrying, events.CompensationOutcome{
			BatchID: w.batchID(), JobID: w.jobID(), Attempt: w.attempt(), Error: msg, Reason: reason, RetryAt: &at, Deliveries: w.deliveries,
		})
	} else {
		ev, encErr = e.event(w, events.TypeJobRetrying, events.JobRetrying{
			BatchID: w.batchID(), JobID: w.jobID(), Role: w.role(), Attempt: w.attempt(),
			Error: msg, Reason: reason, RetryAt: at, Deliveries: w.deliveries,
		})
	}
	if encErr != nil {
		return outcome{err: encErr}
	}
	return outcome{msgs: []events.Message{next, ev}}
}

// skipped builds the outcome of a job that did not run.
func (e *Executor) skipped(w *work, reason string) outcome {
	return e.single(w, events.TypeJobSkipped, events.JobSkipped{
		BatchID: w.batchID(), JobID: w.jobID(), Role: w.role(), Attempt: w.attempt(), Reason: reason,
	})
}
