package store

import (
	"encoding/json"
	"time"

	"github.com/batchq/batchq/events"
)

// Batch is the stored state of a batch.
type Batch struct {
	ID        string
	Type      events.BatchType
	Status    events.BatchStatus
	QueueName string
	Queue     string
	Context   json.RawMessage `json:",omitempty"`
	Options   events.Options

	// Total counts the batch's jobs, added ones included; positions run
	// from 0 to Total-1. Completed + Failed + Skipped never exceeds it, and
	// a store may reject a change that breaks that.
	Total     int
	Completed int
	Failed    int
	Skipped   int
	// Dispatching and Dispatched mark how far the work of a parallel batch
	// is published: positions below Dispatched are, positions from
	// Dispatching on are not, and positions between them may be, because
	// a dispatcher raises Dispatching before it publishes and Dispatched
	// after.
	Dispatching int
	Dispatched  int
	// Current is the position of a chain's step in flight.
	Current int
	// Walk is the state of the walk that runs compensations one at a time
	// in reverse position order, after a chain fails or a batch is
	// cancelled.
	Walk WalkState
	// WalkPosition is the position of the job whose compensation the walk
	// runs.
	WalkPosition int

	// Error is the first failure or the reason for cancelling.
	Error string
	// CompensationTotal, CompensationCompleted and CompensationFailed count
	// compensations that were queued and how they ended.
	CompensationTotal     int
	CompensationCompleted int
	CompensationFailed    int
	// Cancelled is set when a client cancelled the batch.
	Cancelled bool

	CreatedAt  time.Time
	UpdatedAt  time.Time
	FinishedAt *time.Time
	// Version grows by one with every committed change.
	Version int64
}

// WalkState is the state of a batch's reverse compensation walk.
type WalkState string

// Walk states.
const (
	WalkNone    WalkState = ""
	WalkRunning WalkState = "running"
	WalkDone    WalkState = "done"
)

// Open reports whether the batch has jobs that may still run or
// compensations that may still change its status.
func (b *Batch) Open() bool {
	return !b.Status.Final()
}

// Info returns the read model of the batch.
func (b *Batch) Info() events.BatchInfo {
	return events.BatchInfo{
		ID:        b.ID,
		Type:      b.Type,
		Status:    b.Status,
		QueueName: b.QueueName,
		Queue:     b.Queue,
		Total:     b.Total,
		Completed: b.Completed,
		Failed:    b.Failed,
		Skipped:   b.Skipped,
		Progress:  events.ProgressOf(b.Completed, b.Total),
		Error:     b.Error,
		Compensation: events.CompensationCounts{
			Total:     b.CompensationTotal,
			Completed: b.CompensationCompleted,
			Failed:    b.CompensationFailed,
		},
		CreatedAt:  b.CreatedAt,
		FinishedAt: b.FinishedAt,
	}
}

// Job is the stored state of a job or a callback.
type Job struct {
	BatchID string
	// ID is the position in decimal for jobs, and a callback id such as
	// "on_complete" for callbacks. Stores reject jobs whose id differs from
	// their position.
	ID string
	// Position orders the jobs of a batch; callbacks have -1.
	Position     int
	Role         events.Role
	Name         string
	Args         json.RawMessage `json:",omitempty"`
	Compensation *events.JobRef
	MaxAttempts  int
	TimeoutMS    int64
	// ParentID is the job that added this one, if any.
	ParentID string

	Status events.JobStatus
	// Attempt is the attempt that the last stored event reported, 0 before
	// the first.
	Attempt    int
	Result     json.RawMessage `json:",omitempty"`
	Error      string
	FinishedAt *time.Time

	CompensationStatus  events.CompensationStatus
	CompensationAttempt int
	CompensationError   string
}

// Info returns the read model of the job.
func (j *Job) Info() events.JobInfo {
	return events.JobInfo{
		BatchID:           j.BatchID,
		ID:                j.ID,
		Position:          j.Position,
		Name:              j.Name,
		Status:            j.Status,
		Attempts:          j.Attempt,
		Result:            j.Result,
		Error:             j.Error,
		FinishedAt:        j.FinishedAt,
		Compensation:      j.CompensationStatus,
		CompensationError: j.CompensationError,
	}
}

// Spec returns the job as the wire spec that created it.
func (j *Job) Spec() events.JobSpec {
	return events.JobSpec{
		ID:           j.ID,
		Position:     j.Position,
		Name:         j.Name,
		Args:         j.Args,
		Compensation: j.Compensation,
		MaxAttempts:  j.MaxAttempts,
		TimeoutMS:    j.TimeoutMS,
	}
}

// JobFromSpec returns a pending job of a batch built from a wire spec.
func JobFromSpec(batchID string, s events.JobSpec) *Job {
	return &Job{
		BatchID:      batchID,
		ID:           s.ID,
		Position:     s.Position,
		Role:         events.RoleJob,
		Name:         s.Name,
		Args:         s.Args,
		Compensation: s.Compensation,
		MaxAttempts:  s.MaxAttempts,
		TimeoutMS:    s.TimeoutMS,
		Status:       events.JobStatusPending,
	}
}

// Clone returns a deep enough copy of j: the byte slices are shared, because
// nothing in batchq changes them in place.
func (j *Job) Clone() *Job {
	c := *j
	if j.Compensation != nil {
		ref := *j.Compensation
		c.Compensation = &ref
	}
	if j.FinishedAt != nil {
		t := *j.FinishedAt
		c.FinishedAt = &t
	}
	return &c
}

// Clone returns a copy of b.
func (b *Batch) Clone() *Batch {
	c := *b
	if b.FinishedAt != nil {
		t := *b.FinishedAt
		c.FinishedAt = &t
	}
	return &c
}
