// Package store defines where the coordinator keeps batch and job state: the
// Store interface, its state types and its errors.
//
// A Store changes state only inside Update, which applies a function to a set
// of batches atomically together with the outbox messages that the change
// calls for. The coordinator publishes those messages after the commit and
// deletes them once the stream has stored them, so a crash between commit
// and publish delays messages but never loses them.
//
// Implementations: store/kvstore (JetStream KV, the embedded default) and
// store/pgstore (Postgres). store/storetest holds the conformance suite that
// both pass.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/batchq/batchq/events"
)

var (
	// ErrNotFound reports a batch, job or addition that is not stored.
	ErrNotFound = errors.New("not found")
	// ErrExists reports a batch that is already stored.
	ErrExists = errors.New("already exists")
	// ErrConflict reports a change that lost a race with another writer.
	// Update retries on it; callers outside Update never see it.
	ErrConflict = errors.New("conflicting update")
)

// Store keeps batch and job state.
type Store interface {
	// StageJobs stores one chunk of a batch's jobs before the batch itself
	// exists. Staging a chunk again, with the same jobs, changes nothing.
	StageJobs(ctx context.Context, batchID string, chunk int, jobs []*Job) error

	// Update runs fn once with a transaction over the batches in batchIDs
	// and commits what fn changed, with the messages it emitted, atomically
	// per batch. It retries fn after a conflict, so fn must not act outside
	// the transaction. It returns the committed outbox messages. When fn
	// returns an error nothing is committed and Update returns that error.
	Update(ctx context.Context, batchIDs []string, fn func(Tx) error) ([]OutboxMessage, error)

	// Batch returns a batch, or ErrNotFound.
	Batch(ctx context.Context, id string) (*Batch, error)
	// Job returns one job or callback of a batch, or ErrNotFound.
	Job(ctx context.Context, batchID, jobID string) (*Job, error)
	// Jobs returns up to limit jobs of a batch with positions above after,
	// in position order. Callbacks are not included.
	Jobs(ctx context.Context, batchID string, after, limit int) ([]*Job, error)
	// Callbacks returns the callbacks of a batch that were queued, in the
	// order they were stored, without per-job failure callbacks.
	Callbacks(ctx context.Context, batchID string) ([]*Job, error)

	// Undispatched returns the ids of up to limit parallel batches that a
	// dispatcher has work on: running ones with Dispatching below Total,
	// and any with Dispatched below Dispatching.
	Undispatched(ctx context.Context, limit int) ([]string, error)

	// Outbox returns up to limit outbox messages created before cutoff,
	// oldest first.
	Outbox(ctx context.Context, cutoff time.Time, limit int) ([]OutboxMessage, error)
	// DeleteOutbox removes messages that the stream has stored. Removing a
	// message twice is not an error.
	DeleteOutbox(ctx context.Context, msgs []OutboxMessage) error

	// RecordRejected stores a malformed event with the reason it was
	// rejected.
	RecordRejected(ctx context.Context, ev events.EventRejected) error
	// Rejected returns up to limit rejected events, newest first.
	Rejected(ctx context.Context, limit int) ([]events.EventRejected, error)

	// Prune removes batches that became final before cutoff, with their
	// jobs, results and staged chunks. Running batches are never removed.
	// It returns how many batches it removed.
	Prune(ctx context.Context, cutoff time.Time) (int, error)

	// Close releases the store's resources.
	Close() error
}

// Tx is the view of a set of batches inside Store.Update. Objects it returns
// are copies; changes take effect through the Save and Insert methods and
// are committed when the update function returns nil.
type Tx interface {
	// Batch returns a batch named in the Update call, or ErrNotFound.
	Batch(id string) (*Batch, error)
	// StagedChunks counts the chunks staged for a batch.
	StagedChunks(ctx context.Context, batchID string) (int, error)
	// CreateBatch stores a new batch whose jobs are staged, or returns
	// ErrExists. Its Version starts at 1.
	CreateBatch(ctx context.Context, b *Batch) error
	// SaveBatch stores changes to a batch returned by Batch.
	SaveBatch(b *Batch)

	// Jobs returns the stored jobs and callbacks with the given ids, keyed
	// by id. Ids that are not stored are absent from the map.
	Jobs(ctx context.Context, batchID string, ids []string) (map[string]*Job, error)
	// JobAt returns the job at a position, or ErrNotFound.
	JobAt(ctx context.Context, batchID string, position int) (*Job, error)
	// PrevCompensable returns the job with the highest position below
	// before that has a compensation whose status is none and whose own
	// status is completed or failed, or ErrNotFound.
	PrevCompensable(ctx context.Context, batchID string, before int) (*Job, error)
	// SaveJob stores changes to a job or callback returned by Jobs, JobAt
	// or PrevCompensable.
	SaveJob(j *Job)
	// InsertJobs stores new jobs or callbacks. Jobs need positions from
	// Batch.Total onwards; callbacks have position -1.
	InsertJobs(ctx context.Context, batchID string, jobs []*Job) error
	// RecordAddition records that a jobs.added event was applied or
	// rejected. Additions of jobs are recorded after InsertJobs.
	RecordAddition(ctx context.Context, batchID string, a Addition) error
	// Additions returns the recorded additions of a batch among addIDs,
	// keyed by id.
	Additions(ctx context.Context, batchID string, addIDs []string) (map[string]Addition, error)

	// Emit adds messages to the outbox of a batch, to be published after
	// the commit.
	Emit(batchID string, msgs ...events.Message)
}

// OutboxMessage is a message waiting in the outbox.
type OutboxMessage struct {
	events.Message
	BatchID   string
	CreatedAt time.Time
	// Key identifies the message inside the store.
	Key string
}

// Addition records a jobs.added event that was applied or rejected.
type Addition struct {
	ID            string
	FirstPosition int
	Count         int
	// Code is empty when the jobs were stored, and otherwise the events.Code
	// of the rejection.
	Code string
	// Error explains a rejection.
	Error string
}

// ErrInvalidJobs reports staged jobs that do not match the batch that seals
// them: a gap, an overlap or a different total.
var ErrInvalidJobs = errors.New("staged jobs do not match the batch")

// Compensable reports whether j's compensation should run when its batch
// is undone: it names one, that has not run, and the job took effect or
// failed after possibly taking effect.
func Compensable(j *Job) bool {
	if j.Compensation == nil || j.CompensationStatus != events.CompensationStatusNone {
		return false
	}
	return j.Status == events.JobStatusCompleted || j.Status == events.JobStatusFailed
}
