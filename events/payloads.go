package events

import (
	"encoding/json"
	"time"
)

// BatchType tells how a batch runs its jobs.
type BatchType string

// Batch types.
const (
	// Parallel batches run every job at once and share a read-only context.
	Parallel BatchType = "parallel"
	// Chain batches run one step at a time, in position order, and each step
	// may change the context that the next step sees.
	Chain BatchType = "chain"
)

// Role tells what a job message runs.
type Role string

// Roles of a job message.
const (
	// RoleJob is an ordinary job of a batch.
	RoleJob Role = "job"
	// RoleCallback is a completion, failure or per-job failure callback.
	RoleCallback Role = "callback"
)

// CallbackKind names a callback of a batch.
type CallbackKind string

// Callback kinds.
const (
	// OnComplete runs once when a batch completes.
	OnComplete CallbackKind = "on_complete"
	// OnFailure runs once when a batch fails, after its compensations.
	OnFailure CallbackKind = "on_failure"
	// OnJobFailure runs once for each job that fails for good.
	OnJobFailure CallbackKind = "on_job_failure"
)

// JobRef names a job to run with its args: a callback or a compensation.
type JobRef struct {
	Name string          `json:"name"`
	Args json.RawMessage `json:"args,omitempty"`
}

// JobSpec is one job of a batch as the client submitted it.
type JobSpec struct {
	// ID is the position in decimal. In a jobs.added event the coordinator
	// assigns positions and ids, so both are left empty there.
	ID       string          `json:"id"`
	Position int             `json:"position"`
	Name     string          `json:"name"`
	Args     json.RawMessage `json:"args,omitempty"`
	// Compensation runs when the batch fails or is cancelled after this job
	// took effect.
	Compensation *JobRef `json:"compensation,omitempty"`
	// MaxAttempts counts runs that ended in an error, including the first;
	// zero means the batch default.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// TimeoutMS bounds one attempt in milliseconds; zero means the batch
	// default.
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
}

// Options are the settings of a batch that apply to all of its jobs.
type Options struct {
	OnComplete   *JobRef `json:"on_complete,omitempty"`
	OnFailure    *JobRef `json:"on_failure,omitempty"`
	OnJobFailure *JobRef `json:"on_job_failure,omitempty"`
	// AllowFailures lets a parallel batch run every job even after some
	// failed; it then settles as completed with its failures counted.
	AllowFailures bool `json:"allow_failures,omitempty"`
	// MaxAttempts is the default for jobs that set none; zero means the
	// executor's default.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// TimeoutMS is the default attempt timeout in milliseconds for jobs that
	// set none; zero means the executor's default.
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
}

// BatchJobs is the data of a batch.jobs event: one chunk of a large batch,
// published before the batch.submitted event that seals the batch.
type BatchJobs struct {
	BatchID string    `json:"batch_id"`
	Chunk   int       `json:"chunk"`
	Jobs    []JobSpec `json:"jobs"`
}

// BatchSubmitted is the data of a batch.submitted event. Jobs holds the last
// chunk of the batch; Chunks counts the batch.jobs events published before it.
type BatchSubmitted struct {
	BatchID string    `json:"batch_id"`
	Type    BatchType `json:"type"`
	// QueueName is the queue the client asked for; Queue is where the work
	// goes after the client's queue mapping.
	QueueName string          `json:"queue_name"`
	Queue     string          `json:"queue"`
	Context   json.RawMessage `json:"context,omitempty"`
	Options   Options         `json:"options"`
	Total     int             `json:"total"`
	Chunks    int             `json:"chunks"`
	Jobs      []JobSpec       `json:"jobs"`
}

// CallbackInfo tells a callback job about the batch that triggered it.
type CallbackInfo struct {
	Kind      CallbackKind `json:"kind"`
	Status    BatchStatus  `json:"status"`
	Error     string       `json:"error,omitempty"`
	Total     int          `json:"total"`
	Completed int          `json:"completed"`
	Failed    int          `json:"failed"`
	// FailedJob is set for on_job_failure callbacks.
	FailedJob *FailedJob `json:"failed_job,omitempty"`
}

// FailedJob describes the job behind an on_job_failure callback.
type FailedJob struct {
	JobID    string `json:"job_id"`
	Position int    `json:"position"`
	Name     string `json:"name"`
	Error    string `json:"error"`
}

// JobQueued is the data of a work message: one attempt of a job, chain step
// or callback.
type JobQueued struct {
	BatchID   string          `json:"batch_id"`
	BatchType BatchType       `json:"batch_type"`
	Queue     string          `json:"queue"`
	Role      Role            `json:"role"`
	JobID     string          `json:"job_id"`
	Position  int             `json:"position"`
	Name      string          `json:"name"`
	Args      json.RawMessage `json:"args,omitempty"`
	// Context is the shared context of a parallel batch or the context that
	// a chain step starts from.
	Context     json.RawMessage `json:"context,omitempty"`
	Attempt     int             `json:"attempt"`
	MaxAttempts int             `json:"max_attempts,omitempty"`
	TimeoutMS   int64           `json:"timeout_ms,omitempty"`
	// NotBefore delays a retry: an executor that receives the message
	// earlier puts it back until then.
	NotBefore *time.Time    `json:"not_before,omitempty"`
	Callback  *CallbackInfo `json:"callback,omitempty"`
}

// Outcome reasons of failed attempts.
const (
	ReasonError           = "error"
	ReasonPanic           = "panic"
	ReasonTimeout         = "timeout"
	ReasonUnknownJob      = "unknown_job"
	ReasonDeliveryLimit   = "delivery_limit"
	ReasonContextTooLarge = "context_too_large"
	ReasonInvalidMessage  = "invalid_message"
	ReasonCancelled       = "cancelled"
)

