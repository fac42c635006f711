package pgstore

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/batchq/batchq/store"
	"github.com/jackc/pgx/v5"
)

// insertBatchSQL inserts a batch row. A row that a concurrent update
// inserted first is left alone, and flush reports store.ErrConflict.
const insertBatchSQL = `INSERT INTO {schema}.batches (` + batchColumns + `)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25)
	ON CONFLICT (id) DO NOTHING`

// updateBatchSQL writes a batch row if its version and status are still the
// ones the transaction read. The status guard makes a settlement, a move
// from running or compensating to a final status, happen once even for a
// writer that bypassed the row lock.
const updateBatchSQL = `UPDATE {schema}.batches SET
		type = $2, status = $3, queue_name = $4, queue = $5, context = $6, options = $7,
		total = $8, completed = $9, failed = $10, skipped = $11, dispatching = $12, dispatched = $13, current = $14,
		walk = $15, walk_position = $16, error = $17,
		compensation_total = $18, compensation_completed = $19, compensation_failed = $20, cancelled = $21,
		created_at = $22, updated_at = $23, finished_at = $24, version = $25
	WHERE id = $1 AND version = $26 AND status = $27`

// updateJobsSQL writes the state of many jobs with one statement. A row
// whose status, attempt or compensation status is no longer the one the
// transaction read is not written, and flush compares the row count.
const updateJobsSQL = `UPDATE {schema}.jobs AS j SET
		status = u.status, attempt = u.attempt, result = u.result, error = u.error,
		finished_at = u.finished_at, compensation_status = u.compensation_status,
		compensation_attempt = u.compensation_attempt, compensation_error = u.compensation_error
	FROM unnest($1::text[], $2::text[], $3::text[], $4::integer[], $5::bytea[], $6::text[],
		$7::timestamptz[], $8::text[], $9::integer[], $10::text[],
		$11::text[], $12::integer[], $13::text[])
		AS u(batch_id, job_id, status, attempt, result, error,
		     finished_at, compensation_status, compensation_attempt, compensation_error,
		     old_status, old_attempt, old_compensation_status)
	WHERE j.batch_id = u.batch_id AND j.job_id = u.job_id
	  AND j.status = u.old_status AND j.attempt = u.old_attempt
	  AND j.compensation_status = u.old_compensation_status`

// insertOutboxSQL inserts messages in array order, so their keys grow in
// the order they were emitted. A message whose id is already waiting in the
// outbox is skipped, as the stream would drop it as a duplicate.
const insertOutboxSQL = `INSERT INTO {schema}.outbox (batch_id, subject, msg_id, type, data, created_at)
	SELECT u.batch_id, u.subject, u.msg_id, u.type, u.data, $6
	FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[]) WITH ORDINALITY
		AS u(batch_id, subject, msg_id, type, data, ord)
	ORDER BY u.ord
	ON CONFLICT (msg_id) DO NOTHING
	RETURNING key, msg_id`

// check reads the result of one queued write.
type check func(pgx.BatchResults) error

// flush writes every buffered change in one round trip: batch inserts and
// updates, one statement for all job updates and one for all messages. It
// returns the messages that were added to the outbox, in Emit order.
func (t *tx) flush(ctx context.Context) ([]store.OutboxMessage, error) {
	now := time.Now().UTC().Truncate(time.Microsecond)
	batch := &pgx.Batch{}
	var checks []check

	for _, id := range t.order {
		bs := t.batches[id]
		if !bs.changed {
			continue
		}
		c, err := t.queueBatchWrite(batch, id, bs, now)
		if err != nil {
			return nil, err
		}
		checks = append(checks, c)
	}
	if c := t.queueJobWrites(batch); c != nil {
		checks = append(checks, c)
	}
	var committed []store.OutboxMessage
	if len(t.outbox) > 0 {
		checks = append(checks, t.queueOutbox(batch, now, &committed))
	}
	if batch.Len() == 0 {
		return nil, nil
	}

	results := t.pg.SendBatch(ctx, batch)
	for _, c := range checks {
		if err := c(results); err != nil {
			results.Close()
			return nil, err
		}
	}
	if err := results.Close(); err != nil {
		return nil, fmt.Errorf("pgstore: write update: %w", err)
	}
	return committed, nil
}

// queueBatchWrite queues the insert of a created batch or the guarded
// update of a changed one.
func (t *tx) queueBatchWrite(batch *pgx.Batch, id string, bs *batchState, now time.Time) (check, error) {
	b := bs.cur
	b.UpdatedAt = now
	if bs.created {
		// SaveBatch after CreateBatch may pass a batch built from scratch.
		b.Version = 1
		if b.CreatedAt.IsZero() {
			b.CreatedAt = now
		}
	} else {
		b.Version = bs.read.Version + 1
	}
	options, err := json.Marshal(b.Options)
	if err != nil {
		return nil, fmt.Errorf("pgstore: encode options of batch %s: %w", id, err)
	}
	values := []any{b.ID, string(b.Type), string(b.Status), b.QueueName, b.Queue, []byte(b.Context), options,
		b.Total, b.Completed, b.Failed, b.Skipped, b.Dispatching, b.Dispatched, b.Current, string(b.Walk), b.WalkPosition, pgText(b.Error),
		b.CompensationTotal, b.CompensationCompleted, b.CompensationFailed, b.Cancelled,
		b.CreatedAt, b.UpdatedAt, b.FinishedAt, b.Version}

	if bs.created {
		batch.Queue(t.s.sql(insertBatchSQL), values...)
		return func(r pgx.BatchResults) error {
			tag, err := r.Exec()
			if err != nil {
				return fmt.Errorf("pgstore: insert batch %s: %w", id, err)
			}
			if tag.RowsAffected() != 1 {
				return fmt.Errorf("pgstore: batch %s was created by another update: %w", id, store.ErrConflict)
			}
			return nil
		}, nil
	}

	values = append(values, bs.read.Version, string(bs.read.Status))
	batch.Queue(t.s.sql(updateBatchSQL), values...)
	return func(r pgx.BatchResults) error {
		tag, err := r.Exec()
		if err != nil {
			return fmt.Errorf("pgstore: update batch %s: %w", id, err)
		}
		if tag.RowsAffected() != 1 {
			return fmt.Errorf("pgstore: batch %s changed since version %d with status %s: %w",
				id, bs.read.Version, bs.read.Status, store.ErrConflict)
		}
		return nil
	}, nil
}

