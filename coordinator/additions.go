package coordinator

import (
	"fmt"

	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/store"
)

// jobsAdded appends jobs to a running batch. The addition is recorded under
// its add id, so a redelivered or repeated jobs.added event changes nothing,
// and it is answered with jobs.accepted or jobs.rejected either way.
func (a *applier) jobsAdded(o *op, d *events.JobsAdded) error {
	b, err := a.tx.Batch(d.BatchID)
	if err != nil {
		if err := a.notFound(err); err != nil {
			return err
		}
		return a.answerDirect(o, d, events.CodeNotFound, fmt.Sprintf("batch %s not found", d.BatchID))
	}
	have, err := a.tx.Additions(a.ctx, b.ID, []string{d.AddID})
	if err != nil {
		return err
	}
	if prev, done := have[d.AddID]; done {
		return a.answer(b, prev)
	}
	add := store.Addition{ID: d.AddID, FirstPosition: b.Total}
	switch {
	case b.Status != events.StatusRunning:
		add.Code, add.Error = events.CodeFinished, fmt.Sprintf("batch %s is %s and accepts no more jobs", b.ID, b.Status)
	case d.ParentRole == events.RoleCallback:
		add.Code, add.Error = events.CodeInvalid, fmt.Sprintf("callback %s cannot add jobs to batch %s", d.ParentJobID, b.ID)
	}
	if add.Code == "" && len(d.Jobs) > 0 {
		jobs := make([]*store.Job, len(d.Jobs))
		for i, spec := range d.Jobs {
			spec.Position = b.Total + i
			spec.ID = positionID(spec.Position)
			j := store.JobFromSpec(b.ID, spec)
			j.ParentID = d.ParentJobID
			jobs[i] = j
		}
		if err := a.tx.InsertJobs(a.ctx, b.ID, jobs); err != nil {
			return err
		}
		b.Total += len(jobs)
		add.Count = len(jobs)
		if b.Type == events.Parallel {
			a.dispatch[b.ID] = true
		}
		a.tx.SaveBatch(b)
	}
	if err := a.tx.RecordAddition(a.ctx, b.ID, add); err != nil {
		return err
	}
	return a.answer(b, add)
}

// answer emits the answer to an addition through the outbox.
func (a *applier) answer(b *store.Batch, add store.Addition) error {
	ans := events.JobsAnswer{BatchID: b.ID, AddID: add.ID, Count: add.Count, FirstPosition: add.FirstPosition, Code: add.Code, Error: add.Error}
	t := events.TypeJobsAccepted
	if add.Code != "" {
		t = events.TypeJobsRejected
	}
	msg, err := a.c.answerMessage(b.Queue, t, ans)
	if err != nil {
		return err
	}
	a.tx.Emit(b.ID, msg)
	return nil
}

// answerDirect rejects an addition to a batch that is not stored. Such a
// batch has no outbox, so the answer is published after the commit without
// one; a client that misses it learns the same from the read API.
func (a *applier) answerDirect(o *op, d *events.JobsAdded, code, message string) error {
	queue := o.env.Queue
	if events.ValidateQueueName(queue) != nil {
		queue = "_"
	}
	ans := events.JobsAnswer{BatchID: d.BatchID, AddID: d.AddID, FirstPosition: -1, Code: code, Error: message}
	msg, err := a.c.answerMessage(queue, events.TypeJobsRejected, ans)
	if err != nil {
		return err
	}
	a.direct = append(a.direct, msg)
	return nil
}

// notFound returns nil for store.ErrNotFound and err otherwise.
func (a *applier) notFound(err error) error {
	if isNotFound(err) {
		return nil
	}
	return err
}
