package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchq/batchq"
	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/executor"
	"github.com/batchq/batchq/store"
	"github.com/nats-io/nats.go"
)

// sagaLog records jobs, compensations and callbacks in the order they ran.
type sagaLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *sagaLog) add(s string) {
	l.mu.Lock()
	l.lines = append(l.lines, s)
	l.mu.Unlock()
}

func (l *sagaLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, ",")
}

func (l *sagaLog) step(fail bool) executor.Handler {
	return func(ctx context.Context, j *executor.Job) error {
		l.add(j.Name())
		if fail {
			return executor.Permanent(errors.New(j.Name() + " broke"))
		}
		return j.SetResult(map[string]string{"did": j.Name()})
	}
}

// sagaHandlers returns step handlers a..e, with the named ones failing.
func (l *sagaLog) handlers(failing ...string) map[string]executor.Handler {
	h := map[string]executor.Handler{}
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		fail := false
		for _, f := range failing {
			fail = fail || f == n
		}
		h[n] = l.step(fail)
	}
	h["failed"] = func(ctx context.Context, j *executor.Job) error { l.add("on_failure"); return nil }
	return h
}

func (l *sagaLog) undo() executor.Handler {
	return func(ctx context.Context, j *executor.Job) error {
		l.add(j.Name())
		return nil
	}
}

func undoHandlers(l *sagaLog) map[string]executor.Handler {
	h := map[string]executor.Handler{}
	for _, n := range []string{"undo_a", "undo_b", "undo_c", "undo_d", "undo_e"} {
		h[n] = l.undo()
	}
	return h
}

func compensated(names ...string) []batchq.Job {
	jobs := make([]batchq.Job, len(names))
	for i, n := range names {
		jobs[i] = batchq.Job{Name: n, Args: map[string]string{"step": n}}.WithCompensation("undo_"+n, map[string]string{"undo": n})
	}
	return jobs
}

func TestChainCompensatesInReverse(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		log := &sagaLog{}
		e.startExecutor("default", log.handlers("d"), nil)
		e.startCompensator("default", undoHandlers(log))
		id, err := e.client.NewChain(compensated("a", "b", "c", "d")...).OnFailure("failed", nil).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		info := e.wait(id)
		if info.Status != batchq.StatusFailed {
			t.Fatalf("chain = %+v", info)
		}
		eventually(t, "the failure callback", func() bool { return strings.HasSuffix(log.String(), "on_failure") })
		time.Sleep(settleTime)
		if got, want := log.String(), "a,b,c,d,undo_d,undo_c,undo_b,undo_a,on_failure"; got != want {
			t.Errorf("ran %s, want %s", got, want)
		}
		if c := info.Compensation; c.Total != 4 || c.Completed != 4 || c.Failed != 0 {
			t.Errorf("compensation counts = %+v", c)
		}
	})
}

func TestChainFailureSkipsLaterSteps(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		log := &sagaLog{}
		e.startExecutor("default", log.handlers("c"), nil)
		e.startCompensator("default", undoHandlers(log))
		jobs := append(compensated("a", "b"), batchq.Job{Name: "c"}, compensated("d")[0])
		id, err := e.client.NewChain(jobs...).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		info := e.wait(id)
		time.Sleep(settleTime)
		if got, want := log.String(), "a,b,c,undo_b,undo_a"; got != want {
			t.Errorf("ran %s, want %s", got, want)
		}
		if info.Status != batchq.StatusFailed || info.Skipped != 1 || info.Compensation.Completed != 2 {
			t.Errorf("chain = %+v", info)
		}
	})
}

