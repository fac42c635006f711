package events

// Type is a CloudEvents type attribute. Every batchq type starts with
// TypePrefix, and the part after it is the last tokens of the event's subject.
type Type string

// TypePrefix starts every batchq event type.
const TypePrefix = "batchq."

// Event types consumed by the coordinator.
const (
	// TypeBatchJobs carries one chunk of a batch's jobs ahead of its submission.
	TypeBatchJobs Type = "batchq.batch.jobs"
	// TypeBatchSubmitted seals a batch: once the coordinator has stored it,
	// the batch runs.
	TypeBatchSubmitted Type = "batchq.batch.submitted"
	// TypeJobCompleted reports that a job or callback succeeded.
	TypeJobCompleted Type = "batchq.job.completed"
	// TypeJobFailed reports that a job or callback failed for good.
	TypeJobFailed Type = "batchq.job.failed"
	// TypeJobRetrying reports a failed attempt that will be retried.
	TypeJobRetrying Type = "batchq.job.retrying"
	// TypeJobSkipped reports a job that an executor did not run because its
	// batch had been cancelled.
	TypeJobSkipped Type = "batchq.job.skipped"
	// TypeJobsAdded carries jobs added to a running batch.
	TypeJobsAdded Type = "batchq.jobs.added"
	// TypeCompensationCompleted reports that a compensation job succeeded.
	TypeCompensationCompleted Type = "batchq.compensation.completed"
	// TypeCompensationFailed reports that a compensation job failed for good.
	TypeCompensationFailed Type = "batchq.compensation.failed"
	// TypeCompensationRetrying reports a failed compensation attempt that
	// will be retried.
	TypeCompensationRetrying Type = "batchq.compensation.retrying"
)

// Work types, published to the work stream.
const (
	// TypeJobQueued is a job, a callback or a chain step ready to run.
	TypeJobQueued Type = "batchq.job.queued"
	// TypeCompensationQueued is a compensation job ready to run.
	TypeCompensationQueued Type = "batchq.compensation.queued"
)

// Lifecycle types, published by the coordinator for taps and waiting clients.
const (
	// TypeBatchStarted reports that a batch was stored and its work published.
	TypeBatchStarted Type = "batchq.batch.started"
	// TypeBatchCompleted reports that a batch settled as completed.
	TypeBatchCompleted Type = "batchq.batch.completed"
	// TypeBatchFailed reports that a batch settled as failed.
	TypeBatchFailed Type = "batchq.batch.failed"
	// TypeBatchCompensating reports that a failed or cancelled batch started
	// running compensations.
	TypeBatchCompensating Type = "batchq.batch.compensating"
	// TypeBatchCancelled reports that a batch was cancelled.
	TypeBatchCancelled Type = "batchq.batch.cancelled"
	// TypeJobsAccepted reports that a jobs.added event was stored.
	TypeJobsAccepted Type = "batchq.jobs.accepted"
	// TypeJobsRejected reports that a jobs.added event was rejected.
	TypeJobsRejected Type = "batchq.jobs.rejected"
	// TypeEventRejected reports a malformed event that the coordinator
	// terminated.
	TypeEventRejected Type = "batchq.event.rejected"
)

// Name returns the type without TypePrefix, for example "job.completed".
func (t Type) Name() string {
	return string(t)[len(TypePrefix):]
}

// CoordinatorInputs lists the types that the coordinator consumes.
var CoordinatorInputs = []Type{
	TypeBatchJobs,
	TypeBatchSubmitted,
	TypeJobCompleted,
	TypeJobFailed,
	TypeJobRetrying,
	TypeJobSkipped,
	TypeJobsAdded,
	TypeCompensationCompleted,
	TypeCompensationFailed,
	TypeCompensationRetrying,
}

var knownTypes = map[Type]bool{}

func init() {
	for _, t := range CoordinatorInputs {
		knownTypes[t] = true
	}
	for _, t := range []Type{
		TypeJobQueued, TypeCompensationQueued, TypeBatchStarted, TypeBatchCompleted,
		TypeBatchFailed, TypeBatchCompensating, TypeBatchCancelled, TypeJobsAccepted,
		TypeJobsRejected, TypeEventRejected,
	} {
		knownTypes[t] = true
	}
}

// Known reports whether t is a batchq event type.
func (t Type) Known() bool {
	return knownTypes[t]
}
