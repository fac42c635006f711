package executor

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/batchq/batchq/events"
	"github.com/nats-io/nats.go/jetstream"
)

// errBatchCancelled is the cancel cause of a job whose batch was cancelled.
var errBatchCancelled = errors.New("the batch was cancelled")

// cancelledSet holds the ids of cancelled batches and cancels the jobs of
// those batches that are running.
type cancelledSet struct {
	mu  sync.Mutex
	ids map[string]time.Time
	// ttl is how long the bucket keeps a key. Keys that expire produce no
	// delete in the watch, so entries older than ttl are dropped here.
	ttl     time.Duration
	running map[string]map[*Job]context.CancelCauseFunc
}

func newCancelledSet(ttl time.Duration) *cancelledSet {
	return &cancelledSet{ids: map[string]time.Time{}, ttl: ttl, running: map[string]map[*Job]context.CancelCauseFunc{}}
}

func (s *cancelledSet) has(batchID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.ids[batchID]
	return ok
}

func (s *cancelledSet) add(batchID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.ids[batchID] = now
	if s.ttl > 0 && len(s.ids)%1024 == 0 {
		for id, at := range s.ids {
			if now.Sub(at) > s.ttl {
				delete(s.ids, id)
			}
		}
	}
	for _, cancel := range s.running[batchID] {
		cancel(errBatchCancelled)
	}
}

func (s *cancelledSet) remove(batchID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.ids, batchID)
}

// track registers a running job; it returns false when the batch is
// already cancelled.
func (s *cancelledSet) track(batchID string, j *Job, cancel context.CancelCauseFunc) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.ids[batchID]; ok {
		return false
	}
	if s.running[batchID] == nil {
		s.running[batchID] = map[*Job]context.CancelCauseFunc{}
	}
	s.running[batchID][j] = cancel
	return true
}

func (s *cancelledSet) untrack(batchID string, j *Job) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.running[batchID], j)
	if len(s.running[batchID]) == 0 {
		delete(s.running, batchID)
	}
}

// watchCancelled follows the bucket of cancelled batches until ctx ends.
// The watch first replays the keys that exist, so an executor that starts
// after a cancel still skips that batch's jobs.
func (e *Executor) watchCancelled(ctx context.Context) (ready <-chan struct{}, err error) {
	kv, err := e.js.KeyValue(ctx, events.CancelledBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		sc := e.cfg.Streams.WithDefaults()
		kv, err = e.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      events.CancelledBucket,
			Description: "batchq cancelled batches, watched by executors",
			History:     1,
			TTL:         sc.EventsMaxAge,
			Replicas:    sc.Replicas,
			Storage:     sc.Storage,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = e.js.KeyValue(ctx, events.CancelledBucket)
		}
	}
	if err != nil {
		return nil, err
	}
	watcher, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer func() { _ = watcher.Stop() }()
		initial := true
		for {
			select {
			case <-ctx.Done():
				return
			case entry, ok := <-watcher.Updates():
				if !ok {
					return
				}
				if entry == nil {
					if initial {
						close(done)
						initial = false
					}
					continue
				}
				switch entry.Operation() {
				case jetstream.KeyValuePut:
					e.cancelled.add(entry.Key())
				default:
					e.cancelled.remove(entry.Key())
				}
			}
		}
	}()
	return done, nil
}
