package kvstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/store"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
)

// batchRecord is the value of a batch key.
type batchRecord struct {
	Batch *store.Batch `json:"batch"`
	// Chunks lists the newest chunk keys of the batch, ordered by first
	// position. Older ones move to index keys listed in Sealed, so the
	// record stays small however many additions a batch gets.
	Chunks []chunkRef `json:"chunks"`
	// Sealed lists index keys of older chunk references, ordered by first
	// position; they come before Chunks.
	Sealed []sealedRefs `json:"sealed,omitempty"`
	// OutboxSeq numbers the batch's outbox keys.
	OutboxSeq int64 `json:"outbox_seq"`
}

type chunkRef struct {
	First int `json:"first"`
	Count int `json:"count"`
}

// sealedRefs names an index key that holds chunk references for the
// positions from First to End-1.
type sealedRefs struct {
	First int    `json:"first"`
	End   int    `json:"end"`
	Key   string `json:"key"`
}

// end returns the position after the last stored job.
func (r *batchRecord) end() int {
	if n := len(r.Chunks); n > 0 {
		return r.Chunks[n-1].First + r.Chunks[n-1].Count
	}
	if n := len(r.Sealed); n > 0 {
		return r.Sealed[n-1].End
	}
	return 0
}

// findChunk returns the chunk in refs that holds position, or false.
func findChunk(refs []chunkRef, position int) (chunkRef, bool) {
	i := sort.Search(len(refs), func(i int) bool { return refs[i].First > position }) - 1
	if i < 0 {
		return chunkRef{}, false
	}
	c := refs[i]
	return c, position < c.First+c.Count
}

// locate returns the chunk of rec that holds position, reading a sealed
// index key when the position is older than the record's own references.
func (s *Store) locate(ctx context.Context, rec *batchRecord, position int) (chunkRef, bool, error) {
	if len(rec.Chunks) > 0 && position >= rec.Chunks[0].First {
		c, ok := findChunk(rec.Chunks, position)
		return c, ok, nil
	}
	i := sort.Search(len(rec.Sealed), func(i int) bool { return rec.Sealed[i].End > position })
	if i == len(rec.Sealed) || position < rec.Sealed[i].First {
		return chunkRef{}, false, nil
	}
	refs, err := s.sealedRefs(ctx, rec.Sealed[i].Key)
	if err != nil {
		return chunkRef{}, false, err
	}
	c, ok := findChunk(refs, position)
	return c, ok, nil
}

// sealedRefs reads an index key, which never changes once written.
func (s *Store) sealedRefs(ctx context.Context, key string) ([]chunkRef, error) {
	s.indexMu.Lock()
	refs, ok := s.index[key]
	s.indexMu.Unlock()
	if ok {
		return refs, nil
	}
	e, err := s.get(ctx, key)
	if err != nil {
		return nil, err
	}
	if !e.exists {
		return nil, fmt.Errorf("kvstore: index key %s is missing", key)
	}
	if err := json.Unmarshal(e.data, &refs); err != nil {
		return nil, fmt.Errorf("kvstore: decode index key %s: %w", key, err)
	}
	s.indexMu.Lock()
	if len(s.index) >= s.cfg.ChunkCache {
		clear(s.index)
	}
	s.index[key] = refs
	s.indexMu.Unlock()
	return refs, nil
}

// entry is the last message of a key.
type entry struct {
	data []byte
	// rev is the stream sequence of the key's last message, tombstones
	// included, or 0 when the key never existed.
	rev    uint64
	exists bool
}

