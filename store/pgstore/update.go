package pgstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/store"
	"github.com/jackc/pgx/v5"
)

// Update implements store.Store. Each attempt is one transaction: it locks
// the rows of batchIDs in id order, runs fn, and writes fn's changes and
// messages before it commits. An attempt that fails with store.ErrConflict,
// a serialization failure or a deadlock is rolled back and fn runs again,
// up to Config.UpdateAttempts times. The returned messages are those of the
// attempt that committed. A message whose id is already waiting in the
// outbox is neither stored again nor returned.
func (s *Store) Update(ctx context.Context, batchIDs []string, fn func(store.Tx) error) ([]store.OutboxMessage, error) {
	ids := slices.Clone(batchIDs)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	for attempt := 1; ; attempt++ {
		msgs, err := s.updateOnce(ctx, ids, fn)
		if err == nil {
			return msgs, nil
		}
		if !retryable(err) {
			return nil, err
		}
		if attempt >= s.cfg.UpdateAttempts {
			return nil, fmt.Errorf("pgstore: update of batches %s gave up after attempt %d: %w", describeIDs(ids), attempt, err)
		}
		s.log.Debug("pgstore: update conflicted, retrying", "batches", describeIDs(ids), "attempt", attempt, "error", err)
		if err := sleep(ctx, retryDelay(attempt)); err != nil {
			return nil, fmt.Errorf("pgstore: update of batches %s: %w", describeIDs(ids), err)
		}
	}
}

// retryDelay returns a jittered delay that grows with the attempt, up to
// 50ms, so writers that conflicted do not meet again at once.
func retryDelay(attempt int) time.Duration {
	d := min(time.Duration(attempt)*2*time.Millisecond, 50*time.Millisecond)
	return d/2 + rand.N(d/2+1)
}

// describeIDs lists batch ids for messages, shortened when a group commit
// names many.
func describeIDs(ids []string) string {
	const shown = 5
	if len(ids) <= shown {
		return "[" + strings.Join(ids, " ") + "]"
	}
	return fmt.Sprintf("[%s and %d more]", strings.Join(ids[:shown], " "), len(ids)-shown)
}

func sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// updateOnce runs one attempt of Update.
func (s *Store) updateOnce(ctx context.Context, ids []string, fn func(store.Tx) error) ([]store.OutboxMessage, error) {
	pgTx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("pgstore: begin update: %w", err)
	}
	defer rollback(ctx, pgTx)

	t, err := s.lockBatches(ctx, pgTx, ids)
	if err != nil {
		return nil, err
	}
	if err := fn(t); err != nil {
		return nil, err
	}
	if t.err != nil {
		return nil, t.err
	}
	msgs, err := t.flush(ctx)
	if err != nil {
		return nil, err
	}
	if err := pgTx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("pgstore: commit update of batches %s: %w", describeIDs(ids), err)
	}
	return msgs, nil
}

// rollback ends a transaction that was not committed. After a commit it
// does nothing. It runs even when ctx is cancelled, because a cancelled
// rollback would close the connection instead of returning it to the pool.
func rollback(ctx context.Context, tx pgx.Tx) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = tx.Rollback(ctx)
}

// lockBatches locks and reads the batch rows that exist among ids. Locking
// in id order means that two updates over overlapping batches wait for each
// other instead of deadlocking.
func (s *Store) lockBatches(ctx context.Context, pgTx pgx.Tx, ids []string) (*tx, error) {
	t := &tx{s: s, pg: pgTx, batches: make(map[string]*batchState, len(ids)), order: ids}
	for _, id := range ids {
		t.batches[id] = &batchState{jobs: map[string]*jobState{}}
	}
	rows, err := pgTx.Query(ctx, s.sql("SELECT "+batchColumns+" FROM {schema}.batches WHERE id = ANY($1) ORDER BY id FOR UPDATE"), ids)
	if err != nil {
		return nil, fmt.Errorf("pgstore: lock batches %s: %w", describeIDs(ids), err)
	}
	locked, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*store.Batch, error) {
		return scanBatch(row)
	})
	if err != nil {
		return nil, fmt.Errorf("pgstore: lock batches %s: %w", describeIDs(ids), err)
	}
	for _, b := range locked {
		bs := t.batches[b.ID]
		bs.read = b
		bs.cur = b.Clone()
		bs.jobEnd = b.Total
	}
	return t, nil
}

// tx is the store.Tx of one Update attempt. It reads through the
// transaction and buffers writes until flush. It is not safe for
// concurrent use.
type tx struct {
	s     *Store
	pg    pgx.Tx
	order []string

	batches map[string]*batchState
	// outbox holds emitted messages in Emit order.
	outbox []store.OutboxMessage
	// err is the first misuse of the Tx or the first failed write that left
	// the transaction half done. Update returns it instead of committing.
	err error
}

