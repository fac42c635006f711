package events

import (
	"encoding/json"
	"time"
)

// BatchStatus is the state of a batch.
type BatchStatus string

// Batch statuses. Completed, Failed and Cancelled are final.
const (
	// StatusPending is a batch whose submission the events stream holds but
	// the coordinator has not stored yet.
	StatusPending      BatchStatus = "pending"
	StatusRunning      BatchStatus = "running"
	StatusCompensating BatchStatus = "compensating"
	StatusCompleted    BatchStatus = "completed"
	StatusFailed       BatchStatus = "failed"
	StatusCancelled    BatchStatus = "cancelled"
)

// Final reports whether a batch in status s has settled for good.
func (s BatchStatus) Final() bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusCancelled
}

// JobStatus is the state of a job.
type JobStatus string

// Job statuses. Completed, Failed and Skipped are final.
const (
	// JobStatusPending is a stored job whose work is not yet published: a chain
	// step waiting for the steps before it, or a parallel job waiting for
	// the dispatcher.
	JobStatusPending JobStatus = "pending"
	// JobStatusQueued is a job whose work message is published.
	JobStatusQueued JobStatus = "queued"
	// JobStatusRetrying is a job whose last attempt failed and whose next attempt
	// is queued.
	JobStatusRetrying  JobStatus = "retrying"
	JobStatusCompleted JobStatus = "completed"
	JobStatusFailed    JobStatus = "failed"
	// JobStatusSkipped is a job that never ran because its batch settled first.
	JobStatusSkipped JobStatus = "skipped"
)

// Final reports whether a job in status s has finished for good.
func (s JobStatus) Final() bool {
	return s == JobStatusCompleted || s == JobStatusFailed || s == JobStatusSkipped
}

// CompensationStatus is the state of a job's compensation.
type CompensationStatus string

// Compensation statuses. The empty status means no compensation was needed.
const (
	CompensationStatusNone      CompensationStatus = ""
	CompensationStatusPending   CompensationStatus = "pending"
	CompensationStatusQueued    CompensationStatus = "queued"
	CompensationStatusRetrying  CompensationStatus = "retrying"
	CompensationStatusCompleted CompensationStatus = "completed"
	CompensationStatusFailed    CompensationStatus = "failed"
)

// Final reports whether a compensation in status s has finished.
func (s CompensationStatus) Final() bool {
	return s == CompensationStatusCompleted || s == CompensationStatusFailed
}

// BatchInfo is the read model of a batch.
type BatchInfo struct {
	ID        string      `json:"id"`
	Type      BatchType   `json:"type"`
	Status    BatchStatus `json:"status"`
	QueueName string      `json:"queue_name"`
	Queue     string      `json:"queue"`
	Total     int         `json:"total"`
	Completed int         `json:"completed"`
	Failed    int         `json:"failed"`
	// Skipped counts jobs that never ran because the batch settled first.
	Skipped int `json:"skipped"`
	// Progress is the whole-number percentage of jobs completed; failed and
	// skipped jobs do not count.
	Progress     int                `json:"progress"`
	Error        string             `json:"error,omitempty"`
	Compensation CompensationCounts `json:"compensation"`
	Callbacks    []CallbackState    `json:"callbacks,omitempty"`
	CreatedAt    time.Time          `json:"created_at"`
	FinishedAt   *time.Time         `json:"finished_at,omitempty"`
}

// CompensationCounts counts the compensations of a batch.
type CompensationCounts struct {
	Total     int `json:"total"`
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
}

// CallbackState is the state of one callback of a batch.
type CallbackState struct {
	Kind     CallbackKind    `json:"kind"`
	Name     string          `json:"name"`
	JobID    string          `json:"job_id"`
	Status   JobStatus       `json:"status"`
	Attempts int             `json:"attempts"`
	Result   json.RawMessage `json:"result,omitempty"`
	Error    string          `json:"error,omitempty"`
}

// JobInfo is the read model of a job.
type JobInfo struct {
	BatchID    string          `json:"batch_id"`
	ID         string          `json:"id"`
	Position   int             `json:"position"`
	Name       string          `json:"name"`
	Status     JobStatus       `json:"status"`
	Attempts   int             `json:"attempts"`
	Result     json.RawMessage `json:"result,omitempty"`
	Error      string          `json:"error,omitempty"`
	FinishedAt *time.Time      `json:"finished_at,omitempty"`
	// Compensation is empty for jobs whose compensation never ran.
	Compensation      CompensationStatus `json:"compensation,omitempty"`
	CompensationError string             `json:"compensation_error,omitempty"`
}

// ProgressOf returns the whole-number percentage of completed jobs, rounded
// down, so a batch shows 100 only when every job completed.
func ProgressOf(completed, total int) int {
	if total <= 0 {
		return 100
	}
	return completed * 100 / total
}
