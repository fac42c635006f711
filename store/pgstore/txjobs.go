package pgstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/store"
	"github.com/jackc/pgx/v5"
)

// Jobs implements store.Tx. Jobs that the transaction already read come
// from its cache, with the changes saved so far. The others are read with
// one query.
func (t *tx) Jobs(ctx context.Context, batchID string, ids []string) (map[string]*store.Job, error) {
	bs, err := t.existing(batchID)
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, id := range ids {
		if _, cached := bs.jobs[id]; !cached {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		rows, err := t.pg.Query(ctx, t.s.sql("SELECT "+jobColumns+" FROM {schema}.jobs WHERE batch_id = $1 AND job_id = ANY($2)"), batchID, missing)
		if err != nil {
			return nil, fmt.Errorf("pgstore: read %d jobs of batch %s: %w", len(missing), batchID, err)
		}
		jobs, err := collectJobs(rows)
		if err != nil {
			return nil, fmt.Errorf("pgstore: read %d jobs of batch %s: %w", len(missing), batchID, err)
		}
		for _, id := range missing {
			bs.jobs[id] = nil
		}
		for _, j := range jobs {
			bs.jobs[j.ID] = &jobState{stored: j, job: j.Clone()}
		}
	}
	out := make(map[string]*store.Job, len(ids))
	for _, id := range ids {
		if st := bs.jobs[id]; st != nil {
			out[id] = st.job.Clone()
		}
	}
	return out, nil
}

// cacheRow returns the cached state of a job row that a query returned,
// adding the row when the job was not cached. A cached job may carry saved
// changes that the row does not have yet.
func (bs *batchState) cacheRow(j *store.Job) *jobState {
	if st := bs.jobs[j.ID]; st != nil {
		return st
	}
	st := &jobState{stored: j, job: j.Clone()}
	bs.jobs[j.ID] = st
	return st
}

// JobAt implements store.Tx.
func (t *tx) JobAt(ctx context.Context, batchID string, position int) (*store.Job, error) {
	bs, err := t.existing(batchID)
	if err != nil {
		return nil, err
	}
	j, err := scanJob(t.pg.QueryRow(ctx, t.s.sql("SELECT "+jobColumns+` FROM {schema}.jobs
		WHERE batch_id = $1 AND role = 'job' AND position = $2`), batchID, position))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("job at position %d of batch %s: %w", position, batchID, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("pgstore: read job at position %d of batch %s: %w", position, batchID, err)
	}
	return bs.cacheRow(j).job.Clone(), nil
}

// PrevCompensable implements store.Tx. The query reads the rows without
// this transaction's buffered job writes, so jobs saved in the transaction
// are judged by their saved state instead of their rows.
func (t *tx) PrevCompensable(ctx context.Context, batchID string, before int) (*store.Job, error) {
	bs, err := t.existing(batchID)
	if err != nil {
		return nil, err
	}
	// The best saved job is the result unless a row above it qualifies.
	var best *jobState
	for _, st := range bs.jobs {
		if st == nil || !st.dirty || st.job.Role != events.RoleJob || st.job.Position >= before || !store.Compensable(st.job) {
			continue
		}
		if best == nil || st.job.Position > best.job.Position {
			best = st
		}
	}
	floor := -1
	if best != nil {
		floor = best.job.Position
	}
	upper := before
	for {
		j, err := scanJob(t.pg.QueryRow(ctx, t.s.sql("SELECT "+jobColumns+` FROM {schema}.jobs
			WHERE batch_id = $1 AND role = 'job' AND position < $2 AND position > $3
			  AND compensation_name IS NOT NULL AND compensation_status = ''
			  AND status IN ('completed', 'failed')
			ORDER BY position DESC
			LIMIT 1`), batchID, upper, floor))
		if errors.Is(err, pgx.ErrNoRows) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("pgstore: find compensable job before position %d of batch %s: %w", before, batchID, err)
		}
		st := bs.cacheRow(j)
		if !st.dirty {
			return st.job.Clone(), nil
		}
		// The row qualifies but the saved job was already judged above.
		upper = j.Position
	}
	if best != nil {
		return best.job.Clone(), nil
	}
	return nil, fmt.Errorf("compensable job before position %d of batch %s: %w", before, batchID, store.ErrNotFound)
}

