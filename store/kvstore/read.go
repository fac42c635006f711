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
	"github.com/nats-io/nats.go/jetstream"
)

// StageJobs implements store.Store.
func (s *Store) StageJobs(ctx context.Context, batchID string, chunk int, jobs []*store.Job) error {
	if !validKeyPart(batchID) {
		return fmt.Errorf("kvstore: invalid batch id %q", batchID)
	}
	if len(jobs) == 0 {
		return fmt.Errorf("kvstore: chunk %d of batch %s has no jobs", chunk, batchID)
	}
	first := jobs[0].Position
	specs := make([]chunkJob, len(jobs))
	for i, j := range jobs {
		if j.Position != first+i || j.ID != strconv.Itoa(j.Position) {
			return fmt.Errorf("%w: chunk %d of batch %s has job %q at position %d, expected position %d", store.ErrInvalidJobs, chunk, batchID, j.ID, j.Position, first+i)
		}
		specs[i] = chunkJob{JobSpec: j.Spec(), ParentID: j.ParentID}
	}
	data, err := json.Marshal(specs)
	if err != nil {
		return fmt.Errorf("kvstore: encode chunk %d of batch %s: %w", chunk, batchID, err)
	}
	key := chunkKey(batchID, first, len(jobs))
	existing, err := s.get(ctx, key)
	if err != nil {
		return err
	}
	if existing.exists {
		return nil // staged before: a chunk never changes once written
	}
	if b, err := s.get(ctx, batchKey(batchID)); err != nil {
		return err
	} else if b.exists {
		return fmt.Errorf("kvstore: chunk %d of batch %s arrived after the batch was stored: %w", chunk, batchID, store.ErrExists)
	}
	if _, err := s.kv.Create(ctx, key, data); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("kvstore: stage chunk %d of batch %s: %w", chunk, batchID, err)
	}
	return nil
}

// Batch implements store.Store.
func (s *Store) Batch(ctx context.Context, id string) (*store.Batch, error) {
	if !validKeyPart(id) {
		return nil, fmt.Errorf("batch %q: %w", id, store.ErrNotFound)
	}
	rec, _, err := s.loadBatch(ctx, id)
	if err != nil {
		return nil, err
	}
	return rec.Batch, nil
}

// Job implements store.Store.
func (s *Store) Job(ctx context.Context, batchID, jobID string) (*store.Job, error) {
	if !validKeyPart(batchID) || !validKeyPart(jobID) {
		return nil, fmt.Errorf("job %q of batch %q: %w", jobID, batchID, store.ErrNotFound)
	}
	rec, _, err := s.loadBatch(ctx, batchID)
	if err != nil {
		return nil, err
	}
	jobs, _, err := s.jobs(ctx, rec, []string{jobID})
	if err != nil {
		return nil, err
	}
	j, ok := jobs[jobID]
	if !ok {
		return nil, fmt.Errorf("job %s of batch %s: %w", jobID, batchID, store.ErrNotFound)
	}
	return j, nil
}

// Jobs implements store.Store.
func (s *Store) Jobs(ctx context.Context, batchID string, after, limit int) ([]*store.Job, error) {
	if !validKeyPart(batchID) {
		return nil, fmt.Errorf("batch %q: %w", batchID, store.ErrNotFound)
	}
	rec, _, err := s.loadBatch(ctx, batchID)
	if err != nil {
		return nil, err
	}
	start := max(after+1, 0)
	end := min(start+limit, rec.Batch.Total)
	if start >= end {
		return nil, nil
	}
	ids := make([]string, 0, end-start)
	for p := start; p < end; p++ {
		ids = append(ids, strconv.Itoa(p))
	}
	jobs, _, err := s.jobs(ctx, rec, ids)
	if err != nil {
		return nil, err
	}
	out := make([]*store.Job, 0, len(ids))
	for _, id := range ids {
		if j, ok := jobs[id]; ok {
			out = append(out, j)
		}
	}
	return out, nil
}

// Callbacks implements store.Store.
func (s *Store) Callbacks(ctx context.Context, batchID string) ([]*store.Job, error) {
	rec, _, err := s.loadBatch(ctx, batchID)
	if err != nil {
		return nil, err
	}
	ids := []string{string(events.OnComplete), string(events.OnFailure)}
	jobs, _, err := s.jobs(ctx, rec, ids)
	if err != nil {
		return nil, err
	}
	var out []*store.Job
	for _, id := range ids {
		if j, ok := jobs[id]; ok {
			out = append(out, j)
		}
	}
	return out, nil
}

