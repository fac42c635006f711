package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// StageJobs implements store.Store. The chunk's positions must be
// contiguous. Staging a chunk again changes nothing when it covers the same
// positions. A new chunk for a batch that already exists is rejected with
// store.ErrExists, and one whose ids or positions overlap another chunk with
// store.ErrInvalidJobs.
func (s *Store) StageJobs(ctx context.Context, batchID string, chunk int, jobs []*store.Job) error {
	arrays, err := validateChunk(batchID, chunk, jobs)
	if err != nil {
		return err
	}
	first, count := jobs[0].Position, len(jobs)
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := s.lockStaging(ctx, tx, batchID); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, s.sql(`INSERT INTO {schema}.batch_chunks (batch_id, chunk, first_position, count)
			VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`), batchID, chunk, first, count)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return s.checkRestagedChunk(ctx, tx, batchID, chunk, first, count)
		}
		var sealed bool
		if err := tx.QueryRow(ctx, s.sql("SELECT EXISTS (SELECT 1 FROM {schema}.batches WHERE id = $1)"), batchID).Scan(&sealed); err != nil {
			return err
		}
		if sealed {
			return fmt.Errorf("pgstore: chunk %d of batch %s arrived after the batch was created: %w", chunk, batchID, store.ErrExists)
		}
		rows, err := tx.Query(ctx, s.sql(insertJobsSQL), arrays.insertArgs(batchID)...)
		if err != nil {
			return err
		}
		inserted, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		if len(inserted) != count {
			return fmt.Errorf("%w: chunk %d of batch %s (positions %d to %d) has %d jobs whose id or position another chunk already staged",
				store.ErrInvalidJobs, chunk, batchID, first, first+count-1, count-len(inserted))
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, store.ErrInvalidJobs) || errors.Is(err, store.ErrExists) {
			return err
		}
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "22") {
			// A data exception: no retry can store these jobs.
			return fmt.Errorf("%w: chunk %d of batch %s: %v", store.ErrInvalidJobs, chunk, batchID, err)
		}
		return fmt.Errorf("pgstore: stage chunk %d of batch %s: %w", chunk, batchID, err)
	}
	return nil
}

// lockStaging takes a transaction lock on staging the jobs of one batch, so
// that a chunk staged while the batch is being created either lands before
// the creation counts the staged jobs, or sees the batch and is rejected.
// The batch row cannot serve, because it does not exist before the commit.
func (s *Store) lockStaging(ctx context.Context, tx pgx.Tx, batchID string) error {
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", s.schema+" stage "+batchID); err != nil {
		return fmt.Errorf("pgstore: lock staging of batch %s: %w", batchID, err)
	}
	return nil
}

// validateChunk checks a chunk for StageJobs and returns its jobs as
// arrays. Every job is stored with role job.
func validateChunk(batchID string, chunk int, jobs []*store.Job) (*jobArrays, error) {
	if batchID == "" {
		return nil, fmt.Errorf("%w: empty batch id", store.ErrInvalidJobs)
	}
	if chunk < 0 {
		return nil, fmt.Errorf("%w: chunk number %d of batch %s is negative", store.ErrInvalidJobs, chunk, batchID)
	}
	if len(jobs) == 0 {
		return nil, fmt.Errorf("%w: chunk %d of batch %s has no jobs", store.ErrInvalidJobs, chunk, batchID)
	}
	first := jobs[0].Position
	if first < 0 {
		return nil, fmt.Errorf("%w: chunk %d of batch %s starts at negative position %d", store.ErrInvalidJobs, chunk, batchID, first)
	}
	arrays := newJobArrays(len(jobs))
	seen := make(map[string]bool, len(jobs))
	for i, j := range jobs {
		switch {
		case j.Position != first+i:
			return nil, fmt.Errorf("%w: chunk %d of batch %s has job %q at position %d, expected position %d",
				store.ErrInvalidJobs, chunk, batchID, j.ID, j.Position, first+i)
		case j.ID != strconv.Itoa(j.Position):
			return nil, fmt.Errorf("%w: chunk %d of batch %s has job id %q at position %d; a job's id is its position in decimal", store.ErrInvalidJobs, chunk, batchID, j.ID, j.Position)
		case seen[j.ID]:
			return nil, fmt.Errorf("%w: chunk %d of batch %s has job id %q twice", store.ErrInvalidJobs, chunk, batchID, j.ID)
		case j.Role != events.RoleJob && j.Role != "":
			return nil, fmt.Errorf("%w: chunk %d of batch %s has job %q with role %q; only jobs are staged", store.ErrInvalidJobs, chunk, batchID, j.ID, j.Role)
		case j.BatchID != "" && j.BatchID != batchID:
			return nil, fmt.Errorf("%w: chunk %d of batch %s has job %q of batch %s", store.ErrInvalidJobs, chunk, batchID, j.ID, j.BatchID)
		}
		seen[j.ID] = true
		arrays.add(j)
		arrays.roles[i] = string(events.RoleJob)
	}
	return arrays, nil
}

