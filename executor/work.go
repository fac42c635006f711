package executor

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/batchq/batchq/events"
)

// work is one decoded work message: a job attempt or a compensation attempt.
type work struct {
	kind       Work
	job        events.JobQueued
	comp       events.CompensationQueued
	subject    string
	deliveries int
}

func decodeWork(kind Work, subject string, data []byte, deliveries int) (*work, error) {
	env, err := events.Decode(data)
	if err != nil {
		return nil, err
	}
	w := &work{kind: kind, subject: subject, deliveries: deliveries}
	switch {
	case kind == Jobs && env.Type == events.TypeJobQueued:
		w.job, err = events.DecodeData[events.JobQueued](env)
	case kind == Compensations && env.Type == events.TypeCompensationQueued:
		w.comp, err = events.DecodeData[events.CompensationQueued](env)
	default:
		return nil, fmt.Errorf("unexpected event type %s on a work subject", env.Type)
	}
	if err != nil {
		return nil, err
	}
	return w, nil
}

func (w *work) batchID() string {
	if w.kind == Compensations {
		return w.comp.BatchID
	}
	return w.job.BatchID
}

func (w *work) jobID() string {
	if w.kind == Compensations {
		return w.comp.JobID
	}
	return w.job.JobID
}

func (w *work) position() int {
	if w.kind == Compensations {
		return w.comp.Compensation.Position
	}
	return w.job.Position
}

func (w *work) name() string {
	if w.kind == Compensations {
		return w.comp.Name
	}
	return w.job.Name
}

func (w *work) attempt() int {
	if w.kind == Compensations {
		return w.comp.Attempt
	}
	return w.job.Attempt
}

func (w *work) role() events.Role {
	if w.kind == Compensations {
		return ""
	}
	return w.job.Role
}

func (w *work) args() json.RawMessage {
	if w.kind == Compensations {
		return w.comp.Args
	}
	return w.job.Args
}

func (w *work) context() json.RawMessage {
	if w.kind == Compensations {
		return w.comp.Compensation.Context
	}
	return w.job.Context
}

func (w *work) notBefore() *time.Time {
	if w.kind == Compensations {
		return w.comp.NotBefore
	}
	return w.job.NotBefore
}

func (w *work) maxAttempts(def int) int {
	n := w.job.MaxAttempts
	if w.kind == Compensations {
		n = w.comp.MaxAttempts
	}
	if n <= 0 {
		return def
	}
	return n
}

func (w *work) timeout(def time.Duration) time.Duration {
	ms := w.job.TimeoutMS
	if w.kind == Compensations {
		ms = w.comp.TimeoutMS
	}
	if ms <= 0 {
		return def
	}
	return time.Duration(ms) * time.Millisecond
}

func (w *work) route() events.Route {
	return events.Route{BatchID: w.batchID(), JobID: w.jobID(), Queue: w.queue(), Attempt: w.attempt()}
}

func (w *work) queue() string {
	if w.kind == Compensations {
		return w.comp.Queue
	}
	return w.job.Queue
}

// next returns the work message of the next attempt, delayed until at.
func (w *work) next(at time.Time) any {
	if w.kind == Compensations {
		c := w.comp
		c.Attempt++
		c.NotBefore = &at
		return c
	}
	j := w.job
	j.Attempt++
	j.NotBefore = &at
	return j
}