// SaveJob implements store.Tx. It writes the job's state: status, attempt,
// result, error, finished time and compensation state. The spec fields are
// fixed when the job is stored, so a change to one makes Update fail.
func (t *tx) SaveJob(j *store.Job) {
	bs, err := t.existing(j.BatchID)
	if err != nil {
		t.fail(fmt.Errorf("pgstore: SaveJob of job %s for a batch that the transaction did not read: %w", j.ID, err))
		return
	}
	st := bs.jobs[j.ID]
	if st == nil {
		t.fail(fmt.Errorf("pgstore: SaveJob of job %s of batch %s, which the transaction did not read", j.ID, j.BatchID))
		return
	}
	if field := changedSpecField(st.stored, j); field != "" {
		t.fail(fmt.Errorf("pgstore: SaveJob changes the %s of job %s of batch %s; only the job's state can change", field, j.ID, j.BatchID))
		return
	}
	st.job = j.Clone()
	st.dirty = true
	bs.changed = true
}

// changedSpecField names the first spec field that differs between a and
// b, or returns "".
func changedSpecField(a, b *store.Job) string {
	switch {
	case a.Position != b.Position:
		return "position"
	case a.Role != b.Role:
		return "role"
	case a.Name != b.Name:
		return "name"
	case !bytes.Equal(a.Args, b.Args):
		return "args"
	case (a.Compensation == nil) != (b.Compensation == nil):
		return "compensation"
	case a.Compensation != nil && (a.Compensation.Name != b.Compensation.Name || !bytes.Equal(a.Compensation.Args, b.Compensation.Args)):
		return "compensation"
	case a.MaxAttempts != b.MaxAttempts:
		return "max attempts"
	case a.TimeoutMS != b.TimeoutMS:
		return "timeout"
	case a.ParentID != b.ParentID:
		return "parent id"
	}
	return ""
}

// InsertJobs implements store.Tx. Jobs need contiguous positions starting
// at the batch's stored total, callbacks position -1. The jobs are written
// at once with one statement, so later reads in the transaction see them.
// An id that is already stored gives an error wrapping store.ErrExists.
func (t *tx) InsertJobs(ctx context.Context, batchID string, jobs []*store.Job) error {
	bs, err := t.existing(batchID)
	if err != nil {
		return err
	}
	if len(jobs) == 0 {
		return nil
	}
	arrays, count, err := validateInsert(bs, batchID, jobs)
	if err != nil {
		return err
	}

	rows, err := t.pg.Query(ctx, t.s.sql(insertJobsSQL), arrays.insertArgs(batchID)...)
	if err != nil {
		return fmt.Errorf("pgstore: insert %d jobs into batch %s: %w", len(jobs), batchID, err)
	}
	inserted, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("pgstore: insert %d jobs into batch %s: %w", len(jobs), batchID, err)
	}
	if len(inserted) != len(jobs) {
		err := fmt.Errorf("job ids %s of batch %s: %w", strings.Join(notInserted(jobs, inserted), ", "), batchID, store.ErrExists)
		if len(inserted) > 0 {
			// Part of the jobs are written: the transaction must not commit.
			t.fail(err)
		}
		return err
	}

	for _, j := range jobs {
		row := j.Clone()
		row.BatchID = batchID
		bs.jobs[j.ID] = &jobState{stored: row, job: row.Clone()}
	}
	bs.jobEnd += count
	bs.changed = true
	return nil
}