// checkRestagedChunk accepts a chunk staged again with the positions it was
// first staged with.
func (s *Store) checkRestagedChunk(ctx context.Context, tx pgx.Tx, batchID string, chunk, first, count int) error {
	var storedFirst, storedCount int32
	err := tx.QueryRow(ctx, s.sql(`SELECT first_position, count FROM {schema}.batch_chunks
		WHERE batch_id = $1 AND chunk = $2`), batchID, chunk).Scan(&storedFirst, &storedCount)
	if err != nil {
		return err
	}
	if int(storedFirst) != first || int(storedCount) != count {
		return fmt.Errorf("%w: chunk %d of batch %s was staged with positions %d to %d, not %d to %d",
			store.ErrInvalidJobs, chunk, batchID, storedFirst, storedFirst+storedCount-1, first, first+count-1)
	}
	return nil
}

// Batch implements store.Store.
func (s *Store) Batch(ctx context.Context, id string) (*store.Batch, error) {
	b, err := scanBatch(s.pool.QueryRow(ctx, s.sql("SELECT "+batchColumns+" FROM {schema}.batches WHERE id = $1"), id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("batch %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("pgstore: read batch %s: %w", id, err)
	}
	return b, nil
}

// batchExists reports whether a batch row exists.
func (s *Store) batchExists(ctx context.Context, id string) (bool, error) {
	var exists bool
	err := s.pool.QueryRow(ctx, s.sql("SELECT EXISTS (SELECT 1 FROM {schema}.batches WHERE id = $1)"), id).Scan(&exists)
	if err != nil {
		return false, fmt.Errorf("pgstore: look up batch %s: %w", id, err)
	}
	return exists, nil
}

// Job implements store.Store. Jobs of a batch that is staged but not yet
// created are not found.
func (s *Store) Job(ctx context.Context, batchID, jobID string) (*store.Job, error) {
	j, err := scanJob(s.pool.QueryRow(ctx, s.sql("SELECT "+jobColumns+` FROM {schema}.jobs
		WHERE batch_id = $1 AND job_id = $2
		  AND EXISTS (SELECT 1 FROM {schema}.batches WHERE id = $1)`), batchID, jobID))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("job %s of batch %s: %w", jobID, batchID, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("pgstore: read job %s of batch %s: %w", jobID, batchID, err)
	}
	return j, nil
}

// Jobs implements store.Store. It returns store.ErrNotFound when the batch
// does not exist.
func (s *Store) Jobs(ctx context.Context, batchID string, after, limit int) ([]*store.Job, error) {
	if limit <= 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, s.sql("SELECT "+jobColumns+` FROM {schema}.jobs
		WHERE batch_id = $1 AND role = 'job' AND position > $2
		  AND EXISTS (SELECT 1 FROM {schema}.batches WHERE id = $1)
		ORDER BY position
		LIMIT $3`), batchID, max(after, -1), limit)
	if err != nil {
		return nil, fmt.Errorf("pgstore: read jobs of batch %s: %w", batchID, err)
	}
	jobs, err := collectJobs(rows)
	if err != nil {
		return nil, fmt.Errorf("pgstore: read jobs of batch %s: %w", batchID, err)
	}
	if len(jobs) == 0 {
		return nil, s.requireBatch(ctx, batchID)
	}
	return jobs, nil
}

// requireBatch returns store.ErrNotFound when the batch does not exist.
func (s *Store) requireBatch(ctx context.Context, batchID string) error {
	exists, err := s.batchExists(ctx, batchID)
	if err != nil {
		return err
	}
	if !exists {
		return fmt.Errorf("batch %s: %w", batchID, store.ErrNotFound)
	}
	return nil
}

// Callbacks implements store.Store. It returns the on_complete and
// on_failure callbacks in the order they were stored.
func (s *Store) Callbacks(ctx context.Context, batchID string) ([]*store.Job, error) {
	rows, err := s.pool.Query(ctx, s.sql("SELECT "+jobColumns+` FROM {schema}.jobs
		WHERE batch_id = $1 AND role = 'callback' AND job_id = ANY($2)
		  AND EXISTS (SELECT 1 FROM {schema}.batches WHERE id = $1)
		ORDER BY created_at, job_id`),
		batchID, []string{string(events.OnComplete), string(events.OnFailure)})
	if err != nil {
		return nil, fmt.Errorf("pgstore: read callbacks of batch %s: %w", batchID, err)
	}
	jobs, err := collectJobs(rows)
	if err != nil {
		return nil, fmt.Errorf("pgstore: read callbacks of batch %s: %w", batchID, err)
	}
	if len(jobs) == 0 {
		return nil, s.requireBatch(ctx, batchID)
	}
	return jobs, nil
}

// Undispatched implements store.Store. Ids come in id order.
func (s *Store) Undispatched(ctx context.Context, limit int) ([]string, error) {
	if limit <= 0 {
		return nil, nil
	}
	// The WHERE clause repeats the predicate of batches_dispatch_work_idx
	// so that the planner can use the index.
	rows, err := s.pool.Query(ctx, s.sql(`SELECT id FROM {schema}.batches
		WHERE type = 'parallel'
		  AND ((status = 'running' AND dispatching < total) OR dispatched < dispatching)
		ORDER BY id
		LIMIT $1`), limit)
	if err != nil {
		return nil, fmt.Errorf("pgstore: list undispatched batches: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("pgstore: list undispatched batches: %w", err)
	}
	return ids, nil
}

// Outbox implements store.Store.
func (s *Store) Outbox(ctx context.Context, cutoff time.Time, limit int) ([]store.OutboxMessage, error) {
	if limit <= 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, s.sql(`SELECT key, batch_id, subject, msg_id, type, data, created_at
		FROM {schema}.outbox
		WHERE created_at < $1
		ORDER BY created_at, key
		LIMIT $2`), cutoff, limit)
	if err != nil {
		return nil, fmt.Errorf("pgstore: read outbox: %w", err)
	}
	msgs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.OutboxMessage, error) {
		var (
			m   store.OutboxMessage
			key int64
			typ string
		)
		if err := row.Scan(&key, &m.BatchID, &m.Subject, &m.ID, &typ, &m.Data, &m.CreatedAt); err != nil {
			return m, err
		}
		m.Key = strconv.FormatInt(key, 10)
		m.Type = events.Type(typ)
		m.CreatedAt = m.CreatedAt.UTC()
		return m, nil
	})
	if err != nil {
		return nil, fmt.Errorf("pgstore: read outbox: %w", err)
	}
	return msgs, nil
}