// Undispatched implements store.Store.
func (s *Store) Undispatched(ctx context.Context, limit int) ([]string, error) {
	keys, err := s.listKeys(ctx, "u.*")
	if err != nil {
		return nil, err
	}
	sort.Strings(keys)
	var ids []string
	for _, k := range keys {
		if len(ids) == limit {
			break
		}
		ids = append(ids, k[len("u."):])
	}
	return ids, nil
}

// Outbox implements store.Store.
func (s *Store) Outbox(ctx context.Context, cutoff time.Time, limit int) ([]store.OutboxMessage, error) {
	keys, err := s.listKeys(ctx, "o.>")
	if err != nil {
		return nil, err
	}
	entries, err := s.getMany(ctx, keys)
	if err != nil {
		return nil, err
	}
	var out []store.OutboxMessage
	for _, k := range keys {
		e := entries[k]
		if !e.exists {
			continue
		}
		var r outboxRecord
		if err := json.Unmarshal(e.data, &r); err != nil {
			s.log.Error("kvstore: unreadable outbox message, skipping it", "key", k, "error", err)
			continue
		}
		if r.CreatedAt.Before(cutoff) {
			out = append(out, r.message())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// DeleteOutbox implements store.Store.
func (s *Store) DeleteOutbox(ctx context.Context, msgs []store.OutboxMessage) error {
	for _, m := range msgs {
		if _, err := s.js.PublishMsgAsync(s.newTombstone(m.Key)); err != nil {
			return fmt.Errorf("kvstore: delete outbox message %s: %w", m.Key, err)
		}
	}
	select {
	case <-s.js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("kvstore: delete %d outbox messages: %w", len(msgs), ctx.Err())
	}
}

// RecordRejected implements store.Store. It keeps the newest MaxRejected
// events.
func (s *Store) RecordRejected(ctx context.Context, ev events.EventRejected) error {
	s.rejectedMu.Lock()
	defer s.rejectedMu.Unlock()
	data, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("kvstore: encode rejected event: %w", err)
	}
	if _, err := s.kv.Put(ctx, rejectedKey(time.Now().UnixNano()), data); err != nil {
		return fmt.Errorf("kvstore: record rejected event: %w", err)
	}
	keys, err := s.listKeys(ctx, "r.*")
	if err != nil {
		return err
	}
	sort.Strings(keys)
	for len(keys) > s.cfg.MaxRejected {
		if err := s.kv.Purge(ctx, keys[0]); err != nil {
			return fmt.Errorf("kvstore: drop old rejected event: %w", err)
		}
		keys = keys[1:]
	}
	return nil
}

// Rejected implements store.Store.
func (s *Store) Rejected(ctx context.Context, limit int) ([]events.EventRejected, error) {
	keys, err := s.listKeys(ctx, "r.*")
	if err != nil {
		return nil, err
	}
	sort.Sort(sort.Reverse(sort.StringSlice(keys)))
	if len(keys) > limit {
		keys = keys[:limit]
	}
	if len(keys) == 0 {
		return nil, nil
	}
	entries, err := s.getMany(ctx, keys)
	if err != nil {
		return nil, err
	}
	out := make([]events.EventRejected, 0, len(keys))
	for _, k := range keys {
		e := entries[k]
		if !e.exists {
			continue
		}
		var ev events.EventRejected
		if err := json.Unmarshal(e.data, &ev); err != nil {
			return nil, fmt.Errorf("kvstore: decode rejected event %s: %w", k, err)
		}
		out = append(out, ev)
	}
	return out, nil
}

// Prune implements store.Store. It removes every key of a batch that became
// final before cutoff by purging the batch's subjects from the stream.
func (s *Store) Prune(ctx context.Context, cutoff time.Time) (int, error) {
	keys, err := s.listKeys(ctx, "f.*")
	if err != nil {
		return 0, err
	}
	if len(keys) == 0 {
		return 0, nil
	}
	entries, err := s.getMany(ctx, keys)
	if err != nil {
		return 0, err
	}
	stream, err := s.js.Stream(ctx, s.stream)
	if err != nil {
		return 0, fmt.Errorf("kvstore: open stream %s: %w", s.stream, err)
	}
	pruned := 0
	for _, k := range keys {
		e := entries[k]
		var m finishedMarker
		if !e.exists || json.Unmarshal(e.data, &m) != nil || !m.FinishedAt.Before(cutoff) {
			continue
		}
		id := k[len("f."):]
		b, err := s.Batch(ctx, id)
		if err == nil && !b.Status.Final() {
			continue
		}
		for _, subj := range []string{s.prefix + "*." + id, s.prefix + "*." + id + ".>"} {
			if err := stream.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
				return pruned, fmt.Errorf("kvstore: prune batch %s: %w", id, err)
			}
		}
		pruned++
	}
	return pruned, nil
}
