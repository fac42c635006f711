// Package storetest is the conformance suite that every store.Store must
// pass. A store's own test calls Run with a function that opens an empty
// store.
package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/store"
)

// Opener returns an empty store for one test. The store is closed by the
// opener's own cleanup.
type Opener func(t *testing.T) store.Store

// Run runs every conformance test against stores from open.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(*testing.T, store.Store)
	}{
		{"MissingBatch", testMissingBatch},
		{"CreateAndRead", testCreateAndRead},
		{"CreateTwice", testCreateTwice},
		{"CreateWithGap", testCreateWithGap},
		{"StageTwice", testStageTwice},
		{"StageWrongID", testStageWrongID},
		{"UpdateCommits", testUpdateCommits},
		{"UpdateErrorRollsBack", testUpdateErrorRollsBack},
		{"ReadOwnWrites", testReadOwnWrites},
		{"Outbox", testOutbox},
		{"ConcurrentCounters", testConcurrentCounters},
		{"ConcurrentTransition", testConcurrentTransition},
		{"TwoBatchesOneUpdate", testTwoBatchesOneUpdate},
		{"InsertAddedJobs", testInsertAddedJobs},
		{"Callbacks", testCallbacks},
		{"PrevCompensable", testPrevCompensable},
		{"Undispatched", testUndispatched},
		{"Rejected", testRejected},
		{"Prune", testPrune},
		{"ExactBytes", testExactBytes},
		{"LargeBatch", testLargeBatch},
		{"ManyAdditions", testManyAdditions},
		{"LateChunk", testLateChunk},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, open(t))
		})
	}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var idSeq struct {
	sync.Mutex
	n int
}

// newID returns a batch id that is unique within the test binary.
func newID(prefix string) string {
	idSeq.Lock()
	defer idSeq.Unlock()
	idSeq.n++
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano(), idSeq.n)
}

func specJobs(batchID string, first, n int) []*store.Job {
	jobs := make([]*store.Job, n)
	for i := range jobs {
		p := first + i
		jobs[i] = store.JobFromSpec(batchID, events.JobSpec{
			ID:       strconv.Itoa(p),
			Position: p,
			Name:     "job",
			Args:     json.RawMessage(fmt.Sprintf(`{"n":%d}`, p)),
		})
	}
	return jobs
}

// createBatch stages n jobs in chunks of chunk and creates the batch.
func createBatch(t *testing.T, s store.Store, typ events.BatchType, n, chunk int) *store.Batch {
	t.Helper()
	ctx := ctxFor(t)
	id := newID(string(typ))
	chunks := 0
	for first := 0; first < n; first += chunk {
		if err := s.StageJobs(ctx, id, chunks, specJobs(id, first, min(chunk, n-first))); err != nil {
			t.Fatalf("StageJobs: %v", err)
		}
		chunks++
	}
	b := &store.Batch{
		ID:        id,
		Type:      typ,
		Status:    events.StatusRunning,
		QueueName: "default",
		Queue:     "default",
		Context:   json.RawMessage(`{"shared":true}`),
		Options:   events.Options{OnComplete: &events.JobRef{Name: "done", Args: json.RawMessage(`{"x":1}`)}},
		Total:     n,
	}
	if _, err := s.Update(ctx, []string{id}, func(tx store.Tx) error {
		staged, err := tx.StagedChunks(ctx, id)
		if err != nil {
			return err
		}
		if staged != chunks {
			return fmt.Errorf("StagedChunks = %d, want %d", staged, chunks)
		}
		return tx.CreateBatch(ctx, b)
	}); err != nil {
		t.Fatalf("create batch: %v", err)
	}
	got, err := s.Batch(ctx, id)
	if err != nil {
		t.Fatalf("Batch after create: %v", err)
	}
	return got
}

func testMissingBatch(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	if _, err := s.Batch(ctx, "missing"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Batch(missing) error = %v, want ErrNotFound", err)
	}
	if _, err := s.Job(ctx, "missing", "0"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Job(missing) error = %v, want ErrNotFound", err)
	}
	_, err := s.Update(ctx, []string{"missing"}, func(tx store.Tx) error {
		_, err := tx.Batch("missing")
		return err
	})
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("tx.Batch(missing) error = %v, want ErrNotFound", err)
	}
}