// validateInsert checks jobs for InsertJobs and returns them as arrays with
// the count of role-job entries.
func validateInsert(bs *batchState, batchID string, jobs []*store.Job) (*jobArrays, int, error) {
	arrays := newJobArrays(len(jobs))
	count := 0
	seen := make(map[string]bool, len(jobs))
	for _, j := range jobs {
		switch {
		case j.ID == "":
			return nil, 0, fmt.Errorf("%w: job without an id for batch %s", store.ErrInvalidJobs, batchID)
		case seen[j.ID]:
			return nil, 0, fmt.Errorf("%w: job id %q given twice for batch %s", store.ErrInvalidJobs, j.ID, batchID)
		case j.BatchID != "" && j.BatchID != batchID:
			return nil, 0, fmt.Errorf("%w: job %q of batch %s inserted into batch %s", store.ErrInvalidJobs, j.ID, j.BatchID, batchID)
		}
		seen[j.ID] = true
		switch j.Role {
		case events.RoleCallback:
			if j.Position != -1 {
				return nil, 0, fmt.Errorf("%w: callback %q of batch %s has position %d, expected -1", store.ErrInvalidJobs, j.ID, batchID, j.Position)
			}
		case events.RoleJob:
			if want := bs.jobEnd + count; j.Position != want {
				return nil, 0, fmt.Errorf("%w: added job %q of batch %s has position %d, expected %d", store.ErrInvalidJobs, j.ID, batchID, j.Position, want)
			}
			if j.ID != strconv.Itoa(j.Position) {
				return nil, 0, fmt.Errorf("%w: added job %q of batch %s has position %d; a job's id is its position in decimal", store.ErrInvalidJobs, j.ID, batchID, j.Position)
			}
			count++
		default:
			return nil, 0, fmt.Errorf("%w: job %q of batch %s has role %q, expected job or callback", store.ErrInvalidJobs, j.ID, batchID, j.Role)
		}
		arrays.add(j)
	}
	return arrays, count, nil
}

// notInserted returns the ids of jobs that are not among inserted.
func notInserted(jobs []*store.Job, inserted []string) []string {
	done := make(map[string]bool, len(inserted))
	for _, id := range inserted {
		done[id] = true
	}
	var out []string
	for _, j := range jobs {
		if !done[j.ID] {
			out = append(out, j.ID)
		}
	}
	return out
}

// RecordAddition implements store.Tx. An add id that is already recorded
// gives an error wrapping store.ErrExists.
func (t *tx) RecordAddition(ctx context.Context, batchID string, a store.Addition) error {
	bs, err := t.existing(batchID)
	if err != nil {
		return err
	}
	if a.ID == "" {
		return fmt.Errorf("pgstore: addition of batch %s has no id", batchID)
	}
	tag, err := t.pg.Exec(ctx, t.s.sql(`INSERT INTO {schema}.additions (batch_id, add_id, first_position, count, code, error)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`), batchID, a.ID, a.FirstPosition, a.Count, a.Code, pgText(a.Error))
	if err != nil {
		return fmt.Errorf("pgstore: record addition %s of batch %s: %w", a.ID, batchID, err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("addition %s of batch %s: %w", a.ID, batchID, store.ErrExists)
	}
	bs.changed = true
	return nil
}

// Additions implements store.Tx.
func (t *tx) Additions(ctx context.Context, batchID string, addIDs []string) (map[string]store.Addition, error) {
	if _, err := t.existing(batchID); err != nil {
		return nil, err
	}
	out := make(map[string]store.Addition)
	if len(addIDs) == 0 {
		return out, nil
	}
	rows, err := t.pg.Query(ctx, t.s.sql(`SELECT add_id, first_position, count, code, error FROM {schema}.additions
		WHERE batch_id = $1 AND add_id = ANY($2)`), batchID, addIDs)
	if err != nil {
		return nil, fmt.Errorf("pgstore: read additions of batch %s: %w", batchID, err)
	}
	var (
		a            store.Addition
		first, count int32
	)
	_, err = pgx.ForEachRow(rows, []any{&a.ID, &first, &count, &a.Code, &a.Error}, func() error {
		a.FirstPosition = int(first)
		a.Count = int(count)
		out[a.ID] = a
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pgstore: read additions of batch %s: %w", batchID, err)
	}
	return out, nil
}