// getMany returns the last message of each key that has one.
func (s *Store) getMany(ctx context.Context, keys []string) (map[string]entry, error) {
	if len(keys) == 1 {
		e, err := s.get(ctx, keys[0])
		if err != nil || e.rev == 0 {
			return map[string]entry{}, err
		}
		return map[string]entry{keys[0]: e}, nil
	}
	out := make(map[string]entry, len(keys))
	for start := 0; start < len(keys); start += maxDirectGetSubject {
		end := min(start+maxDirectGetSubject, len(keys))
		subjects := make([]string, 0, end-start)
		for _, k := range keys[start:end] {
			subjects = append(subjects, s.prefix+k)
		}
		msgs, err := jetstreamext.GetLastMsgsFor(ctx, s.js, s.stream, subjects)
		if err != nil {
			return nil, fmt.Errorf("kvstore: read %d keys: %w", len(subjects), err)
		}
		for msg, err := range msgs {
			if errors.Is(err, jetstreamext.ErrNoMessages) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("kvstore: read %d keys: %w", len(subjects), err)
			}
			key := msg.Subject[len(s.prefix):]
			op := msg.Header.Get("KV-Operation")
			out[key] = entry{data: msg.Data, rev: msg.Sequence, exists: op == ""}
		}
	}
	return out, nil
}

// get returns the last message of one key. It costs one request on the
// connection's shared reply subscription, where getMany sets up a
// subscription per call. A deleted key reads as never written, which is
// right for every key that get reads: batch, chunk and job keys are only
// ever removed by purging.
func (s *Store) get(ctx context.Context, key string) (entry, error) {
	kve, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return entry{}, nil
	}
	if err != nil {
		return entry{}, fmt.Errorf("kvstore: read %s: %w", key, err)
	}
	return entry{data: kve.Value(), rev: kve.Revision(), exists: true}, nil
}

func (s *Store) loadBatch(ctx context.Context, id string) (*batchRecord, uint64, error) {
	e, err := s.get(ctx, batchKey(id))
	if err != nil {
		return nil, 0, err
	}
	if !e.exists {
		return nil, e.rev, store.ErrNotFound
	}
	var rec batchRecord
	if err := json.Unmarshal(e.data, &rec); err != nil {
		return nil, 0, fmt.Errorf("kvstore: decode batch %s: %w", id, err)
	}
	return &rec, e.rev, nil
}

// listKeys returns the keys that match filter.
func (s *Store) listKeys(ctx context.Context, filter string) ([]string, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("kvstore: list keys %s: %w", filter, err)
	}
	var keys []string
	// The lister stops its own watcher once it has sent every key, so
	// there is nothing to stop here.
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("kvstore: list keys %s: %w", filter, err)
	}
	return keys, nil
}

// chunk returns the job specs stored under a chunk key, from the cache when
// possible.
func (s *Store) chunk(ctx context.Context, batchID string, c chunkRef) ([]chunkJob, error) {
	key := chunkKey(batchID, c.First, c.Count)
	if specs, ok := s.chunks.get(key); ok {
		return specs, nil
	}
	e, err := s.get(ctx, key)
	if err != nil {
		return nil, err
	}
	if !e.exists {
		return nil, fmt.Errorf("kvstore: chunk %s is missing", key)
	}
	var specs []chunkJob
	if err := json.Unmarshal(e.data, &specs); err != nil {
		return nil, fmt.Errorf("kvstore: decode chunk %s: %w", key, err)
	}
	s.chunks.put(key, specs)
	return specs, nil
}

// jobs returns the jobs of rec with the given ids, keyed by id, with the
// revision of each job key.
func (s *Store) jobs(ctx context.Context, rec *batchRecord, ids []string) (map[string]*store.Job, map[string]uint64, error) {
	batchID := rec.Batch.ID
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = jobKey(batchID, id)
	}
	entries, err := s.getMany(ctx, keys)
	if err != nil {
		return nil, nil, err
	}
	jobs := make(map[string]*store.Job, len(ids))
	revs := make(map[string]uint64, len(ids))
	for _, id := range ids {
		e := entries[jobKey(batchID, id)]
		revs[id] = e.rev
		var state *store.Job
		if e.exists {
			state = new(store.Job)
			if err := json.Unmarshal(e.data, state); err != nil {
				return nil, nil, fmt.Errorf("kvstore: decode job %s of batch %s: %w", id, batchID, err)
			}
			if state.Role == events.RoleCallback {
				jobs[id] = state
				continue
			}
		}
		pos, err := strconv.Atoi(id)
		if err != nil || strconv.Itoa(pos) != id {
			continue // callbacks exist only as job keys
		}
		c, ok, err := s.locate(ctx, rec, pos)
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			continue
		}
		specs, err := s.chunk(ctx, batchID, c)
		if err != nil {
			return nil, nil, err
		}
		spec := specs[pos-c.First]
		j := store.JobFromSpec(batchID, spec.JobSpec)
		j.ParentID = spec.ParentID
		if state != nil {
			withState(j, state)
		}
		jobs[id] = j
	}
	return jobs, revs, nil
}

