package kvstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/store"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
)

// Update implements store.Store.
func (s *Store) Update(ctx context.Context, batchIDs []string, fn func(store.Tx) error) ([]store.OutboxMessage, error) {
	var committed []store.OutboxMessage
	for attempt := 1; ; attempt++ {
		tx, err := s.begin(ctx, batchIDs)
		if err != nil {
			return committed, err
		}
		if err := fn(tx); err != nil {
			return committed, err
		}
		msgs, err := tx.commit(ctx)
		committed = append(committed, msgs...)
		if err == nil {
			return committed, nil
		}
		if !errors.Is(err, store.ErrConflict) || attempt >= defaultUpdateRetry {
			return committed, err
		}
		s.log.Debug("kvstore update conflict, retrying", "attempt", attempt, "batches", len(batchIDs))
		select {
		case <-ctx.Done():
			return committed, ctx.Err()
		case <-time.After(backoff(attempt)):
		}
	}
}

// batchTx holds what one Update read and changed of one batch.
type batchTx struct {
	rec     *batchRecord
	rev     uint64
	created bool
	dirty   bool
	// before is the batch as it was read, to tell which markers changed.
	before *store.Batch

	jobs      map[string]*store.Job
	jobRevs   map[string]uint64
	dirtyJobs map[string]*store.Job
	newChunks []chunkWrite
	additions []store.Addition
	outbox    []events.Message
}

type chunkWrite struct {
	ref  chunkRef
	jobs []chunkJob
}

type tx struct {
	s       *Store
	batches map[string]*batchTx
	order   []string
}

func (s *Store) begin(ctx context.Context, batchIDs []string) (*tx, error) {
	t := &tx{s: s, batches: make(map[string]*batchTx, len(batchIDs))}
	keys := make([]string, 0, len(batchIDs))
	for _, id := range batchIDs {
		if _, dup := t.batches[id]; dup {
			continue
		}
		if !validKeyPart(id) {
			return nil, fmt.Errorf("kvstore: invalid batch id %q", id)
		}
		t.batches[id] = &batchTx{jobs: map[string]*store.Job{}, jobRevs: map[string]uint64{}, dirtyJobs: map[string]*store.Job{}}
		t.order = append(t.order, id)
		keys = append(keys, batchKey(id))
	}
	entries, err := s.getMany(ctx, keys)
	if err != nil {
		return nil, err
	}
	for _, id := range t.order {
		e := entries[batchKey(id)]
		bt := t.batches[id]
		bt.rev = e.rev
		if !e.exists {
			continue
		}
		var rec batchRecord
		if err := json.Unmarshal(e.data, &rec); err != nil {
			return nil, fmt.Errorf("kvstore: decode batch %s: %w", id, err)
		}
		bt.rec = &rec
		bt.before = rec.Batch.Clone()
	}
	return t, nil
}

func (t *tx) batchTx(id string) (*batchTx, error) {
	bt, ok := t.batches[id]
	if !ok {
		return nil, fmt.Errorf("kvstore: batch %s was not named in the update", id)
	}
	if bt.rec == nil {
		return nil, fmt.Errorf("batch %s: %w", id, store.ErrNotFound)
	}
	return bt, nil
}

func (t *tx) Batch(id string) (*store.Batch, error) {
	bt, err := t.batchTx(id)
	if err != nil {
		return nil, err
	}
	return bt.rec.Batch.Clone(), nil
}

func (t *tx) StagedChunks(ctx context.Context, batchID string) (int, error) {
	keys, err := t.s.listKeys(ctx, "c."+batchID+".*.*")
	return len(keys), err
}