// DeleteOutbox implements store.Store.
func (s *Store) DeleteOutbox(ctx context.Context, msgs []store.OutboxMessage) error {
	if len(msgs) == 0 {
		return nil
	}
	keys := make([]int64, len(msgs))
	for i, m := range msgs {
		key, err := strconv.ParseInt(m.Key, 10, 64)
		if err != nil {
			return fmt.Errorf("pgstore: outbox message %s has key %q, which is not a key of this store", m.ID, m.Key)
		}
		keys[i] = key
	}
	if _, err := s.pool.Exec(ctx, s.sql("DELETE FROM {schema}.outbox WHERE key = ANY($1)"), keys); err != nil {
		return fmt.Errorf("pgstore: delete %d outbox messages: %w", len(keys), err)
	}
	return nil
}

// RecordRejected implements store.Store. It keeps the newest
// Config.MaxRejected events.
func (s *Store) RecordRejected(ctx context.Context, ev events.EventRejected) error {
	// The DELETE does not see the row that the same statement inserts, so
	// it keeps MaxRejected-1 older rows next to the new one.
	_, err := s.pool.Exec(ctx, s.sql(`WITH inserted AS (
			INSERT INTO {schema}.rejected_events (subject, reason, sequence, data)
			VALUES ($1, $2, $3::text::numeric, $4)
		)
		DELETE FROM {schema}.rejected_events
		WHERE id <= (SELECT id FROM {schema}.rejected_events ORDER BY id DESC OFFSET $5 LIMIT 1)`),
		pgText(ev.Subject), pgText(ev.Reason), strconv.FormatUint(ev.Sequence, 10), ev.Data, s.cfg.MaxRejected-1)
	if err != nil {
		return fmt.Errorf("pgstore: record rejected event from %s: %w", ev.Subject, err)
	}
	return nil
}