// batchState is one batch of an Update attempt, as read and as changed.
type batchState struct {
	// read is the row as locked, nil when the batch did not exist.
	read *store.Batch
	// cur is the batch with the changes saved so far, nil while the batch
	// does not exist.
	cur     *store.Batch
	created bool
	// changed is set when anything of the batch changed, which bumps its
	// version.
	changed bool
	// jobEnd is the position that the next added job must have.
	jobEnd int
	// jobs caches the jobs read or inserted, by id. A nil value records an
	// id that is not stored.
	jobs map[string]*jobState
}

// jobState is a job as the transaction read or inserted it and as it was
// last saved.
type jobState struct {
	// stored is the row as it is in the transaction: its status, attempt
	// and compensation status guard the write of job.
	stored *store.Job
	job    *store.Job
	dirty  bool
}

// fail records the first misuse of the Tx.
func (t *tx) fail(err error) {
	if t.err == nil {
		t.err = err
	}
}

// named returns the state of a batch named in the Update call.
func (t *tx) named(id string) (*batchState, error) {
	bs, ok := t.batches[id]
	if !ok {
		return nil, fmt.Errorf("pgstore: batch %s was not named in the Update call", id)
	}
	return bs, nil
}

// existing returns the state of a batch named in the Update call that
// exists, or store.ErrNotFound.
func (t *tx) existing(id string) (*batchState, error) {
	bs, err := t.named(id)
	if err != nil {
		return nil, err
	}
	if bs.cur == nil {
		return nil, fmt.Errorf("batch %s: %w", id, store.ErrNotFound)
	}
	return bs, nil
}

// Batch implements store.Tx.
func (t *tx) Batch(id string) (*store.Batch, error) {
	bs, err := t.existing(id)
	if err != nil {
		return nil, err
	}
	return bs.cur.Clone(), nil
}

// StagedChunks implements store.Tx.
func (t *tx) StagedChunks(ctx context.Context, batchID string) (int, error) {
	var n int64
	err := t.pg.QueryRow(ctx, t.s.sql("SELECT count(*) FROM {schema}.batch_chunks WHERE batch_id = $1"), batchID).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("pgstore: count staged chunks of batch %s: %w", batchID, err)
	}
	return int(n), nil
}

// CreateBatch implements store.Tx. The staged jobs must have exactly the
// positions 0 to b.Total-1, or it returns an error wrapping
// store.ErrInvalidJobs.
func (t *tx) CreateBatch(ctx context.Context, b *store.Batch) error {
	bs, err := t.named(b.ID)
	if err != nil {
		return err
	}
	if bs.cur != nil {
		return fmt.Errorf("batch %s: %w", b.ID, store.ErrExists)
	}
	if b.Total < 0 {
		return fmt.Errorf("%w: batch %s declares %d jobs", store.ErrInvalidJobs, b.ID, b.Total)
	}
	if err := t.s.lockStaging(ctx, t.pg, b.ID); err != nil {
		return err
	}

	// Positions of jobs are unique and not negative, so a count of Total
	// with a highest position of Total-1 means exactly 0 to Total-1.
	var (
		count   int64
		highest int32
	)
	err = t.pg.QueryRow(ctx, t.s.sql(`SELECT count(*), COALESCE(max(position), -1)
		FROM {schema}.jobs WHERE batch_id = $1 AND role = 'job'`), b.ID).Scan(&count, &highest)
	if err != nil {
		return fmt.Errorf("pgstore: check staged jobs of batch %s: %w", b.ID, err)
	}
	if count != int64(b.Total) || int(highest) != b.Total-1 {
		return fmt.Errorf("%w: batch %s declares %d jobs, but %d are staged with highest position %d",
			store.ErrInvalidJobs, b.ID, b.Total, count, highest)
	}

	nb := b.Clone()
	now := time.Now().UTC().Truncate(time.Microsecond)
	if nb.CreatedAt.IsZero() {
		nb.CreatedAt = now
	}
	nb.UpdatedAt = now
	nb.Version = 1
	bs.cur = nb
	bs.created = true
	bs.changed = true
	bs.jobEnd = nb.Total
	return nil
}

// SaveBatch implements store.Tx. Version and UpdatedAt are set when the
// change is written.
func (t *tx) SaveBatch(b *store.Batch) {
	bs, err := t.existing(b.ID)
	if err != nil {
		t.fail(fmt.Errorf("pgstore: SaveBatch of a batch that the transaction did not read: %w", err))
		return
	}
	bs.cur = b.Clone()
	bs.changed = true
}

// Emit implements store.Tx.
func (t *tx) Emit(batchID string, msgs ...events.Message) {
	bs, err := t.existing(batchID)
	if err != nil {
		t.fail(fmt.Errorf("pgstore: Emit for a batch that the transaction did not read: %w", err))
		return
	}
	for _, m := range msgs {
		t.outbox = append(t.outbox, store.OutboxMessage{Message: m, BatchID: batchID})
	}
	bs.changed = true
}
