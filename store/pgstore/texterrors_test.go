package pgstore_test

import (
	"testing"

	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/store"
	"github.com/batchq/batchq/store/pgstore"
)

// nulText is a string that Go, JSON and the KV store carry unchanged but
// that a Postgres text column rejects. A handler error that quotes binary
// data arrives at the coordinator in this form: JSON decodes "\u0000" to a
// NUL byte.
const nulText = "read header: unexpected byte \x00 at offset 4"

// TestJobErrorWithNULByte saves a job error that contains a NUL byte, as
// the coordinator does for every job.failed and job.retrying event. The
// update must commit; the NUL byte reads back as U+FFFD.
func TestJobErrorWithNULByte(t *testing.T) {
	pool := testPool(t)
	s := newStore(t, pool, pgstore.Config{})
	ctx := testContext(t)
	b := stageAndCreate(t, s, "nul-job-error", 1)

	_, err := s.Update(ctx, []string{b.ID}, func(tx store.Tx) error {
		m, err := tx.Jobs(ctx, b.ID, []string{"0"})
		if err != nil {
			return err
		}
		j := m["0"]
		j.Status = events.JobStatusFailed
		j.Attempt = 1
		j.Error = nulText
		tx.SaveJob(j)
		return nil
	})
	if err != nil {
		t.Fatalf("Update saving a job error with a NUL byte: %v", err)
	}
	j, err := s.Job(ctx, b.ID, "0")
	if err != nil {
		t.Fatal(err)
	}
	if want := "read header: unexpected byte \uFFFD at offset 4"; j.Error != want {
		t.Errorf("job error = %q, want %q", j.Error, want)
	}
}

// TestJobErrorInvalidUTF8 saves a job error with a byte that is not
// UTF-8. The coordinator builds such an error when a chain step written in
// another language reports a context that is not a JSON object. The error
// quotes the first 40 characters of the raw context, and encoding/json
// keeps the raw bytes in a json.RawMessage.
func TestJobErrorInvalidUTF8(t *testing.T) {
	pool := testPool(t)
	s := newStore(t, pool, pgstore.Config{})
	ctx := testContext(t)
	b := stageAndCreate(t, s, "utf8-job-error", 1)
	msg := "the step left a context that is not a JSON object (\"caf\xe9\"); a context must be an object"

	_, err := s.Update(ctx, []string{b.ID}, func(tx store.Tx) error {
		m, err := tx.Jobs(ctx, b.ID, []string{"0"})
		if err != nil {
			return err
		}
		j := m["0"]
		j.Status = events.JobStatusFailed
		j.Attempt = 1
		j.Error = msg
		tx.SaveJob(j)
		return nil
	})
	if err != nil {
		t.Fatalf("Update saving a job error with a byte that is not UTF-8: %v", err)
	}
}

// TestBatchErrorWithNULByte saves a batch whose Error quotes a job
// error with a NUL byte, as failJob does with "job N (name) failed: ...".
func TestBatchErrorWithNULByte(t *testing.T) {
	pool := testPool(t)
	s := newStore(t, pool, pgstore.Config{})
	ctx := testContext(t)
	b := stageAndCreate(t, s, "nul-batch-error", 1)

	_, err := s.Update(ctx, []string{b.ID}, func(tx store.Tx) error {
		bb, err := tx.Batch(b.ID)
		if err != nil {
			return err
		}
		bb.Error = "job 0 (job) failed: " + nulText
		tx.SaveBatch(bb)
		return nil
	})
	if err != nil {
		t.Fatalf("Update saving a batch error with a NUL byte: %v", err)
	}
}