// Rejected implements store.Store.
func (s *Store) Rejected(ctx context.Context, limit int) ([]events.EventRejected, error) {
	if limit <= 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, s.sql(`SELECT subject, reason, sequence::text, data
		FROM {schema}.rejected_events
		ORDER BY id DESC
		LIMIT $1`), limit)
	if err != nil {
		return nil, fmt.Errorf("pgstore: read rejected events: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (events.EventRejected, error) {
		var (
			ev  events.EventRejected
			seq string
		)
		if err := row.Scan(&ev.Subject, &ev.Reason, &seq, &ev.Data); err != nil {
			return ev, err
		}
		n, err := strconv.ParseUint(seq, 10, 64)
		if err != nil {
			return ev, fmt.Errorf("sequence %q: %w", seq, err)
		}
		ev.Sequence = n
		return ev, nil
	})
	if err != nil {
		return nil, fmt.Errorf("pgstore: read rejected events: %w", err)
	}
	return out, nil
}

// pruneSQL deletes up to $2 final batches that settled before $1, with
// their jobs, chunks, additions and outbox messages, in one statement.
// Batches that an Update holds locked are skipped until the next Prune.
const pruneSQL = `WITH doomed AS (
		SELECT id FROM {schema}.batches
		WHERE status IN ('completed', 'failed', 'cancelled')
		  AND COALESCE(finished_at, updated_at) < $1
		ORDER BY COALESCE(finished_at, updated_at)
		LIMIT $2
		FOR UPDATE SKIP LOCKED
	),
	deleted_jobs AS (
		DELETE FROM {schema}.jobs WHERE batch_id IN (SELECT id FROM doomed)
	),
	deleted_chunks AS (
		DELETE FROM {schema}.batch_chunks WHERE batch_id IN (SELECT id FROM doomed)
	),
	deleted_additions AS (
		DELETE FROM {schema}.additions WHERE batch_id IN (SELECT id FROM doomed)
	),
	deleted_outbox AS (
		DELETE FROM {schema}.outbox WHERE batch_id IN (SELECT id FROM doomed)
	)
	DELETE FROM {schema}.batches WHERE id IN (SELECT id FROM doomed)`

// Prune implements store.Store. It deletes Config.PruneChunk batches per
// statement, each statement in its own transaction, so a large prune never
// holds one long transaction. A batch that is final but has no finished_at
// counts as finished at its last update.
//
// NOTE: staged chunks of a batch that was never created are kept.
func (s *Store) Prune(ctx context.Context, cutoff time.Time) (int, error) {
	pruned := 0
	for {
		tag, err := s.pool.Exec(ctx, s.sql(pruneSQL), cutoff, s.cfg.PruneChunk)
		if err != nil {
			return pruned, fmt.Errorf("pgstore: prune batches finished before %s: %w", cutoff.Format(time.RFC3339), err)
		}
		n := int(tag.RowsAffected())
		pruned += n
		if n < s.cfg.PruneChunk {
			return pruned, nil
		}
	}
}