func testCreateAndRead(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	b := createBatch(t, s, events.Chain, 5, 2)
	if b.Total != 5 || b.Status != events.StatusRunning || b.Type != events.Chain {
		t.Errorf("batch = total %d status %s type %s, want 5 running chain", b.Total, b.Status, b.Type)
	}
	if b.Version != 1 {
		t.Errorf("Version = %d, want 1", b.Version)
	}
	if string(b.Context) != `{"shared":true}` {
		t.Errorf("Context = %s", b.Context)
	}
	if b.Options.OnComplete == nil || b.Options.OnComplete.Name != "done" || string(b.Options.OnComplete.Args) != `{"x":1}` {
		t.Errorf("Options.OnComplete = %+v", b.Options.OnComplete)
	}
	if b.CreatedAt.IsZero() {
		t.Error("CreatedAt is zero")
	}
	jobs, err := s.Jobs(ctx, b.ID, -1, 10)
	if err != nil {
		t.Fatalf("Jobs: %v", err)
	}
	if len(jobs) != 5 {
		t.Fatalf("Jobs returned %d, want 5", len(jobs))
	}
	for i, j := range jobs {
		if j.Position != i || j.ID != strconv.Itoa(i) {
			t.Errorf("job %d: position %d id %s", i, j.Position, j.ID)
		}
		if j.Status != events.JobStatusPending {
			t.Errorf("job %d status %s, want pending", i, j.Status)
		}
		if want := fmt.Sprintf(`{"n":%d}`, i); string(j.Args) != want {
			t.Errorf("job %d args %s, want %s", i, j.Args, want)
		}
	}
	page, err := s.Jobs(ctx, b.ID, 2, 2)
	if err != nil {
		t.Fatalf("Jobs page: %v", err)
	}
	if len(page) != 2 || page[0].Position != 3 || page[1].Position != 4 {
		t.Errorf("Jobs(after 2, limit 2) = %d jobs starting at %v", len(page), page)
	}
	j, err := s.Job(ctx, b.ID, "3")
	if err != nil {
		t.Fatalf("Job(3): %v", err)
	}
	if j.Position != 3 || j.Name != "job" {
		t.Errorf("Job(3) = %+v", j)
	}
	if _, err := s.Job(ctx, b.ID, "7"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Job(7) error = %v, want ErrNotFound", err)
	}
}

func testCreateTwice(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	b := createBatch(t, s, events.Parallel, 2, 2)
	_, err := s.Update(ctx, []string{b.ID}, func(tx store.Tx) error {
		return tx.CreateBatch(ctx, &store.Batch{ID: b.ID, Type: events.Parallel, Status: events.StatusRunning, Queue: "default", Total: 2})
	})
	if !errors.Is(err, store.ErrExists) {
		t.Errorf("second CreateBatch error = %v, want ErrExists", err)
	}
}

func testCreateWithGap(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	id := newID("gap")
	if err := s.StageJobs(ctx, id, 0, specJobs(id, 0, 2)); err != nil {
		t.Fatal(err)
	}
	if err := s.StageJobs(ctx, id, 1, specJobs(id, 3, 2)); err != nil {
		t.Fatal(err)
	}
	_, err := s.Update(ctx, []string{id}, func(tx store.Tx) error {
		return tx.CreateBatch(ctx, &store.Batch{ID: id, Type: events.Parallel, Status: events.StatusRunning, Queue: "default", Total: 4})
	})
	if !errors.Is(err, store.ErrInvalidJobs) {
		t.Errorf("CreateBatch over a gap: error = %v, want ErrInvalidJobs", err)
	}
	if _, err := s.Batch(ctx, id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("batch exists after a failed create: %v", err)
	}
}

func testStageWrongID(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	id := newID("wrongid")
	jobs := specJobs(id, 0, 2)
	jobs[1].ID = "x"
	if err := s.StageJobs(ctx, id, 0, jobs); !errors.Is(err, store.ErrInvalidJobs) {
		t.Errorf("StageJobs with id %q at position 1: %v, want ErrInvalidJobs", "x", err)
	}
}

func testStageTwice(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	id := newID("twice")
	for range 2 {
		if err := s.StageJobs(ctx, id, 0, specJobs(id, 0, 3)); err != nil {
			t.Fatalf("StageJobs: %v", err)
		}
	}
	_, err := s.Update(ctx, []string{id}, func(tx store.Tx) error {
		n, err := tx.StagedChunks(ctx, id)
		if err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("StagedChunks = %d after staging one chunk twice, want 1", n)
		}
		return tx.CreateBatch(ctx, &store.Batch{ID: id, Type: events.Parallel, Status: events.StatusRunning, Queue: "default", Total: 3})
	})
	if err != nil {
		t.Fatal(err)
	}
}