func TestParallelCompensationInfo(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		rec := &recorder{}
		e.startExecutor("default", map[string]executor.Handler{
			"ok":   rec.record(nil),
			"fail": rec.record(func(context.Context, *executor.Job) error { return errors.New("gateway down") }),
		}, nil)
		e.startCompensator("default", map[string]executor.Handler{"undo": rec.record(nil)})
		id, err := e.client.NewBatch(
			batchq.Job{Name: "ok"},
			batchq.Job{Name: "fail", Args: map[string]int{"order": 7}}.WithCompensation("undo", map[string]string{"why": "refund"}),
		).Context(map[string]string{"tenant": "acme"}).MaxAttempts(2).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		info := e.wait(id)
		if info.Status != batchq.StatusFailed || info.Compensation.Completed != 1 {
			t.Fatalf("batch = %+v", info)
		}
		time.Sleep(settleTime)
		undo := rec.named("undo")
		if len(undo) != 1 {
			t.Fatalf("compensation ran %d times, want 1", len(undo))
		}
		c := undo[0].comp
		want := events.CompensationInfo{
			BatchID: id, JobID: "1", JobName: "fail", Args: json.RawMessage(`{"order":7}`),
			Position: 1, Error: "job 1 (fail) failed: gateway down", Context: json.RawMessage(`{"tenant":"acme"}`),
		}
		if c == nil || c.BatchID != want.BatchID || c.JobID != want.JobID || c.JobName != want.JobName ||
			string(c.Args) != string(want.Args) || c.Position != want.Position || c.Error != want.Error ||
			string(c.Context) != string(want.Context) || c.Result != nil {
			t.Errorf("_compensation = %+v, want %+v", c, want)
		}
		if string(undo[0].args) != `{"why":"refund"}` {
			t.Errorf("compensation args = %s", undo[0].args)
		}
		j, _ := e.client.JobResult(e.ctx(), id, "1")
		if j.Compensation != events.CompensationStatusCompleted {
			t.Errorf("job compensation status = %s", j.Compensation)
		}
	})
}

func TestFailedCompensationRecordedOthersRun(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		log := &sagaLog{}
		e.startExecutor("default", log.handlers("c"), nil)
		undo := undoHandlers(log)
		undo["undo_b"] = func(ctx context.Context, j *executor.Job) error {
			log.add("undo_b")
			return errors.New("refund api down")
		}
		e.startCompensator("default", undo)
		tp := newTap(t, e.nc, events.EventsPrefix+".*.*.compensation.*")
		id, err := e.client.NewChain(compensated("a", "b", "c")...).MaxAttempts(2).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		info := e.wait(id)
		if got, want := log.String(), "a,b,c,undo_c,undo_b,undo_b,undo_a"; got != want {
			t.Errorf("ran %s, want %s", got, want)
		}
		if c := info.Compensation; c.Total != 3 || c.Completed != 2 || c.Failed != 1 {
			t.Errorf("compensation counts = %+v", c)
		}
		j, _ := e.client.JobResult(e.ctx(), id, "1")
		if j.Compensation != events.CompensationStatusFailed || !strings.Contains(j.CompensationError, "refund api down") {
			t.Errorf("job b = %+v", j)
		}
		eventually(t, "a compensation.failed event", func() bool { return tp.count("compensation.failed:1") == 1 })
	})
}

func TestCompensationRerunAfterCrash(t *testing.T) {
	e := kvEnv(t)
	e.startCoordinator(nil)
	log := &sagaLog{}
	e.startExecutor("default", log.handlers("b"), nil)
	block := make(chan struct{})
	defer close(block)
	started := make(chan struct{})
	conn := e.nc
	var once sync.Once
	crashing := e.startCompensatorWith(func(c *executor.Config) { conn = c.Conn; c.AckWait = time.Second }, map[string]executor.Handler{
		"undo_a": func(ctx context.Context, j *executor.Job) error {
			once.Do(func() { close(started) })
			<-block
			return nil
		},
	})
	id, err := e.client.NewChain(compensated("a", "b")...).Dispatch(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	<-started
	conn.Close()
	_ = crashing
	e.startCompensator("default", undoHandlers(log))
	info := e.wait(id)
	if info.Status != batchq.StatusFailed || info.Compensation.Completed != 1 {
		t.Fatalf("batch = %+v", info)
	}
	if got := log.String(); got != "a,b,undo_a" {
		t.Errorf("ran %s; the interrupted compensation must run again", got)
	}
}

func TestDuplicateCompensationOutcome(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		duplicateOutcomes(t, e, 300*time.Millisecond)
		log := &sagaLog{}
		e.startExecutor("default", log.handlers("c"), nil)
		e.startCompensator("default", undoHandlers(log))
		id, err := e.client.NewChain(compensated("a", "b", "c")...).OnFailure("failed", nil).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		e.wait(id)
		time.Sleep(1200 * time.Millisecond)
		info, _ := e.client.Batch(e.ctx(), id)
		if c := info.Compensation; c.Total != 3 || c.Completed != 3 {
			t.Errorf("compensation counts after duplicates = %+v", c)
		}
		if got, want := log.String(), "a,b,c,undo_c,undo_b,undo_a,on_failure"; got != want {
			t.Errorf("ran %s, want %s", got, want)
		}
	})
}