// JobCompleted is the data of a job.completed event.
type JobCompleted struct {
	BatchID string          `json:"batch_id"`
	JobID   string          `json:"job_id"`
	Role    Role            `json:"role"`
	Attempt int             `json:"attempt"`
	Result  json.RawMessage `json:"result,omitempty"`
	// Context is the context a chain step left; it replaces the stored one.
	// Parallel jobs leave it empty.
	Context json.RawMessage `json:"context,omitempty"`
	// Added counts the jobs.added events this attempt published; their add
	// ids are AddID(JobID, 0) to AddID(JobID, Added-1). The coordinator
	// holds this completion back until all of them are applied.
	Added int `json:"added,omitempty"`
	// Deliveries counts how often the work message was delivered for this
	// attempt. More than one means an executor crashed or stalled before
	// acknowledging it, or the attempt first waited out its retry delay.
	Deliveries int   `json:"deliveries"`
	DurationMS int64 `json:"duration_ms"`
}

// JobFailed is the data of a job.failed event: the job failed for good.
type JobFailed struct {
	BatchID    string `json:"batch_id"`
	JobID      string `json:"job_id"`
	Role       Role   `json:"role"`
	Attempt    int    `json:"attempt"`
	Error      string `json:"error"`
	Reason     string `json:"reason"`
	Deliveries int    `json:"deliveries"`
	DurationMS int64  `json:"duration_ms"`
}

// JobRetrying is the data of a job.retrying event: an attempt failed and the
// next one is queued for RetryAt.
type JobRetrying struct {
	BatchID    string    `json:"batch_id"`
	JobID      string    `json:"job_id"`
	Role       Role      `json:"role"`
	Attempt    int       `json:"attempt"`
	Error      string    `json:"error"`
	Reason     string    `json:"reason"`
	RetryAt    time.Time `json:"retry_at"`
	Deliveries int       `json:"deliveries"`
}

// JobSkipped is the data of a job.skipped event: an executor did not run the
// job because its batch was cancelled.
type JobSkipped struct {
	BatchID string `json:"batch_id"`
	JobID   string `json:"job_id"`
	Role    Role   `json:"role"`
	Attempt int    `json:"attempt"`
	Reason  string `json:"reason"`
}

// JobsAdded is the data of a jobs.added event. AddID names the addition:
// the coordinator applies an addition once, whatever is redelivered.
type JobsAdded struct {
	BatchID string `json:"batch_id"`
	AddID   string `json:"add_id"`
	// ParentJobID is the job that added these jobs, empty for a client.
	ParentJobID string `json:"parent_job_id,omitempty"`
	// ParentRole is the role of the adding job; additions from callbacks
	// are rejected.
	ParentRole Role      `json:"parent_role,omitempty"`
	Jobs       []JobSpec `json:"jobs"`
}

// JobsAnswer is the data of jobs.accepted and jobs.rejected events.
type JobsAnswer struct {
	BatchID string `json:"batch_id"`
	AddID   string `json:"add_id"`
	Count   int    `json:"count"`
	// FirstPosition is the position of the first added job; the others
	// follow it.
	FirstPosition int `json:"first_position"`
	// Code is set on rejection: one of the Code constants.
	Code  string `json:"code,omitempty"`
	Error string `json:"error,omitempty"`
}

// CompensationInfo is what a compensation job receives about the job it
// undoes, under the "_compensation" key of its work message.
type CompensationInfo struct {
	BatchID  string          `json:"batch_id"`
	JobID    string          `json:"job_id"`
	JobName  string          `json:"job_name"`
	Args     json.RawMessage `json:"args,omitempty"`
	Result   json.RawMessage `json:"result,omitempty"`
	Position int             `json:"position"`
	// Error is what triggered the compensation: the failure of the batch or
	// the reason it was cancelled.
	Error   string          `json:"error"`
	Context json.RawMessage `json:"context,omitempty"`
}

// CompensationQueued is the data of a compensation work message.
type CompensationQueued struct {
	BatchID      string           `json:"batch_id"`
	Queue        string           `json:"queue"`
	JobID        string           `json:"job_id"`
	Name         string           `json:"name"`
	Args         json.RawMessage  `json:"args,omitempty"`
	Attempt      int              `json:"attempt"`
	MaxAttempts  int              `json:"max_attempts,omitempty"`
	TimeoutMS    int64            `json:"timeout_ms,omitempty"`
	NotBefore    *time.Time       `json:"not_before,omitempty"`
	Compensation CompensationInfo `json:"_compensation"`
}

// CompensationOutcome is the data of compensation.completed,
// compensation.failed and compensation.retrying events. JobID names the job
// that was compensated.
type CompensationOutcome struct {
	BatchID    string          `json:"batch_id"`
	JobID      string          `json:"job_id"`
	Attempt    int             `json:"attempt"`
	Result     json.RawMessage `json:"result,omitempty"`
	Error      string          `json:"error,omitempty"`
	Reason     string          `json:"reason,omitempty"`
	RetryAt    *time.Time      `json:"retry_at,omitempty"`
	Deliveries int             `json:"deliveries"`
	DurationMS int64           `json:"duration_ms"`
}

// BatchLifecycle is the data of the lifecycle events batch.started,
// batch.completed, batch.failed, batch.compensating and batch.cancelled.
type BatchLifecycle struct {
	Batch BatchInfo `json:"batch"`
}

// EventRejected is the data of an event.rejected event.
type EventRejected struct {
	Subject  string `json:"subject"`
	Reason   string `json:"reason"`
	Sequence uint64 `json:"sequence"`
	// Data holds at most the first 1024 bytes of the rejected message.
	Data []byte `json:"data,omitempty"`
}
