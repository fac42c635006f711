package pgstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/store"
	"github.com/batchq/batchq/store/pgstore"
	"github.com/batchq/batchq/store/storetest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// urlVariable names the environment variable with the test database URL.
const urlVariable = "BATCHQ_TEST_DATABASE_URL"

// testURL returns the test database URL or skips the test.
func testURL(t testing.TB) string {
	url := os.Getenv(urlVariable)
	if url == "" {
		t.Skipf("%s is not set; set it to a Postgres URL such as postgres://postgres@127.0.0.1:5432/test?sslmode=disable to run the Postgres store tests", urlVariable)
	}
	return url
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// testPool opens a pool on the test database, closed when the test ends.
func testPool(t testing.TB) *pgxpool.Pool {
	pool, err := pgxpool.New(testContext(t), testURL(t))
	if err != nil {
		t.Fatalf("open test pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

var schemaSeq atomic.Int64

// newSchema returns a schema name that no other test uses, and drops the
// schema when the test ends.
func newSchema(t testing.TB, pool *pgxpool.Pool) string {
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("batchq_test_%d_%s", schemaSeq.Add(1), hex.EncodeToString(suffix))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{name}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("drop test schema %s: %v", name, err)
		}
	})
	return name
}

// quietLogger drops the store's log lines, which every fresh schema would
// otherwise fill with migration messages.
var quietLogger = slog.New(slog.DiscardHandler)

// newStore returns a store on a fresh schema of pool.
func newStore(t testing.TB, pool *pgxpool.Pool, cfg pgstore.Config) *pgstore.Store {
	cfg.Schema = newSchema(t, pool)
	cfg.Logger = quietLogger
	s, err := pgstore.New(testContext(t), pool, cfg)
	if err != nil {
		t.Fatalf("pgstore.New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	pool := testPool(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		return newStore(t, pool, pgstore.Config{})
	})
}

func TestOpenConcurrentMigrate(t *testing.T) {
	url := testURL(t)
	pool := testPool(t)
	schema := newSchema(t, pool)
	ctx := testContext(t)

	const starts = 4
	var wg sync.WaitGroup
	errs := make([]error, starts)
	for i := range starts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := pgstore.Open(ctx, pgstore.Config{URL: url, Schema: schema, Logger: quietLogger})
			if err == nil {
				err = s.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d: %v", i, err)
		}
	}

	rows, err := pool.Query(ctx, "SELECT version FROM "+pgx.Identifier{schema, "schema_migrations"}.Sanitize()+" ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(versions) != "[1 2]" {
		t.Errorf("schema_migrations lists versions %v after %d concurrent starts, want [1 2]", versions, starts)
	}
}