func testUpdateCommits(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	b := createBatch(t, s, events.Parallel, 3, 3)
	_, err := s.Update(ctx, []string{b.ID}, func(tx store.Tx) error {
		jobs, err := tx.Jobs(ctx, b.ID, []string{"1", "9"})
		if err != nil {
			return err
		}
		if _, ok := jobs["9"]; ok {
			return errors.New("tx.Jobs returned a job that does not exist")
		}
		j := jobs["1"]
		j.Status = events.JobStatusCompleted
		j.Attempt = 2
		j.Result = json.RawMessage(`{"ok":true}`)
		now := time.Now().UTC().Truncate(time.Millisecond)
		j.FinishedAt = &now
		tx.SaveJob(j)
		bb, err := tx.Batch(b.ID)
		if err != nil {
			return err
		}
		bb.Completed++
		bb.Dispatching, bb.Dispatched = 3, 3
		tx.SaveBatch(bb)
		return nil
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	got, err := s.Batch(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Completed != 1 || got.Dispatching != 3 || got.Dispatched != 3 {
		t.Errorf("batch completed %d dispatching %d dispatched %d, want 1, 3 and 3", got.Completed, got.Dispatching, got.Dispatched)
	}
	if got.Version != b.Version+1 {
		t.Errorf("Version = %d, want %d", got.Version, b.Version+1)
	}
	j, err := s.Job(ctx, b.ID, "1")
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != events.JobStatusCompleted || j.Attempt != 2 || string(j.Result) != `{"ok":true}` || j.FinishedAt == nil {
		t.Errorf("job after update = %+v", j)
	}
	other, err := s.Job(ctx, b.ID, "0")
	if err != nil {
		t.Fatal(err)
	}
	if other.Status != events.JobStatusPending {
		t.Errorf("untouched job status = %s", other.Status)
	}
}

// testReadOwnWrites checks that a transaction sees its own saved changes:
// the coordinator applies several events to one batch in one update.
func testReadOwnWrites(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	b := createBatch(t, s, events.Chain, 3, 3)
	_, err := s.Update(ctx, []string{b.ID}, func(tx store.Tx) error {
		for i := range 3 {
			bb, err := tx.Batch(b.ID)
			if err != nil {
				return err
			}
			if bb.Completed != i {
				return fmt.Errorf("step %d: Batch shows Completed %d, want %d", i, bb.Completed, i)
			}
			bb.Completed++
			tx.SaveBatch(bb)
			j, err := tx.JobAt(ctx, b.ID, i)
			if err != nil {
				return err
			}
			j.Status = events.JobStatusCompleted
			tx.SaveJob(j)
			again, err := tx.Jobs(ctx, b.ID, []string{strconv.Itoa(i)})
			if err != nil {
				return err
			}
			if got := again[strconv.Itoa(i)].Status; got != events.JobStatusCompleted {
				return fmt.Errorf("step %d: Jobs shows status %s after SaveJob", i, got)
			}
			j.Result = json.RawMessage(`"changed after save"`)
			if again, _ := tx.JobAt(ctx, b.ID, i); string(again.Result) != "" {
				return fmt.Errorf("step %d: changing a saved job without SaveJob leaked into the transaction", i)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := s.Batch(ctx, b.ID)
	if got.Completed != 3 {
		t.Errorf("Completed = %d, want 3", got.Completed)
	}
	if got.Version != b.Version+1 {
		t.Errorf("Version = %d after one update, want %d", got.Version, b.Version+1)
	}
}

func testUpdateErrorRollsBack(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	b := createBatch(t, s, events.Parallel, 2, 2)
	boom := errors.New("boom")
	_, err := s.Update(ctx, []string{b.ID}, func(tx store.Tx) error {
		bb, _ := tx.Batch(b.ID)
		bb.Completed = 2
		tx.SaveBatch(bb)
		tx.Emit(b.ID, testMessage(b.ID, "rollback"))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update error = %v, want boom", err)
	}
	got, _ := s.Batch(ctx, b.ID)
	if got.Completed != 0 || got.Version != b.Version {
		t.Errorf("batch changed by a failed update: completed %d version %d", got.Completed, got.Version)
	}
	msgs, err := s.Outbox(ctx, time.Now().Add(time.Hour), 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if m.BatchID == b.ID {
			t.Errorf("outbox holds %s from a failed update", m.ID)
		}
	}
}

func testMessage(batchID, name string) events.Message {
	return events.Message{
		Subject: events.EventSubject("default", batchID, events.TypeBatchCompleted),
		ID:      batchID + ":" + name,
		Type:    events.TypeBatchCompleted,
		Data:    []byte(`{"specversion":"1.0"}`),
	}
}

func testOutbox(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	b := createBatch(t, s, events.Parallel, 1, 1)
	committed, err := s.Update(ctx, []string{b.ID}, func(tx store.Tx) error {
		tx.Emit(b.ID, testMessage(b.ID, "one"), testMessage(b.ID, "two"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(committed) != 2 || committed[0].ID != b.ID+":one" || committed[1].ID != b.ID+":two" {
		t.Fatalf("Update returned %+v, want the two messages in order", committed)
	}
	if committed[0].BatchID != b.ID || committed[0].Key == "" || committed[0].CreatedAt.IsZero() {
		t.Errorf("outbox message fields = %+v", committed[0])
	}
	if !bytes.Equal(committed[0].Data, []byte(`{"specversion":"1.0"}`)) {
		t.Errorf("outbox data = %q", committed[0].Data)
	}

	early, err := s.Outbox(ctx, time.Now().Add(-time.Hour), 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range early {
		if m.BatchID == b.ID {
			t.Errorf("Outbox with an old cutoff returned %s", m.ID)
		}
	}
	pending := outboxFor(t, s, b.ID)
	if len(pending) != 2 || pending[0].ID != b.ID+":one" {
		t.Fatalf("Outbox = %+v, want two messages oldest first", pending)
	}
	if pending[0].Subject != committed[0].Subject {
		t.Errorf("Outbox subject %q, want %q", pending[0].Subject, committed[0].Subject)
	}
	if err := s.DeleteOutbox(ctx, pending[:1]); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteOutbox(ctx, pending[:1]); err != nil {
		t.Errorf("deleting twice: %v", err)
	}
	left := outboxFor(t, s, b.ID)
	if len(left) != 1 || left[0].ID != b.ID+":two" {
		t.Errorf("Outbox after delete = %+v", left)
	}
}

func outboxFor(t *testing.T, s store.Store, batchID string) []store.OutboxMessage {
	t.Helper()
	msgs, err := s.Outbox(ctxFor(t), time.Now().Add(time.Hour), 10000)
	if err != nil {
		t.Fatal(err)
	}
	var out []store.OutboxMessage
	for _, m := range msgs {
		if m.BatchID == batchID {
			out = append(out, m)
		}
	}
	return out
}

func testConcurrentCounters(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	const writers, each = 4, 10
	b := createBatch(t, s, events.Parallel, writers*each, writers*each)
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				_, err := s.Update(ctx, []string{b.ID}, func(tx store.Tx) error {
					bb, err := tx.Batch(b.ID)
					if err != nil {
						return err
					}
					bb.Completed++
					tx.SaveBatch(bb)
					return nil
				})
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Update: %v", err)
	}
	got, _ := s.Batch(ctx, b.ID)
	if got.Completed != writers*each {
		t.Errorf("Completed = %d after %d increments; updates were lost", got.Completed, writers*each)
	}
	if got.Version != b.Version+writers*each {
		t.Errorf("Version = %d, want %d", got.Version, b.Version+writers*each)
	}
}

// testConcurrentTransition moves one job to a final status from several
// writers at once: exactly one transition may win.
func testConcurrentTransition(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	b := createBatch(t, s, events.Parallel, 1, 1)
	const writers = 6
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins int
	)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			won := false
			_, err := s.Update(ctx, []string{b.ID}, func(tx store.Tx) error {
				won = false
				jobs, err := tx.Jobs(ctx, b.ID, []string{"0"})
				if err != nil {
					return err
				}
				j := jobs["0"]
				if j.Status.Final() {
					return nil
				}
				j.Status = events.JobStatusCompleted
				j.Result = json.RawMessage(strconv.Itoa(w))
				tx.SaveJob(j)
				bb, _ := tx.Batch(b.ID)
				bb.Completed++
				tx.SaveBatch(bb)
				won = true
				return nil
			})
			if err != nil {
				t.Errorf("Update: %v", err)
			}
			if won {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("%d writers completed the job, want exactly 1", wins)
	}
	got, _ := s.Batch(ctx, b.ID)
	if got.Completed != 1 {
		t.Errorf("Completed = %d, want 1", got.Completed)
	}
}

func testTwoBatchesOneUpdate(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	a := createBatch(t, s, events.Parallel, 1, 1)
	b := createBatch(t, s, events.Chain, 1, 1)
	msgs, err := s.Update(ctx, []string{a.ID, b.ID}, func(tx store.Tx) error {
		for _, id := range []string{a.ID, b.ID} {
			bb, err := tx.Batch(id)
			if err != nil {
				return err
			}
			bb.Status = events.StatusCompleted
			now := time.Now().UTC()
			bb.FinishedAt = &now
			tx.SaveBatch(bb)
			tx.Emit(id, testMessage(id, "done"))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 {
		t.Errorf("Update returned %d messages, want 2", len(msgs))
	}
	for _, id := range []string{a.ID, b.ID} {
		got, _ := s.Batch(ctx, id)
		if got.Status != events.StatusCompleted || got.FinishedAt == nil {
			t.Errorf("batch %s status %s", id, got.Status)
		}
	}
}

func testInsertAddedJobs(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	b := createBatch(t, s, events.Chain, 2, 2)
	add := func(addID string, n int) {
		t.Helper()
		_, err := s.Update(ctx, []string{b.ID}, func(tx store.Tx) error {
			bb, _ := tx.Batch(b.ID)
			have, err := tx.Additions(ctx, b.ID, []string{addID})
			if err != nil {
				return err
			}
			if _, done := have[addID]; done {
				return nil
			}
			jobs := specJobs(b.ID, bb.Total, n)
			for _, j := range jobs {
				j.ParentID = "1"
			}
			if err := tx.InsertJobs(ctx, b.ID, jobs); err != nil {
				return err
			}
			if err := tx.RecordAddition(ctx, b.ID, store.Addition{ID: addID, FirstPosition: jobs[0].Position, Count: n}); err != nil {
				return err
			}
			bb.Total += n
			tx.SaveBatch(bb)
			return nil
		})
		if err != nil {
			t.Fatalf("add %s: %v", addID, err)
		}
	}
	add("1.0", 3)
	add("1.0", 3)
	add("c-client", 1)
	_, err := s.Update(ctx, []string{b.ID}, func(tx store.Tx) error {
		return tx.RecordAddition(ctx, b.ID, store.Addition{ID: "1.1", FirstPosition: -1, Code: events.CodeFinished, Error: "batch finished"})
	})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := s.Batch(ctx, b.ID)
	if got.Total != 6 {
		t.Fatalf("Total = %d after adding 3 (twice, same id) and 1, want 6", got.Total)
	}
	jobs, err := s.Jobs(ctx, b.ID, -1, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 6 {
		t.Fatalf("Jobs returned %d, want 6", len(jobs))
	}
	if jobs[2].ParentID != "1" || jobs[2].Position != 2 || jobs[2].ID != "2" {
		t.Errorf("added job = %+v", jobs[2])
	}
	_, err = s.Update(ctx, []string{b.ID}, func(tx store.Tx) error {
		have, err := tx.Additions(ctx, b.ID, []string{"1.0", "c-client", "1.1", "nope"})
		if err != nil {
			return err
		}
		if len(have) != 3 {
			return fmt.Errorf("Additions returned %d, want 3", len(have))
		}
		if a := have["1.0"]; a.FirstPosition != 2 || a.Count != 3 || a.Code != "" {
			return fmt.Errorf("addition 1.0 = %+v, want first 2 count 3", a)
		}
		if a := have["1.1"]; a.Code != events.CodeFinished || a.Error != "batch finished" || a.Count != 0 {
			return fmt.Errorf("rejected addition 1.1 = %+v", a)
		}
		j, err := tx.JobAt(ctx, b.ID, 5)
		if err != nil {
			return err
		}
		if j.ID != "5" {
			return fmt.Errorf("JobAt(5) = %s", j.ID)
		}
		j.Status = events.JobStatusQueued
		tx.SaveJob(j)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	j, _ := s.Job(ctx, b.ID, "5")
	if j.Status != events.JobStatusQueued {
		t.Errorf("added job status after save = %s", j.Status)
	}
}

func testCallbacks(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	b := createBatch(t, s, events.Parallel, 1, 1)
	cb := &store.Job{
		BatchID: b.ID, ID: string(events.OnComplete), Position: -1, Role: events.RoleCallback,
		Name: "done", Args: json.RawMessage(`{"x":1}`), Status: events.JobStatusQueued,
	}
	perJob := &store.Job{
		BatchID: b.ID, ID: events.CallbackJobID(events.OnJobFailure, "0"), Position: -1, Role: events.RoleCallback,
		Name: "jobfail", Status: events.JobStatusQueued,
	}
	insert := func(j *store.Job) error {
		_, err := s.Update(ctx, []string{b.ID}, func(tx store.Tx) error {
			return tx.InsertJobs(ctx, b.ID, []*store.Job{j})
		})
		return err
	}
	if err := insert(cb); err != nil {
		t.Fatal(err)
	}
	if err := insert(perJob); err != nil {
		t.Fatal(err)
	}
	if err := insert(cb); !errors.Is(err, store.ErrExists) {
		t.Errorf("inserting a callback twice: error = %v, want ErrExists", err)
	}
	cbs, err := s.Callbacks(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(cbs) != 1 || cbs[0].ID != string(events.OnComplete) || cbs[0].Role != events.RoleCallback {
		t.Errorf("Callbacks = %+v, want only on_complete", cbs)
	}
	got, err := s.Job(ctx, b.ID, perJob.ID)
	if err != nil || got.Name != "jobfail" {
		t.Errorf("Job(%s) = %+v, %v", perJob.ID, got, err)
	}
	jobs, _ := s.Jobs(ctx, b.ID, -1, 10)
	if len(jobs) != 1 {
		t.Errorf("Jobs lists %d entries; callbacks must not be listed", len(jobs))
	}
	_, err = s.Update(ctx, []string{b.ID}, func(tx store.Tx) error {
		m, err := tx.Jobs(ctx, b.ID, []string{string(events.OnComplete)})
		if err != nil {
			return err
		}
		c := m[string(events.OnComplete)]
		c.Status = events.JobStatusCompleted
		c.Attempt = 1
		tx.SaveJob(c)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	cbs, _ = s.Callbacks(ctx, b.ID)
	if len(cbs) != 1 || cbs[0].Status != events.JobStatusCompleted {
		t.Errorf("callback after save = %+v", cbs)
	}
}

func testPrevCompensable(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	id := newID("comp")
	jobs := specJobs(id, 0, 5)
	for _, p := range []int{0, 1, 3} {
		jobs[p].Compensation = &events.JobRef{Name: "undo", Args: json.RawMessage(strconv.Itoa(p))}
	}
	if err := s.StageJobs(ctx, id, 0, jobs); err != nil {
		t.Fatal(err)
	}
	_, err := s.Update(ctx, []string{id}, func(tx store.Tx) error {
		if err := tx.CreateBatch(ctx, &store.Batch{ID: id, Type: events.Chain, Status: events.StatusRunning, Queue: "default", Total: 5}); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Update(ctx, []string{id}, func(tx store.Tx) error {
		m, err := tx.Jobs(ctx, id, []string{"0", "1", "2", "3"})
		if err != nil {
			return err
		}
		for _, jid := range []string{"0", "1", "2"} {
			m[jid].Status = events.JobStatusCompleted
			tx.SaveJob(m[jid])
		}
		m["3"].Status = events.JobStatusFailed
		tx.SaveJob(m["3"])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var order []int
	_, err = s.Update(ctx, []string{id}, func(tx store.Tx) error {
		order = order[:0]
		before := 5
		for {
			j, err := tx.PrevCompensable(ctx, id, before)
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			order = append(order, j.Position)
			j.CompensationStatus = events.CompensationStatusQueued
			tx.SaveJob(j)
			before = j.Position
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(order) != "[3 1 0]" {
		t.Errorf("compensable positions = %v, want [3 1 0]", order)
	}
	_, err = s.Update(ctx, []string{id}, func(tx store.Tx) error {
		if j, err := tx.PrevCompensable(ctx, id, 5); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("PrevCompensable after queueing all = %v, %v; want ErrNotFound", j, err)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

func testUndispatched(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	p := createBatch(t, s, events.Parallel, 3, 3)
	c := createBatch(t, s, events.Chain, 3, 3)
	has := func(id string) bool {
		ids, err := s.Undispatched(ctx, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range ids {
			if x == id {
				return true
			}
		}
		return false
	}
	if !has(p.ID) {
		t.Error("new parallel batch is not listed as undispatched")
	}
	if has(c.ID) {
		t.Error("chain batch is listed as undispatched")
	}
	set := func(id string, change func(*store.Batch)) {
		t.Helper()
		_, err := s.Update(ctx, []string{id}, func(tx store.Tx) error {
			bb, err := tx.Batch(id)
			if err != nil {
				return err
			}
			change(bb)
			tx.SaveBatch(bb)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	set(p.ID, func(b *store.Batch) { b.Dispatching = 3 })
	if !has(p.ID) {
		t.Error("a batch with a publish in flight is not listed")
	}
	set(p.ID, func(b *store.Batch) { b.Dispatched = 3 })
	if has(p.ID) {
		t.Error("fully dispatched batch is still listed")
	}

	// A batch that stopped is listed only while a publish may have been
	// cut off.
	f := createBatch(t, s, events.Parallel, 5, 5)
	set(f.ID, func(b *store.Batch) { b.Dispatching, b.Dispatched, b.Status = 4, 2, events.StatusCompensating })
	if !has(f.ID) {
		t.Error("a stopped batch with a cut-off publish is not listed")
	}
	set(f.ID, func(b *store.Batch) { b.Dispatched = 4 })
	if has(f.ID) {
		t.Error("a stopped batch with nothing in flight is listed")
	}
}

func testRejected(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	for i := range 3 {
		ev := events.EventRejected{Subject: "batchq.events.x", Reason: fmt.Sprintf("reason %d", i), Sequence: uint64(i + 1), Data: []byte{0, 'x', 0xff}}
		if err := s.RecordRejected(ctx, ev); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond) // distinct timestamps order the records
	}
	got, err := s.Rejected(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Reason != "reason 2" || got[1].Reason != "reason 1" {
		t.Fatalf("Rejected(2) = %+v, want the two newest, newest first", got)
	}
	if !bytes.Equal(got[0].Data, []byte{0, 'x', 0xff}) || got[0].Sequence != 3 {
		t.Errorf("rejected event fields = %+v", got[0])
	}
}

func testPrune(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	old := createBatch(t, s, events.Parallel, 2, 1)
	recent := createBatch(t, s, events.Parallel, 2, 2)
	running := createBatch(t, s, events.Chain, 2, 2)
	finish := func(id string, at time.Time) {
		_, err := s.Update(ctx, []string{id}, func(tx store.Tx) error {
			bb, _ := tx.Batch(id)
			bb.Status = events.StatusCompleted
			bb.FinishedAt = &at
			tx.SaveBatch(bb)
			m, err := tx.Jobs(ctx, id, []string{"0"})
			if err != nil {
				return err
			}
			m["0"].Status = events.JobStatusCompleted
			m["0"].Result = json.RawMessage(`1`)
			tx.SaveJob(m["0"])
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC()
	finish(old.ID, now.Add(-2*time.Hour))
	finish(recent.ID, now)
	n, err := s.Prune(ctx, now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("Prune removed %d batches, want 1", n)
	}
	if _, err := s.Batch(ctx, old.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("old batch after prune: %v, want ErrNotFound", err)
	}
	if _, err := s.Job(ctx, old.ID, "0"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("old job after prune: %v, want ErrNotFound", err)
	}
	for _, id := range []string{recent.ID, running.ID} {
		if _, err := s.Batch(ctx, id); err != nil {
			t.Errorf("batch %s after prune: %v", id, err)
		}
	}
	n, err = s.Prune(ctx, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("second Prune removed %d, want 1 (the running batch stays)", n)
	}
	if _, err := s.Batch(ctx, running.ID); err != nil {
		t.Errorf("running batch removed by prune: %v", err)
	}
}

// testExactBytes stores values that are easy to mangle and reads them back
// byte for byte. Values are compact JSON, the form in which they arrive from
// the wire; number spelling, key order and duplicate keys must survive.
func testExactBytes(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	id := newID("bytes")
	values := []string{
		`{"nul":"a\u0000b"}`,
		`{"emoji":"😀🎉","rtl":"שלום עולם مرحبا"}`,
		`{"spaced":[1,2.50,1e3,-0.0],"z":null,"a":true}`,
		`"plain string"`,
		`{"dup":1,"dup":2}`,
	}
	jobs := specJobs(id, 0, len(values))
	for i, v := range values {
		jobs[i].Args = json.RawMessage(v)
	}
	if err := s.StageJobs(ctx, id, 0, jobs); err != nil {
		t.Fatal(err)
	}
	ctxValue := json.RawMessage(values[1])
	_, err := s.Update(ctx, []string{id}, func(tx store.Tx) error {
		return tx.CreateBatch(ctx, &store.Batch{ID: id, Type: events.Parallel, Status: events.StatusRunning, Queue: "default", Total: len(values), Context: ctxValue})
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Update(ctx, []string{id}, func(tx store.Tx) error {
		ids := make([]string, len(values))
		for i := range ids {
			ids[i] = strconv.Itoa(i)
		}
		m, err := tx.Jobs(ctx, id, ids)
		if err != nil {
			return err
		}
		for i, jid := range ids {
			m[jid].Result = json.RawMessage(values[len(values)-1-i])
			m[jid].Error = "fehler: \u202eevil\u202c ✗"
			tx.SaveJob(m[jid])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A missing result reads back as nil and a JSON null as null.
	_, err = s.Update(ctx, []string{id}, func(tx store.Tx) error {
		m, err := tx.Jobs(ctx, id, []string{"0", "1"})
		if err != nil {
			return err
		}
		m["0"].Result = nil
		m["1"].Result = json.RawMessage("null")
		tx.SaveJob(m["0"])
		tx.SaveJob(m["1"])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if j, _ := s.Job(ctx, id, "0"); j.Result != nil {
		t.Errorf("a nil result reads back as %q", j.Result)
	}
	if j, _ := s.Job(ctx, id, "1"); string(j.Result) != "null" {
		t.Errorf("a null result reads back as %q", j.Result)
	}
	wantResults := make([]string, len(values))
	for i := range values {
		wantResults[i] = values[len(values)-1-i]
	}
	wantResults[0], wantResults[1] = "", "null"

	b, _ := s.Batch(ctx, id)
	if !bytes.Equal(b.Context, ctxValue) {
		t.Errorf("context = %q, want %q", b.Context, ctxValue)
	}
	got, err := s.Jobs(ctx, id, -1, 100)
	if err != nil {
		t.Fatal(err)
	}
	for i, j := range got {
		if string(j.Args) != values[i] {
			t.Errorf("job %d args = %q, want %q", i, j.Args, values[i])
		}
		if string(j.Result) != wantResults[i] {
			t.Errorf("job %d result = %q, want %q", i, j.Result, wantResults[i])
		}
		if j.Error != "fehler: \u202eevil\u202c ✗" {
			t.Errorf("job %d error = %q", i, j.Error)
		}
	}
}

// testLargeBatch stages and reads a batch of 20,000 jobs in chunks.
func testLargeBatch(t *testing.T, s store.Store) {
	if testing.Short() {
		t.Skip("large batch skipped in -short mode")
	}
	ctx := ctxFor(t)
	b := createBatch(t, s, events.Parallel, 20000, 2500)
	seen := 0
	after := -1
	for {
		page, err := s.Jobs(ctx, b.ID, after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, j := range page {
			if j.Position != after+1 {
				t.Fatalf("position %d follows %d", j.Position, after)
			}
			after = j.Position
			seen++
		}
	}
	if seen != 20000 {
		t.Errorf("read %d jobs, want 20000", seen)
	}
}

// testManyAdditions adds 300 jobs one addition at a time, as a crawler that
// finds one link per page would, and reads them all back. A store that
// keeps per-addition bookkeeping must keep it bounded.
func testManyAdditions(t *testing.T, s store.Store) {
	if testing.Short() {
		t.Skip("many additions skipped in -short mode")
	}
	ctx := ctxFor(t)
	b := createBatch(t, s, events.Parallel, 1, 1)
	const n = 300
	for i := range n {
		_, err := s.Update(ctx, []string{b.ID}, func(tx store.Tx) error {
			bb, err := tx.Batch(b.ID)
			if err != nil {
				return err
			}
			jobs := specJobs(b.ID, bb.Total, 1)
			if err := tx.InsertJobs(ctx, b.ID, jobs); err != nil {
				return err
			}
			if err := tx.RecordAddition(ctx, b.ID, store.Addition{ID: fmt.Sprintf("0.%d", i), FirstPosition: bb.Total, Count: 1}); err != nil {
				return err
			}
			bb.Total++
			tx.SaveBatch(bb)
			return nil
		})
		if err != nil {
			t.Fatalf("addition %d: %v", i, err)
		}
	}
	jobs, err := s.Jobs(ctx, b.ID, -1, n+10)
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != n+1 {
		t.Fatalf("Jobs returned %d, want %d", len(jobs), n+1)
	}
	for i, j := range jobs {
		if j.Position != i || string(j.Args) != fmt.Sprintf(`{"n":%d}`, i) {
			t.Fatalf("job %d = position %d args %s", i, j.Position, j.Args)
		}
	}
	for _, id := range []string{"1", "17", "150", strconv.Itoa(n)} {
		if _, err := s.Job(ctx, b.ID, id); err != nil {
			t.Errorf("Job(%s): %v", id, err)
		}
	}
}

// testLateChunk stages a chunk for a batch that is already stored. The
// chunk the batch was created from may be staged again and changes
// nothing; a chunk the batch never had is rejected with ErrExists.
func testLateChunk(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	b := createBatch(t, s, events.Parallel, 2, 2)
	again := specJobs(b.ID, 0, 2)
	again[0].Name = "renamed"
	if err := s.StageJobs(ctx, b.ID, 0, again); err != nil {
		t.Errorf("staging the batch's own chunk again: %v", err)
	}
	if j, _ := s.Job(ctx, b.ID, "0"); j == nil || j.Name != "job" {
		t.Errorf("job 0 after a late chunk = %+v, want it unchanged", j)
	}
	if err := s.StageJobs(ctx, b.ID, 1, specJobs(b.ID, 2, 1)); !errors.Is(err, store.ErrExists) {
		t.Errorf("staging a new chunk for a stored batch: %v, want ErrExists", err)
	}
}