func (t *tx) CreateBatch(ctx context.Context, b *store.Batch) error {
	bt, ok := t.batches[b.ID]
	if !ok {
		return fmt.Errorf("kvstore: batch %s was not named in the update", b.ID)
	}
	if bt.rec != nil {
		return fmt.Errorf("batch %s: %w", b.ID, store.ErrExists)
	}
	keys, err := t.s.listKeys(ctx, "c."+b.ID+".*.*")
	if err != nil {
		return err
	}
	var chunks []chunkRef
	for _, k := range keys {
		first, count, ok := parseChunkKey(k)
		if !ok {
			return fmt.Errorf("kvstore: unreadable chunk key %q", k)
		}
		chunks = append(chunks, chunkRef{First: first, Count: count})
	}
	sort.Slice(chunks, func(i, j int) bool { return chunks[i].First < chunks[j].First })
	next := 0
	for _, c := range chunks {
		if c.First != next {
			return fmt.Errorf("%w: batch %s has staged jobs from position %d where %d was expected", store.ErrInvalidJobs, b.ID, c.First, next)
		}
		next += c.Count
	}
	if next != b.Total {
		return fmt.Errorf("%w: batch %s declares %d jobs but %d are staged", store.ErrInvalidJobs, b.ID, b.Total, next)
	}
	nb := b.Clone()
	nb.Version = 1
	now := time.Now().UTC()
	if nb.CreatedAt.IsZero() {
		nb.CreatedAt = now
	}
	nb.UpdatedAt = now
	bt.rec = &batchRecord{Batch: nb, Chunks: chunks}
	bt.before = &store.Batch{}
	bt.created = true
	bt.dirty = true
	return nil
}

func (t *tx) SaveBatch(b *store.Batch) {
	bt := t.batches[b.ID]
	if bt == nil || bt.rec == nil {
		panic("kvstore: SaveBatch of a batch the transaction did not read: " + b.ID)
	}
	bt.rec.Batch = b.Clone()
	bt.dirty = true
}

func (t *tx) Jobs(ctx context.Context, batchID string, ids []string) (map[string]*store.Job, error) {
	bt, err := t.batchTx(batchID)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*store.Job, len(ids))
	var missing []string
	for _, id := range ids {
		if j, ok := bt.jobs[id]; ok {
			if j != nil {
				out[id] = j.Clone()
			}
			continue
		}
		missing = append(missing, id)
	}
	if len(missing) == 0 {
		return out, nil
	}
	loaded, revs, err := t.s.jobs(ctx, bt.rec, missing)
	if err != nil {
		return nil, err
	}
	for _, id := range missing {
		bt.jobRevs[id] = revs[id]
		j := loaded[id]
		bt.jobs[id] = j
		if j != nil {
			out[id] = j.Clone()
		}
	}
	return out, nil
}

func (t *tx) JobAt(ctx context.Context, batchID string, position int) (*store.Job, error) {
	id := strconv.Itoa(position)
	jobs, err := t.Jobs(ctx, batchID, []string{id})
	if err != nil {
		return nil, err
	}
	j, ok := jobs[id]
	if !ok {
		return nil, fmt.Errorf("job at position %d of batch %s: %w", position, batchID, store.ErrNotFound)
	}
	return j, nil
}

// PrevCompensable walks positions downwards in windows, so a chain with many
// steps costs one read per window.
func (t *tx) PrevCompensable(ctx context.Context, batchID string, before int) (*store.Job, error) {
	const window = 64
	for hi := before - 1; hi >= 0; hi -= window {
		lo := max(0, hi-window+1)
		ids := make([]string, 0, hi-lo+1)
		for p := hi; p >= lo; p-- {
			ids = append(ids, strconv.Itoa(p))
		}
		jobs, err := t.Jobs(ctx, batchID, ids)
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			if j := jobs[id]; j != nil && store.Compensable(j) {
				return j, nil
			}
		}
	}
	return nil, fmt.Errorf("compensable job before %d of batch %s: %w", before, batchID, store.ErrNotFound)
}

func (t *tx) SaveJob(j *store.Job) {
	bt := t.batches[j.BatchID]
	if bt == nil || bt.rec == nil {
		panic("kvstore: SaveJob for a batch the transaction did not read: " + j.BatchID)
	}
	if _, read := bt.jobRevs[j.ID]; !read {
		panic("kvstore: SaveJob of a job the transaction did not read: " + j.ID)
	}
	c := j.Clone()
	bt.jobs[j.ID] = c
	bt.dirtyJobs[j.ID] = c
}