func TestCancelChainDuringStep(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		log := &sagaLog{}
		h := log.handlers()
		running := make(chan struct{})
		h["c"] = func(ctx context.Context, j *executor.Job) error {
			log.add("c")
			close(running)
			<-ctx.Done()
			return ctx.Err()
		}
		e.startExecutor("default", h, nil)
		e.startCompensator("default", undoHandlers(log))
		tp := newTap(t, e.nc, events.EventsPrefix+".*.*.batch.cancelled")
		id, err := e.client.NewChain(compensated("a", "b", "c", "d")...).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		<-running
		if err := e.client.Cancel(e.ctx(), id, "customer changed their mind"); err != nil {
			t.Fatal(err)
		}
		info := e.wait(id)
		time.Sleep(settleTime)
		if info.Status != batchq.StatusCancelled || info.Error != "cancelled: customer changed their mind" {
			t.Errorf("batch = %+v", info)
		}
		got := log.String()
		if got != "a,b,c,undo_b,undo_a" && got != "a,b,c,undo_c,undo_b,undo_a" {
			t.Errorf("ran %s, want steps a,b,c then undo_b,undo_a (undo_c only if c took effect)", got)
		}
		if strings.Contains(got, ",d") {
			t.Errorf("step d ran after cancel: %s", got)
		}
		if info.Completed+info.Failed+info.Skipped != info.Total {
			t.Errorf("counts do not add up: %+v", info)
		}
		if tp.count("batch.cancelled") != 1 {
			t.Errorf("batch.cancelled events: %s", tp)
		}
		if err := e.client.Cancel(e.ctx(), id, "again"); !errors.Is(err, batchq.ErrBatchFinished) {
			t.Errorf("second Cancel: %v, want ErrBatchFinished", err)
		}
		if err := e.client.Cancel(e.ctx(), "no-such-batch", ""); !errors.Is(err, batchq.ErrBatchNotFound) {
			t.Errorf("Cancel of an unknown batch: %v, want ErrBatchNotFound", err)
		}
	})
}

func TestCancelParallelSkipsQueuedJobs(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		log := &sagaLog{}
		g := newGate()
		h := map[string]executor.Handler{
			"a": func(ctx context.Context, j *executor.Job) error {
				if j.Position() == 1 {
					if err := g.handler()(ctx, j); err != nil {
						return err
					}
				}
				log.add("a" + j.ID())
				return nil
			},
		}
		e.startExecutor("default", h, func(c *executor.Config) { c.Concurrency = 1 })
		e.startCompensator("default", map[string]executor.Handler{"undo_a": func(ctx context.Context, j *executor.Job) error {
			log.add("undo_a" + j.Compensation().JobID)
			return nil
		}})
		jobs := make([]batchq.Job, 6)
		for i := range jobs {
			jobs[i] = batchq.Job{Name: "a"}.WithCompensation("undo_a", nil)
		}
		id, err := e.client.NewBatch(jobs...).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "job 0 to complete", func() bool {
			b, _ := e.client.Batch(e.ctx(), id)
			return b != nil && b.Completed == 1
		})
		if err := e.client.Cancel(e.ctx(), id, ""); err != nil {
			t.Fatal(err)
		}
		info := e.wait(id)
		if info.Status != batchq.StatusCancelled {
			t.Fatalf("batch = %+v", info)
		}
		if info.Completed+info.Failed+info.Skipped != 6 || info.Skipped < 4 {
			t.Errorf("counts = %+v, want jobs 2..5 skipped", info)
		}
		// Job 1 was running when the batch was cancelled; it failed while
		// it may have taken effect, so its compensation runs too, first.
		if got := log.String(); got != "a0,undo_a1,undo_a0" {
			t.Errorf("ran %s, want a0,undo_a1,undo_a0", got)
		}
	})
}