// jobState returns what a job key stores of a job: its state without the
// spec, which its chunk holds already. Callbacks have no chunk, so their
// keys hold everything.
func jobState(j *store.Job) *store.Job {
	if j.Role == events.RoleCallback {
		return j
	}
	return &store.Job{
		BatchID:             j.BatchID,
		ID:                  j.ID,
		Position:            j.Position,
		Role:                j.Role,
		Status:              j.Status,
		Attempt:             j.Attempt,
		Result:              j.Result,
		Error:               j.Error,
		FinishedAt:          j.FinishedAt,
		CompensationStatus:  j.CompensationStatus,
		CompensationAttempt: j.CompensationAttempt,
		CompensationError:   j.CompensationError,
	}
}

// withState copies the state fields of a job key onto a job built from its
// spec.
func withState(j, state *store.Job) {
	j.Status = state.Status
	j.Attempt = state.Attempt
	j.Result = state.Result
	j.Error = state.Error
	j.FinishedAt = state.FinishedAt
	j.CompensationStatus = state.CompensationStatus
	j.CompensationAttempt = state.CompensationAttempt
	j.CompensationError = state.CompensationError
}

// outboxRecord is the value of an outbox key. An event's body is JSON and
// is kept as it is; base64, which a []byte field would get, would make an
// entry a third larger than the message it carries.
type outboxRecord struct {
	Subject   string          `json:"subject"`
	ID        string          `json:"id"`
	Type      events.Type     `json:"type,omitempty"`
	BatchID   string          `json:"batch_id"`
	CreatedAt time.Time       `json:"created_at"`
	Key       string          `json:"key"`
	Body      json.RawMessage `json:"body,omitempty"`
	// Raw holds a body that is not JSON.
	Raw []byte `json:"raw,omitempty"`
}

func newOutboxRecord(m store.OutboxMessage) outboxRecord {
	r := outboxRecord{Subject: m.Subject, ID: m.ID, Type: m.Type, BatchID: m.BatchID, CreatedAt: m.CreatedAt, Key: m.Key}
	if json.Valid(m.Data) {
		r.Body = m.Data
	} else {
		r.Raw = m.Data
	}
	return r
}

func (r outboxRecord) message() store.OutboxMessage {
	data := []byte(r.Body)
	if r.Raw != nil {
		data = r.Raw
	}
	return store.OutboxMessage{
		Message:   events.Message{Subject: r.Subject, ID: r.ID, Type: r.Type, Data: data},
		BatchID:   r.BatchID,
		CreatedAt: r.CreatedAt,
		Key:       r.Key,
	}
}

// chunkJob is one job spec inside a chunk value.
type chunkJob struct {
	events.JobSpec
	ParentID string `json:"parent_id,omitempty"`
}

// chunkCache keeps recently used chunks. Chunks are immutable, so entries
// never go stale; the cache forgets everything when it is full.
type chunkCache struct {
	mu    sync.Mutex
	max   int
	items map[string][]chunkJob
}

func newChunkCache(max int) *chunkCache {
	return &chunkCache{max: max, items: make(map[string][]chunkJob)}
}

func (c *chunkCache) get(key string) ([]chunkJob, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.items[key]
	return v, ok
}

func (c *chunkCache) put(key string, specs []chunkJob) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.items) >= c.max {
		clear(c.items)
	}
	c.items[key] = specs
}