func (t *tx) InsertJobs(ctx context.Context, batchID string, jobs []*store.Job) error {
	bt, err := t.batchTx(batchID)
	if err != nil {
		return err
	}
	var chunk []chunkJob
	first := -1
	for _, j := range jobs {
		if j.Role == events.RoleCallback {
			if _, read := bt.jobRevs[j.ID]; !read {
				if _, err := t.Jobs(ctx, batchID, []string{j.ID}); err != nil {
					return err
				}
			}
			if bt.jobs[j.ID] != nil {
				return fmt.Errorf("callback %s of batch %s: %w", j.ID, batchID, store.ErrExists)
			}
			c := j.Clone()
			bt.jobs[j.ID] = c
			bt.dirtyJobs[j.ID] = c
			continue
		}
		if first < 0 {
			first = j.Position
		}
		if j.Position != first+len(chunk) || j.ID != strconv.Itoa(j.Position) {
			return fmt.Errorf("kvstore: added job %s at position %d breaks the run from %d", j.ID, j.Position, first)
		}
		chunk = append(chunk, chunkJob{JobSpec: j.Spec(), ParentID: j.ParentID})
		bt.jobs[j.ID] = j.Clone()
		bt.jobRevs[j.ID] = 0
	}
	if len(chunk) > 0 {
		if end := bt.rec.end(); end != first {
			return fmt.Errorf("kvstore: added jobs start at position %d, not at %d after the last stored job", first, end)
		}
		ref := chunkRef{First: first, Count: len(chunk)}
		bt.newChunks = append(bt.newChunks, chunkWrite{ref: ref, jobs: chunk})
		bt.rec.Chunks = append(bt.rec.Chunks, ref)
	}
	bt.dirty = true
	return nil
}

func (t *tx) RecordAddition(ctx context.Context, batchID string, a store.Addition) error {
	bt, err := t.batchTx(batchID)
	if err != nil {
		return err
	}
	if !validKeyPart(a.ID) {
		return fmt.Errorf("kvstore: invalid add id %q", a.ID)
	}
	bt.additions = append(bt.additions, a)
	bt.dirty = true
	return nil
}

func (t *tx) Additions(ctx context.Context, batchID string, addIDs []string) (map[string]store.Addition, error) {
	bt, err := t.batchTx(batchID)
	if err != nil {
		return nil, err
	}
	out := make(map[string]store.Addition)
	var keys []string
	for _, id := range addIDs {
		if !validKeyPart(id) {
			continue
		}
		keys = append(keys, additionKey(batchID, id))
	}
	for _, a := range bt.additions {
		out[a.ID] = a
	}
	if len(keys) == 0 {
		return out, nil
	}
	entries, err := t.s.getMany(ctx, keys)
	if err != nil {
		return nil, err
	}
	for _, id := range addIDs {
		e, ok := entries[additionKey(batchID, id)]
		if !ok || !e.exists {
			continue
		}
		var a store.Addition
		if err := json.Unmarshal(e.data, &a); err != nil {
			return nil, fmt.Errorf("kvstore: decode addition %s of batch %s: %w", id, batchID, err)
		}
		out[id] = a
	}
	return out, nil
}

func (t *tx) Emit(batchID string, msgs ...events.Message) {
	bt := t.batches[batchID]
	if bt == nil || bt.rec == nil {
		panic("kvstore: Emit for a batch the transaction did not read: " + batchID)
	}
	bt.outbox = append(bt.outbox, msgs...)
	bt.dirty = true
}

// commit publishes the changes of each batch as one atomic batch. Batches
// whose changes fit together share one publish.
func (t *tx) commit(ctx context.Context) ([]store.OutboxMessage, error) {
	var (
		pending     []*nats.Msg
		pendingOut  []store.OutboxMessage
		pendingDone []func()
		committed   []store.OutboxMessage
	)
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		if _, err := jetstreamext.PublishMsgBatch(ctx, t.s.js, pending); err != nil {
			if isConflict(err) {
				return fmt.Errorf("%w: %v", store.ErrConflict, err)
			}
			return fmt.Errorf("kvstore: commit: %w", err)
		}
		committed = append(committed, pendingOut...)
		for _, done := range pendingDone {
			done()
		}
		pending, pendingOut, pendingDone = nil, nil, nil
		return nil
	}
	for _, id := range t.order {
		bt := t.batches[id]
		if bt.rec == nil || (!bt.dirty && len(bt.dirtyJobs) == 0) {
			continue
		}
		msgs, out, err := t.batchMessages(id, bt)
		if err != nil {
			return committed, err
		}
		if len(msgs) > maxAtomicBatchSize {
			return committed, fmt.Errorf("kvstore: one change to batch %s needs %d writes, above the atomic limit of %d", id, len(msgs), maxAtomicBatchSize)
		}
		if len(pending)+len(msgs) > maxAtomicBatchSize {
			if err := flush(); err != nil {
				return committed, err
			}
		}
		pending = append(pending, msgs...)
		pendingOut = append(pendingOut, out...)
		writes := bt.newChunks
		pendingDone = append(pendingDone, func() {
			for _, w := range writes {
				t.s.chunks.put(chunkKey(id, w.ref.First, w.ref.Count), w.jobs)
			}
		})
	}
	return committed, flush()
}