// queueJobWrites queues one guarded update of every saved job, or returns
// nil when no job was saved.
func (t *tx) queueJobWrites(batch *pgx.Batch) check {
	var saved []*jobState
	for _, id := range t.order {
		for _, st := range t.batches[id].jobs {
			if st != nil && st.dirty {
				saved = append(saved, st)
			}
		}
	}
	if len(saved) == 0 {
		return nil
	}
	// A fixed order makes concurrent writers of the same rows lock them in
	// the same order.
	slices.SortFunc(saved, func(a, b *jobState) int {
		return cmp.Or(cmp.Compare(a.job.BatchID, b.job.BatchID), cmp.Compare(a.job.ID, b.job.ID))
	})

	n := len(saved)
	var (
		batchIDs, jobIDs, statuses, errs = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		compStatuses, compErrs           = make([]string, n), make([]string, n)
		oldStatuses, oldCompStatuses     = make([]string, n), make([]string, n)
		attempts, compAttempts           = make([]int32, n), make([]int32, n)
		oldAttempts                      = make([]int32, n)
		results                          = make([][]byte, n)
		finishedAt                       = make([]*time.Time, n)
	)
	for i, st := range saved {
		j := st.job
		batchIDs[i] = j.BatchID
		jobIDs[i] = j.ID
		statuses[i] = string(j.Status)
		attempts[i] = int32(j.Attempt)
		results[i] = j.Result
		errs[i] = pgText(j.Error)
		finishedAt[i] = j.FinishedAt
		compStatuses[i] = string(j.CompensationStatus)
		compAttempts[i] = int32(j.CompensationAttempt)
		compErrs[i] = pgText(j.CompensationError)
		oldStatuses[i] = string(st.stored.Status)
		oldAttempts[i] = int32(st.stored.Attempt)
		oldCompStatuses[i] = string(st.stored.CompensationStatus)
	}
	batch.Queue(t.s.sql(updateJobsSQL), batchIDs, jobIDs, statuses, attempts, results, errs,
		finishedAt, compStatuses, compAttempts, compErrs,
		oldStatuses, oldAttempts, oldCompStatuses)
	return func(r pgx.BatchResults) error {
		tag, err := r.Exec()
		if err != nil {
			return fmt.Errorf("pgstore: update %d jobs: %w", n, err)
		}
		if got := tag.RowsAffected(); got != int64(n) {
			return fmt.Errorf("pgstore: %d of %d saved jobs changed since the transaction read them: %w", int64(n)-got, n, store.ErrConflict)
		}
		return nil
	}
}

// queueOutbox queues the insert of every emitted message. Its check fills
// committed with the messages that were inserted.
func (t *tx) queueOutbox(batch *pgx.Batch, now time.Time, committed *[]store.OutboxMessage) check {
	n := len(t.outbox)
	batchIDs, subjects, msgIDs, types := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	data := make([][]byte, n)
	for i, m := range t.outbox {
		batchIDs[i] = m.BatchID
		subjects[i] = m.Subject
		msgIDs[i] = m.ID
		types[i] = string(m.Type)
		data[i] = m.Data
		if data[i] == nil {
			data[i] = []byte{}
		}
	}
	batch.Queue(t.s.sql(insertOutboxSQL), batchIDs, subjects, msgIDs, types, data, now)
	return func(r pgx.BatchResults) error {
		rows, err := r.Query()
		if err != nil {
			return fmt.Errorf("pgstore: insert %d outbox messages: %w", n, err)
		}
		keys := make(map[string]int64, n)
		var (
			key   int64
			msgID string
		)
		_, err = pgx.ForEachRow(rows, []any{&key, &msgID}, func() error {
			keys[msgID] = key
			return nil
		})
		if err != nil {
			return fmt.Errorf("pgstore: insert %d outbox messages: %w", n, err)
		}
		if len(keys) < n {
			t.s.log.Debug("pgstore: skipped outbox messages whose ids are already waiting", "skipped", n-len(keys))
		}
		for _, m := range t.outbox {
			key, ok := keys[m.ID]
			if !ok {
				continue
			}
			// A message emitted twice in one update is inserted once.
			delete(keys, m.ID)
			m.Key = strconv.FormatInt(key, 10)
			m.CreatedAt = now
			*committed = append(*committed, m)
		}
		return nil
	}
}