func TestOpenBadURL(t *testing.T) {
	const password = "s3cret-pw"
	tests := []struct {
		name string
		url  string
		want []string
	}{
		{"Empty", "", []string{"missing database URL"}},
		{"InvalidPort", "postgres://batchq:" + password + "@127.0.0.1:notaport/test", []string{"invalid database URL", "127.0.0.1"}},
		{"Unreachable", "postgres://batchq:" + password + "@127.0.0.1:1/test?connect_timeout=5", []string{"connect to host 127.0.0.1:1", `database "test"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := pgstore.Open(testContext(t), pgstore.Config{URL: tc.url})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded, want an error")
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if strings.Contains(err.Error(), password) {
				t.Errorf("error %q contains the password", err)
			}
		})
	}
}

// stageAndCreate stores a parallel batch of n jobs, each with a
// compensation, staged in chunks of 10,000.
func stageAndCreate(t testing.TB, s store.Store, id string, n int) *store.Batch {
	t.Helper()
	ctx := testContext(t)
	chunk := 0
	for first := 0; first < n; first += 10000 {
		count := min(10000, n-first)
		jobs := make([]*store.Job, count)
		for i := range jobs {
			p := first + i
			jobs[i] = store.JobFromSpec(id, events.JobSpec{
				ID: strconv.Itoa(p), Position: p, Name: "job", Args: json.RawMessage(`{"n":` + strconv.Itoa(p) + `}`),
				Compensation: &events.JobRef{Name: "undo"},
			})
		}
		if err := s.StageJobs(ctx, id, chunk, jobs); err != nil {
			t.Fatalf("StageJobs: %v", err)
		}
		chunk++
	}
	_, err := s.Update(ctx, []string{id}, func(tx store.Tx) error {
		return tx.CreateBatch(ctx, &store.Batch{ID: id, Type: events.Parallel, Status: events.StatusRunning, Queue: "default", Total: n})
	})
	if err != nil {
		t.Fatalf("create batch %s: %v", id, err)
	}
	b, err := s.Batch(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func jobsTable(schema string) string {
	return pgx.Identifier{schema, "jobs"}.Sanitize()
}

// TestUpdateJobConflict changes a job row from another connection after
// the transaction read it. The guarded job update must then match no row.
func TestUpdateJobConflict(t *testing.T) {
	pool := testPool(t)
	ctx := testContext(t)
	schema := newSchema(t, pool)
	s, err := pgstore.New(ctx, pool, pgstore.Config{Schema: schema, UpdateAttempts: 1, Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	b := stageAndCreate(t, s, "conflict", 2)
	other := testPool(t)

	_, err = s.Update(ctx, []string{b.ID}, func(tx store.Tx) error {
		m, err := tx.Jobs(ctx, b.ID, []string{"0"})
		if err != nil {
			return err
		}
		_, err = other.Exec(ctx, "UPDATE "+jobsTable(schema)+" SET status = 'completed', attempt = 1 WHERE batch_id = $1 AND job_id = '0'", b.ID)
		if err != nil {
			return fmt.Errorf("change the row underneath: %w", err)
		}
		j := m["0"]
		j.Status = events.JobStatusFailed
		j.Attempt = 1
		tx.SaveJob(j)
		tx.Emit(b.ID, events.Message{Subject: "batchq.test", ID: "conflict:lost", Type: events.TypeBatchCompleted, Data: []byte("{}")})
		return nil
	})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Update error = %v, want ErrConflict", err)
	}

	j, err := s.Job(ctx, b.ID, "0")
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != events.JobStatusCompleted {
		t.Errorf("job status = %s, want the completed status that the other connection wrote", j.Status)
	}
	got, err := s.Batch(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != b.Version {
		t.Errorf("batch version = %d after a conflicting update, want %d", got.Version, b.Version)
	}
	msgs, err := s.Outbox(ctx, time.Now().Add(time.Hour), 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 0 {
		t.Errorf("outbox holds %d messages of a conflicting update, want 0", len(msgs))
	}
}

// TestUpdateRetriesJobConflict checks that Update runs fn again after the
// guarded job update failed, and commits the second run.
func TestUpdateRetriesJobConflict(t *testing.T) {
	pool := testPool(t)
	ctx := testContext(t)
	schema := newSchema(t, pool)
	s, err := pgstore.New(ctx, pool, pgstore.Config{Schema: schema, Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	b := stageAndCreate(t, s, "retry", 1)
	other := testPool(t)

	runs := 0
	var seen []events.JobStatus
	msgs, err := s.Update(ctx, []string{b.ID}, func(tx store.Tx) error {
		runs++
		m, err := tx.Jobs(ctx, b.ID, []string{"0"})
		if err != nil {
			return err
		}
		j := m["0"]
		seen = append(seen, j.Status)
		if runs == 1 {
			_, err := other.Exec(ctx, "UPDATE "+jobsTable(schema)+" SET status = 'queued' WHERE batch_id = $1 AND job_id = '0'", b.ID)
			if err != nil {
				return fmt.Errorf("change the row underneath: %w", err)
			}
		}
		j.Status = events.JobStatusCompleted
		tx.SaveJob(j)
		tx.Emit(b.ID, events.Message{Subject: "batchq.test", ID: fmt.Sprintf("retry:%d", runs), Type: events.TypeBatchCompleted, Data: []byte("{}")})
		return nil
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if runs != 2 {
		t.Fatalf("fn ran %d times, want 2", runs)
	}
	if fmt.Sprint(seen) != "[pending queued]" {
		t.Errorf("fn read statuses %v, want [pending queued]", seen)
	}
	if len(msgs) != 1 || msgs[0].ID != "retry:2" {
		t.Errorf("Update returned %+v, want only the message of the second run", msgs)
	}
	j, err := s.Job(ctx, b.ID, "0")
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != events.JobStatusCompleted {
		t.Errorf("job status = %s, want completed", j.Status)
	}
}

// fill sets every field reachable from v to a value that differs from its
// zero value and from the other fields, so a round trip shows which fields
// a store drops.
func fill(v reflect.Value, seed *int) {
	*seed++
	n := *seed
	switch v.Kind() {
	case reflect.String:
		v.SetString("s" + strconv.Itoa(n))
	case reflect.Int, reflect.Int32, reflect.Int64:
		v.SetInt(int64(n))
	case reflect.Uint, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(n))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			v.SetBytes([]byte(`{"n":` + strconv.Itoa(n) + `}`))
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), seed)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Date(2024, 1, 2, 3, 4, n, n*1000, time.UTC)))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), seed)
			}
		}
	}
}

// diffFields names the fields of two structs that differ, except skip.
func diffFields(a, b any, skip ...string) []string {
	va, vb := reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem()
	var out []string
	for i := range va.NumField() {
		name := va.Type().Field(i).Name
		if strings.Contains(" "+strings.Join(skip, " ")+" ", " "+name+" ") {
			continue
		}
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			out = append(out, fmt.Sprintf("%s: stored %v, read %v", name, va.Field(i).Interface(), vb.Field(i).Interface()))
		}
	}
	return out
}

// TestBatchFieldsRoundTrip stores a batch with every field set and reads it
// back, so a field added to store.Batch without a column fails here.
func TestBatchFieldsRoundTrip(t *testing.T) {
	pool := testPool(t)
	s := newStore(t, pool, pgstore.Config{})
	ctx := testContext(t)

	seed := 0
	var created store.Batch
	fill(reflect.ValueOf(&created).Elem(), &seed)
	created.ID = "fields"
	created.Type = events.Chain
	created.Status = events.StatusRunning
	created.Total = 0
	created.Completed, created.Failed, created.Skipped = 0, 0, 0
	created.Dispatching, created.Dispatched = 0, 0
	_, err := s.Update(ctx, []string{created.ID}, func(tx store.Tx) error {
		return tx.CreateBatch(ctx, &created)
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Batch(ctx, created.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffFields(&created, got, "UpdatedAt", "Version") {
		t.Errorf("after CreateBatch, %s", d)
	}

	var saved store.Batch
	fill(reflect.ValueOf(&saved).Elem(), &seed)
	saved.ID = created.ID
	saved.Type = events.Chain
	saved.Status = events.StatusCompleted
	saved.Total = saved.Completed + saved.Failed + saved.Skipped + 1
	saved.Dispatching = saved.Dispatched + 1
	_, err = s.Update(ctx, []string{created.ID}, func(tx store.Tx) error {
		tx.SaveBatch(&saved)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err = s.Batch(ctx, created.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffFields(&saved, got, "UpdatedAt", "Version") {
		t.Errorf("after SaveBatch, %s", d)
	}
	if got.Version != 2 {
		t.Errorf("Version = %d, want 2", got.Version)
	}
}

// TestJobFieldsRoundTrip stages a job with every field set, saves new
// state for it and reads it back, so a field added to store.Job without a
// column fails here.
func TestJobFieldsRoundTrip(t *testing.T) {
	pool := testPool(t)
	s := newStore(t, pool, pgstore.Config{})
	ctx := testContext(t)
	const batchID = "jobfields"

	seed := 0
	var staged store.Job
	fill(reflect.ValueOf(&staged).Elem(), &seed)
	staged.BatchID = batchID
	staged.ID = "0"
	staged.Position = 0
	staged.Role = events.RoleJob
	if err := s.StageJobs(ctx, batchID, 0, []*store.Job{&staged}); err != nil {
		t.Fatal(err)
	}
	_, err := s.Update(ctx, []string{batchID}, func(tx store.Tx) error {
		return tx.CreateBatch(ctx, &store.Batch{ID: batchID, Type: events.Chain, Status: events.StatusRunning, Queue: "default", Total: 1})
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Job(ctx, batchID, "0")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffFields(&staged, got) {
		t.Errorf("after StageJobs, %s", d)
	}

	var state store.Job
	fill(reflect.ValueOf(&state).Elem(), &seed)
	// Only the state of a stored job may change, so copy the spec.
	state.BatchID, state.ID, state.Position, state.Role = got.BatchID, got.ID, got.Position, got.Role
	state.Name, state.Args, state.Compensation = got.Name, got.Args, got.Compensation
	state.MaxAttempts, state.TimeoutMS, state.ParentID = got.MaxAttempts, got.TimeoutMS, got.ParentID
	_, err = s.Update(ctx, []string{batchID}, func(tx store.Tx) error {
		if _, err := tx.Jobs(ctx, batchID, []string{"0"}); err != nil {
			return err
		}
		tx.SaveJob(&state)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err = s.Job(ctx, batchID, "0")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffFields(&state, got) {
		t.Errorf("after SaveJob, %s", d)
	}
}

func TestSaveJobSpecChangeFails(t *testing.T) {
	pool := testPool(t)
	s := newStore(t, pool, pgstore.Config{})
	ctx := testContext(t)
	b := stageAndCreate(t, s, "spec", 1)

	_, err := s.Update(ctx, []string{b.ID}, func(tx store.Tx) error {
		m, err := tx.Jobs(ctx, b.ID, []string{"0"})
		if err != nil {
			return err
		}
		j := m["0"]
		j.Name = "renamed"
		j.Status = events.JobStatusCompleted
		tx.SaveJob(j)
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "name") {
		t.Fatalf("Update error = %v, want one naming the changed name", err)
	}
	j, err := s.Job(ctx, b.ID, "0")
	if err != nil {
		t.Fatal(err)
	}
	if j.Name != "job" || j.Status != events.JobStatusPending {
		t.Errorf("job after a failed update = name %q status %s, want job and pending", j.Name, j.Status)
	}
}

func TestStageJobsChecks(t *testing.T) {
	pool := testPool(t)
	s := newStore(t, pool, pgstore.Config{})
	ctx := testContext(t)
	spec := func(batchID string, p int) *store.Job {
		return store.JobFromSpec(batchID, events.JobSpec{ID: strconv.Itoa(p), Position: p, Name: "job"})
	}

	gap := []*store.Job{spec("a", 0), spec("a", 2)}
	if err := s.StageJobs(ctx, "a", 0, gap); !errors.Is(err, store.ErrInvalidJobs) {
		t.Errorf("chunk with a gap: error = %v, want ErrInvalidJobs", err)
	}
	if err := s.StageJobs(ctx, "a", 0, nil); !errors.Is(err, store.ErrInvalidJobs) {
		t.Errorf("empty chunk: error = %v, want ErrInvalidJobs", err)
	}

	if err := s.StageJobs(ctx, "b", 0, []*store.Job{spec("b", 0), spec("b", 1)}); err != nil {
		t.Fatal(err)
	}
	if err := s.StageJobs(ctx, "b", 0, []*store.Job{spec("b", 5)}); !errors.Is(err, store.ErrInvalidJobs) {
		t.Errorf("chunk 0 staged again with other positions: error = %v, want ErrInvalidJobs", err)
	}
	if err := s.StageJobs(ctx, "b", 1, []*store.Job{spec("b", 1), spec("b", 2)}); !errors.Is(err, store.ErrInvalidJobs) {
		t.Errorf("chunk overlapping chunk 0: error = %v, want ErrInvalidJobs", err)
	}
	_, err := s.Update(ctx, []string{"b"}, func(tx store.Tx) error {
		n, err := tx.StagedChunks(ctx, "b")
		if err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("StagedChunks = %d after a rejected overlapping chunk, want 1", n)
		}
		return tx.CreateBatch(ctx, &store.Batch{ID: "b", Type: events.Parallel, Status: events.StatusRunning, Queue: "default", Total: 2})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.StageJobs(ctx, "b", 0, []*store.Job{spec("b", 0), spec("b", 1)}); err != nil {
		t.Errorf("chunk redelivered after create: %v", err)
	}
	if err := s.StageJobs(ctx, "b", 1, []*store.Job{spec("b", 2)}); !errors.Is(err, store.ErrExists) {
		t.Errorf("new chunk after create: error = %v, want ErrExists", err)
	}
	jobs, err := s.Jobs(ctx, "b", -1, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 2 {
		t.Errorf("batch has %d jobs, want 2", len(jobs))
	}
}

// TestPrevCompensableSavedState checks that PrevCompensable judges jobs
// saved in the same transaction by their saved state, not their rows.
func TestPrevCompensableSavedState(t *testing.T) {
	pool := testPool(t)
	s := newStore(t, pool, pgstore.Config{})
	ctx := testContext(t)
	b := stageAndCreate(t, s, "walk", 5)

	_, err := s.Update(ctx, []string{b.ID}, func(tx store.Tx) error {
		m, err := tx.Jobs(ctx, b.ID, []string{"1", "3"})
		if err != nil {
			return err
		}
		m["1"].Status = events.JobStatusCompleted
		tx.SaveJob(m["1"])
		m["3"].Status = events.JobStatusFailed
		tx.SaveJob(m["3"])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	var order []int
	_, err = s.Update(ctx, []string{b.ID}, func(tx store.Tx) error {
		order = order[:0]
		// Job 2 becomes compensable only in this transaction, and job 3
		// stops being compensable only in this transaction.
		j2, err := tx.JobAt(ctx, b.ID, 2)
		if err != nil {
			return err
		}
		j2.Status = events.JobStatusCompleted
		tx.SaveJob(j2)
		j3, err := tx.JobAt(ctx, b.ID, 3)
		if err != nil {
			return err
		}
		j3.CompensationStatus = events.CompensationStatusQueued
		tx.SaveJob(j3)
		before := 5
		for {
			j, err := tx.PrevCompensable(ctx, b.ID, before)
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
	if fmt.Sprint(order) != "[2 1]" {
		t.Errorf("compensable positions = %v, want [2 1]", order)
	}
}

// TestCreateBatchRace creates one batch from several updates at once.
// Exactly one may create it, and the others must see store.ErrExists.
func TestCreateBatchRace(t *testing.T) {
	pool := testPool(t)
	s := newStore(t, pool, pgstore.Config{})
	ctx := testContext(t)
	const id = "race"
	jobs := []*store.Job{store.JobFromSpec(id, events.JobSpec{ID: "0", Position: 0, Name: "job"})}
	if err := s.StageJobs(ctx, id, 0, jobs); err != nil {
		t.Fatal(err)
	}

	const writers = 6
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[w] = s.Update(ctx, []string{id}, func(tx store.Tx) error {
				return tx.CreateBatch(ctx, &store.Batch{ID: id, Type: events.Parallel, Status: events.StatusRunning, Queue: "default", Total: 1})
			})
		}()
	}
	wg.Wait()
	created := 0
	for w, err := range errs {
		switch {
		case err == nil:
			created++
		case !errors.Is(err, store.ErrExists):
			t.Errorf("writer %d: error = %v, want nil or ErrExists", w, err)
		}
	}
	if created != 1 {
		t.Errorf("%d writers created the batch, want 1", created)
	}
}

func TestCallbacksStoredOrder(t *testing.T) {
	pool := testPool(t)
	s := newStore(t, pool, pgstore.Config{})
	ctx := testContext(t)
	b := stageAndCreate(t, s, "callbacks", 1)
	for _, kind := range []events.CallbackKind{events.OnFailure, events.OnComplete} {
		cb := &store.Job{BatchID: b.ID, ID: string(kind), Position: -1, Role: events.RoleCallback, Name: string(kind), Status: events.JobStatusQueued}
		_, err := s.Update(ctx, []string{b.ID}, func(tx store.Tx) error {
			return tx.InsertJobs(ctx, b.ID, []*store.Job{cb})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	cbs, err := s.Callbacks(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, cb := range cbs {
		ids = append(ids, cb.ID)
	}
	if fmt.Sprint(ids) != "[on_failure on_complete]" {
		t.Errorf("Callbacks = %v, want [on_failure on_complete], the order they were stored", ids)
	}
}

// TestOutboxSameMessageID emits a message whose id is already waiting in
// the outbox. The stream would drop it as a duplicate, so the store keeps
// one copy.
func TestOutboxSameMessageID(t *testing.T) {
	pool := testPool(t)
	s := newStore(t, pool, pgstore.Config{})
	ctx := testContext(t)
	b := stageAndCreate(t, s, "dup", 1)
	msg := events.Message{Subject: "batchq.test", ID: "dup:started", Type: events.TypeBatchStarted, Data: []byte("{}")}

	first, err := s.Update(ctx, []string{b.ID}, func(tx store.Tx) error {
		tx.Emit(b.ID, msg, msg)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != 1 {
		t.Errorf("first Update returned %d messages, want 1", len(first))
	}
	second, err := s.Update(ctx, []string{b.ID}, func(tx store.Tx) error {
		tx.Emit(b.ID, msg)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(second) != 0 {
		t.Errorf("second Update returned %d messages, want 0", len(second))
	}
	pending, err := s.Outbox(ctx, time.Now().Add(time.Hour), 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != 1 {
		t.Errorf("outbox holds %d messages, want 1", len(pending))
	}
}

func TestRejectedKeepsNewest(t *testing.T) {
	pool := testPool(t)
	s := newStore(t, pool, pgstore.Config{MaxRejected: 3})
	ctx := testContext(t)
	for i := range 5 {
		ev := events.EventRejected{Subject: "batchq.x", Reason: strconv.Itoa(i), Sequence: math.MaxUint64 - uint64(i)}
		if err := s.RecordRejected(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Rejected(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, ev := range got {
		reasons = append(reasons, ev.Reason)
	}
	if fmt.Sprint(reasons) != "[4 3 2]" {
		t.Errorf("Rejected reasons = %v, want [4 3 2]", reasons)
	}
	if len(got) > 0 && got[0].Sequence != math.MaxUint64-4 {
		t.Errorf("Sequence = %d, want %d", got[0].Sequence, uint64(math.MaxUint64-4))
	}
}

// TestPruneInChunks prunes more batches than fit in one statement and
// checks that every row of a pruned batch is gone.
func TestPruneInChunks(t *testing.T) {
	pool := testPool(t)
	schema := newSchema(t, pool)
	ctx := testContext(t)
	s, err := pgstore.New(ctx, pool, pgstore.Config{Schema: schema, PruneChunk: 2, Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour).UTC()
	for i := range 5 {
		id := fmt.Sprintf("old-%d", i)
		stageAndCreate(t, s, id, 2)
		_, err := s.Update(ctx, []string{id}, func(tx store.Tx) error {
			b, err := tx.Batch(id)
			if err != nil {
				return err
			}
			added := &store.Job{BatchID: id, ID: "2", Position: 2, Role: events.RoleJob, Name: "job", Status: events.JobStatusPending}
			if err := tx.InsertJobs(ctx, id, []*store.Job{added}); err != nil {
				return err
			}
			if err := tx.RecordAddition(ctx, id, store.Addition{ID: "add", FirstPosition: 2, Count: 1}); err != nil {
				return err
			}
			b.Total++
			b.Status = events.StatusCompleted
			b.FinishedAt = &old
			tx.SaveBatch(b)
			tx.Emit(id, events.Message{Subject: "batchq.test", ID: id + ":completed", Type: events.TypeBatchCompleted, Data: []byte("{}")})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	running := stageAndCreate(t, s, "running", 2)

	n, err := s.Prune(ctx, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if n != 5 {
		t.Errorf("Prune removed %d batches, want 5", n)
	}
	tables := map[string]string{"batches": "id", "jobs": "batch_id", "batch_chunks": "batch_id", "additions": "batch_id", "outbox": "batch_id"}
	for table, column := range tables {
		var left int
		q := "SELECT count(*) FROM " + pgx.Identifier{schema, table}.Sanitize() + " WHERE " + column + " LIKE 'old-%'"
		if err := pool.QueryRow(ctx, q).Scan(&left); err != nil {
			t.Fatal(err)
		}
		if left != 0 {
			t.Errorf("%s holds %d rows of pruned batches", table, left)
		}
	}
	if _, err := s.Batch(ctx, running.ID); err != nil {
		t.Errorf("running batch after prune: %v", err)
	}
	jobs, err := s.Jobs(ctx, running.ID, -1, 10)
	if err != nil || len(jobs) != 2 {
		t.Errorf("running batch jobs after prune = %d, %v; want 2", len(jobs), err)
	}
}

// BenchmarkUpdateGroup completes jobs of a 100,000-job parallel batch in
// groups of 256 per Update, the way the coordinator commits a group of
// job.completed events, and reports completed jobs per second.
func BenchmarkUpdateGroup(b *testing.B) {
	const (
		total = 100_000
		group = 256
	)
	pool := testPool(b)
	s := newStore(b, pool, pgstore.Config{})
	ctx := testContext(b)
	batch := stageAndCreate(b, s, "bench", total)
	ids := make([]string, total)
	for i := range ids {
		ids[i] = strconv.Itoa(i)
	}
	result := json.RawMessage(`{"ok":true}`)

	groups, next := 0, 0
	for b.Loop() {
		if next+group > total {
			next = 0
		}
		groupIDs := ids[next : next+group]
		next += group
		_, err := s.Update(ctx, []string{batch.ID}, func(tx store.Tx) error {
			jobs, err := tx.Jobs(ctx, batch.ID, groupIDs)
			if err != nil {
				return err
			}
			bb, err := tx.Batch(batch.ID)
			if err != nil {
				return err
			}
			now := time.Now().UTC()
			for _, id := range groupIDs {
				j := jobs[id]
				if !j.Status.Final() {
					bb.Completed++
				}
				j.Status = events.JobStatusCompleted
				j.Attempt++
				j.Result = result
				j.FinishedAt = &now
				tx.SaveJob(j)
			}
			tx.SaveBatch(bb)
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		groups++
	}
	b.ReportMetric(float64(groups*group)/b.Elapsed().Seconds(), "jobs/s")
}