func (t *tx) batchMessages(id string, bt *batchTx) ([]*nats.Msg, []store.OutboxMessage, error) {
	var msgs []*nats.Msg
	put := func(key string, value any, expect *uint64) error {
		data, err := json.Marshal(value)
		if err != nil {
			return fmt.Errorf("kvstore: encode %s: %w", key, err)
		}
		m := nats.NewMsg(t.s.prefix + key)
		m.Data = data
		if expect != nil {
			m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(*expect, 10))
		}
		msgs = append(msgs, m)
		return nil
	}
	zero := uint64(0)
	for _, w := range bt.newChunks {
		if err := put(chunkKey(id, w.ref.First, w.ref.Count), w.jobs, &zero); err != nil {
			return nil, nil, err
		}
	}
	if len(bt.rec.Chunks) > t.s.cfg.RecordChunks {
		refs := bt.rec.Chunks
		key := indexKey(id, refs[0].First)
		if err := put(key, refs, &zero); err != nil {
			return nil, nil, err
		}
		bt.rec.Sealed = append(bt.rec.Sealed, sealedRefs{First: refs[0].First, End: bt.rec.end(), Key: key})
		bt.rec.Chunks = nil
	}
	for _, a := range bt.additions {
		if err := put(additionKey(id, a.ID), a, &zero); err != nil {
			return nil, nil, err
		}
	}
	jobIDs := make([]string, 0, len(bt.dirtyJobs))
	for jid := range bt.dirtyJobs {
		jobIDs = append(jobIDs, jid)
	}
	sort.Strings(jobIDs)
	for _, jid := range jobIDs {
		rev := bt.jobRevs[jid]
		if err := put(jobKey(id, jid), jobState(bt.dirtyJobs[jid]), &rev); err != nil {
			return nil, nil, err
		}
	}
	now := time.Now().UTC()
	var out []store.OutboxMessage
	for _, m := range bt.outbox {
		bt.rec.OutboxSeq++
		key := outboxKey(id, bt.rec.OutboxSeq)
		om := store.OutboxMessage{Message: m, BatchID: id, CreatedAt: now, Key: key}
		if err := put(key, newOutboxRecord(om), nil); err != nil {
			return nil, nil, err
		}
		out = append(out, om)
	}
	b := bt.rec.Batch
	if b.Status.Final() && !bt.before.Status.Final() {
		if err := put(finishedKey(id), finishedMarker{FinishedAt: finishedAt(b, now)}, nil); err != nil {
			return nil, nil, err
		}
	}
	wasUndispatched := undispatched(bt.before)
	isUndispatched := undispatched(b)
	if isUndispatched && !wasUndispatched {
		if err := put(undispatchedKey(id), struct{}{}, nil); err != nil {
			return nil, nil, err
		}
	}
	if wasUndispatched && !isUndispatched {
		msgs = append(msgs, t.s.newTombstone(undispatchedKey(id)))
	}
	if !bt.created {
		b.Version++
	}
	b.UpdatedAt = now
	rev := bt.rev
	if err := put(batchKey(id), bt.rec, &rev); err != nil {
		return nil, nil, err
	}
	return msgs, out, nil
}

type finishedMarker struct {
	FinishedAt time.Time `json:"finished_at"`
}

func finishedAt(b *store.Batch, now time.Time) time.Time {
	if b.FinishedAt != nil {
		return *b.FinishedAt
	}
	return now
}

// undispatched reports whether a dispatcher has work on b: publishing more
// of a running batch, or finishing a publish that may have been cut off.
func undispatched(b *store.Batch) bool {
	if b == nil || b.ID == "" || b.Type != events.Parallel {
		return false
	}
	return (b.Status == events.StatusRunning && b.Dispatching < b.Total) || b.Dispatched < b.Dispatching
}
