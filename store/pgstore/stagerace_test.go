package pgstore_test

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/store"
	"github.com/batchq/batchq/store/pgstore"
)

// TestStageDuringCreate stages a new chunk while another transaction
// creates the batch, as a second coordinator replica does when it applies
// a batch.jobs event at the moment the first one applies batch.submitted.
// The chunk waits for the creation and is then rejected with
// store.ErrExists, so the batch never stores jobs from its Total on.
func TestStageDuringCreate(t *testing.T) {
	pool := testPool(t)
	s := newStore(t, pool, pgstore.Config{})
	ctx := testContext(t)
	const id = "stage-race"
	spec := func(p int) *store.Job {
		return store.JobFromSpec(id, events.JobSpec{ID: strconv.Itoa(p), Position: p, Name: "job"})
	}
	if err := s.StageJobs(ctx, id, 0, []*store.Job{spec(0), spec(1)}); err != nil {
		t.Fatal(err)
	}

	late := make(chan error, 1)
	started := false
	_, err := s.Update(ctx, []string{id}, func(tx store.Tx) error {
		if err := tx.CreateBatch(ctx, &store.Batch{ID: id, Type: events.Parallel, Status: events.StatusRunning, Queue: "default", Total: 2}); err != nil {
			return err
		}
		// Another connection stages chunk 1 after CreateBatch counted the
		// staged jobs and before the batch row is written and committed.
		if !started {
			started = true
			go func() { late <- s.StageJobs(ctx, id, 1, []*store.Job{spec(2)}) }()
			time.Sleep(200 * time.Millisecond)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("create batch: %v", err)
	}
	if lateErr := <-late; !errors.Is(lateErr, store.ErrExists) {
		t.Errorf("StageJobs of a new chunk during CreateBatch = %v, want store.ErrExists", lateErr)
	}

	b, err := s.Batch(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := s.Jobs(ctx, id, -1, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != b.Total {
		t.Errorf("batch has Total %d but stores %d jobs", b.Total, len(jobs))
	}

	// The coordinator adds jobs at position Total. With a stray job there,
	// InsertJobs fails with ErrExists and jobs.added is retried forever.
	_, err = s.Update(ctx, []string{id}, func(tx store.Tx) error {
		bb, err := tx.Batch(id)
		if err != nil {
			return err
		}
		added := store.JobFromSpec(id, events.JobSpec{ID: strconv.Itoa(bb.Total), Position: bb.Total, Name: "added"})
		if err := tx.InsertJobs(ctx, id, []*store.Job{added}); err != nil {
			return err
		}
		bb.Total++
		tx.SaveBatch(bb)
		return nil
	})
	if errors.Is(err, store.ErrExists) {
		t.Errorf("adding a job at position %d: %v", b.Total, err)
	} else if err != nil {
		t.Fatal(err)
	}
}
