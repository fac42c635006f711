package coordinator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batchq/batchq"
	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/executor"
	"github.com/batchq/batchq/store"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// duplicateOutcomes republishes every outcome event twice: once at once
// with its own message id, which the stream drops, and once after delay
// with a new id, as a redelivery after the duplicate window would arrive.
func duplicateOutcomes(t *testing.T, e *env, delay time.Duration) *atomic.Int64 {
	js, err := jetstream.New(e.nc)
	if err != nil {
		t.Fatal(err)
	}
	var copies atomic.Int64
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	sub, err := e.nc.Subscribe(events.EventsPrefix+".>", func(m *nats.Msg) {
		if !strings.Contains(m.Subject, ".job.") && !strings.Contains(m.Subject, ".compensation.") {
			return
		}
		if m.Header.Get("Test-Copy") != "" {
			return // this subscription also sees the copies it publishes
		}
		same := nats.NewMsg(m.Subject)
		same.Data = m.Data
		same.Header.Set(nats.MsgIdHdr, m.Header.Get(nats.MsgIdHdr))
		same.Header.Set("Test-Copy", "same")
		late := nats.NewMsg(m.Subject)
		late.Data = m.Data
		late.Header.Set(nats.MsgIdHdr, m.Header.Get(nats.MsgIdHdr)+":late-copy")
		late.Header.Set("Test-Copy", "late")
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := js.PublishMsg(ctx, same); err == nil {
				copies.Add(1)
			}
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return
			}
			if _, err := js.PublishMsg(ctx, late); err == nil {
				copies.Add(1)
			}
		}()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = sub.Unsubscribe()
		cancel()
		wg.Wait()
	})
	return &copies
}

func TestDuplicateOutcomesCountOnce(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		copies := duplicateOutcomes(t, e, 300*time.Millisecond)
		rec := &recorder{}
		e.startExecutor("default", map[string]executor.Handler{
			"ok": rec.record(nil),
			"flaky": rec.record(func(ctx context.Context, j *executor.Job) error {
				if j.Attempt() == 1 {
					return errors.New("transient")
				}
				return nil
			}),
			"bad":  rec.record(func(context.Context, *executor.Job) error { return executor.Permanent(errors.New("no")) }),
			"done": rec.record(nil),
			"oops": rec.record(nil),
			"step": rec.record(nil),
		}, nil)

		jobs := append(batchq.Jobs("ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok"), batchq.Job{Name: "flaky"})
		okID, err := e.client.NewBatch(jobs...).OnComplete("done", nil).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		badID, err := e.client.NewBatch(batchq.Jobs("bad", "ok")...).OnComplete("done", nil).OnFailure("oops", nil).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		chainID, err := e.client.NewChain(batchq.Jobs("step", "step", "step")...).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{okID, badID, chainID} {
			e.wait(id)
		}
		time.Sleep(3 * 300 * time.Millisecond) // let every late copy arrive
		if copies.Load() == 0 {
			t.Fatal("no duplicate was published; the test did not exercise anything")
		}

		ok, _ := e.client.Batch(e.ctx(), okID)
		if ok.Status != batchq.StatusCompleted || ok.Completed != 9 || ok.Failed != 0 || ok.Progress != 100 {
			t.Errorf("completed batch after duplicates = %+v", ok)
		}
		bad, _ := e.client.Batch(e.ctx(), badID)
		if bad.Status != batchq.StatusFailed || bad.Failed != 1 || bad.Completed+bad.Failed > bad.Total {
			t.Errorf("failed batch after duplicates = %+v", bad)
		}
		chain, _ := e.client.Batch(e.ctx(), chainID)
		if chain.Status != batchq.StatusCompleted || chain.Completed != 3 {
			t.Errorf("chain after duplicates = %+v", chain)
		}
		if n := len(rec.named("step")); n != 3 {
			t.Errorf("chain steps ran %d times, want 3: a duplicate completion started a step twice", n)
		}
		if n := len(rec.named("done")); n != 1 {
			t.Errorf("completion callbacks ran %d times, want 1", n)
		}
		if n := len(rec.named("oops")); n != 1 {
			t.Errorf("failure callbacks ran %d times, want 1", n)
		}
		flaky, _ := e.client.JobResult(e.ctx(), okID, "8")
		if flaky.Attempts != 2 || flaky.Status != events.JobStatusCompleted {
			t.Errorf("retried job = %+v", flaky)
		}
	})
}

// TestLastTwoJobsTogether finishes the last two jobs of many batches at the
// same moment, with two coordinator replicas on one store.
func TestLastTwoJobsTogether(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		e.startCoordinator(nil)
		rec := &recorder{}
		var mu sync.Mutex
		arrived := map[string]int{}
		release := map[string]chan struct{}{}
		pair := func(ctx context.Context, j *executor.Job) error {
			mu.Lock()
			if release[j.BatchID()] == nil {
				release[j.BatchID()] = make(chan struct{})
			}
			ch := release[j.BatchID()]
			arrived[j.BatchID()]++
			if arrived[j.BatchID()] == 2 {
				close(ch)
			}
			mu.Unlock()
			select {
			case <-ch:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		e.startExecutor("default", map[string]executor.Handler{"pair": pair, "done": rec.record(nil)}, func(c *executor.Config) { c.Concurrency = 16 })
		e.startExecutor("default", map[string]executor.Handler{"pair": pair, "done": rec.record(nil)}, func(c *executor.Config) { c.Concurrency = 16 })

		const batches = 12
		ids := make([]string, batches)
		for i := range ids {
			id, err := e.client.NewBatch(batchq.Jobs("pair", "pair")...).OnComplete("done", nil).Dispatch(e.ctx())
			if err != nil {
				t.Fatal(err)
			}
			ids[i] = id
		}
		for _, id := range ids {
			if info := e.wait(id); info.Completed != 2 || info.Status != batchq.StatusCompleted {
				t.Errorf("batch %s = %+v", id, info)
			}
		}
		eventually(t, "every callback", func() bool { return len(rec.named("done")) >= batches })
		time.Sleep(settleTime)
		perBatch := map[string]int{}
		for _, c := range rec.named("done") {
			perBatch[c.batchID]++
		}
		for _, id := range ids {
			if perBatch[id] != 1 {
				t.Errorf("batch %s ran its callback %d times, want 1", id, perBatch[id])
			}
		}
	})
}

// TestCrashBetweenCommitAndPublish stops a coordinator right after it
// committed the completion of a chain step and before it published the next
// step. A new coordinator must finish the chain with every step and the
// callback run once.
func TestCrashBetweenCommitAndPublish(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		var commits atomic.Int32
		crashed := e.startCoordinator(func(c *Config) {
			c.afterCommit = func() error {
				if commits.Add(1) == 2 {
					return errors.New("simulated crash after commit")
				}
				return nil
			}
		})
		rec := &recorder{}
		e.startExecutor("default", map[string]executor.Handler{"step": rec.record(nil), "done": rec.record(nil)}, nil)
		id, err := e.client.NewChain(batchq.Jobs("step", "step", "step")...).OnComplete("done", nil).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-crashed.done:
			if crashed.err == nil || !strings.Contains(crashed.err.Error(), "simulated crash") {
				t.Fatalf("coordinator stopped with %v, want the simulated crash", crashed.err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the coordinator did not reach the crash point")
		}
		time.Sleep(settleTime)
		if n := len(rec.named("step")); n != 1 {
			t.Fatalf("%d steps ran before the restart, want 1 (the next step was committed but not published)", n)
		}
		b, err := e.store.Batch(e.ctx(), id)
		if err != nil {
			t.Fatal(err)
		}
		if b.Completed != 1 || b.Current != 1 {
			t.Fatalf("stored state after the crash: completed %d current %d, want the transition stored", b.Completed, b.Current)
		}

		e.startCoordinator(nil)
		info := e.wait(id)
		if info.Status != batchq.StatusCompleted || info.Completed != 3 {
			t.Fatalf("chain after restart = %+v", info)
		}
		eventually(t, "the callback", func() bool { return len(rec.named("done")) == 1 })
		time.Sleep(settleTime)
		if n := len(rec.named("step")); n != 3 {
			t.Errorf("steps ran %d times, want 3", n)
		}
		if n := len(rec.named("done")); n != 1 {
			t.Errorf("callback ran %d times, want 1", n)
		}
	})
}

func TestMalformedEventsRejected(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		rec := &recorder{}
		e.startExecutor("default", map[string]executor.Handler{"ok": rec.record(nil)}, nil)
		js, _ := jetstream.New(e.nc)
		subject := events.EventSubject("default", "b-garbage", events.TypeJobCompleted)
		bad := []string{
			`not json at all`,
			`{"specversion":"0.3","id":"x1","source":"test","type":"batchq.job.completed","batchid":"b-garbage","data":{"batch_id":"b-garbage","job_id":"0","role":"job","attempt":1}}`,
			`{"specversion":"9.9","id":"x2","source":"test","type":"batchq.job.completed","data":{}}`,
			`{"specversion":"1.0","id":"x3","source":"test","type":"batchq.job.completed","batchid":"b-garbage","data":{"batch_id":"b-garbage","attempt":1}}`,
		}
		for i, data := range bad {
			m := nats.NewMsg(subject)
			m.Data = []byte(data)
			m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("garbage-%d", i))
			if _, err := js.PublishMsg(e.ctx(), m); err != nil {
				t.Fatal(err)
			}
		}
		id, err := e.client.NewBatch(batchq.Jobs("ok", "ok")...).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		if info := e.wait(id); info.Status != batchq.StatusCompleted {
			t.Fatalf("batch after bad events = %+v", info)
		}
		var rejected []events.EventRejected
		eventually(t, "the rejections to be recorded", func() bool {
			rejected, err = e.client.RejectedEvents(e.ctx(), 10)
			return err == nil && len(rejected) == len(bad)
		})
		reasons := ""
		for _, r := range rejected {
			if r.Subject != subject || r.Sequence == 0 || r.Reason == "" {
				t.Errorf("rejected event = %+v", r)
			}
			reasons += r.Reason + "\n"
		}
		for _, want := range []string{"not a structured CloudEvent", `specversion "0.3" is not supported`, "job_id is missing"} {
			if !strings.Contains(reasons, want) {
				t.Errorf("reasons lack %q:\n%s", want, reasons)
			}
		}
		cons, err := js.Consumer(e.ctx(), events.EventsStream, DefaultConsumer)
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "the consumer to have nothing pending", func() bool {
			ci, err := cons.Info(e.ctx())
			return err == nil && ci.NumAckPending == 0 && ci.NumPending == 0
		})
	})
}

func TestUnknownJobFailsBounded(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		e.startExecutor("default", map[string]executor.Handler{"known": func(context.Context, *executor.Job) error { return nil }}, nil)
		id, err := e.client.NewBatch(batchq.Jobs("known", "nope")...).MaxAttempts(10).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		info := e.wait(id)
		if info.Status != batchq.StatusFailed {
			t.Fatalf("batch = %+v", info)
		}
		j, err := e.client.JobResult(e.ctx(), id, "1")
		if err != nil {
			t.Fatal(err)
		}
		if j.Attempts != executor.DefaultUnknownJobAttempts {
			t.Errorf("unknown job ran %d attempts, want %d", j.Attempts, executor.DefaultUnknownJobAttempts)
		}
		for _, want := range []string{`"nope"`, `queue "default"`, "Handle"} {
			if !strings.Contains(j.Error, want) {
				t.Errorf("error %q lacks %s", j.Error, want)
			}
		}
	})
}

// TestOutcomeForUnstartedStepRejected publishes a completion for a chain
// step that never started: it is rejected, and the chain runs every step.
func TestOutcomeForUnstartedStepRejected(t *testing.T) {
	e := kvEnv(t)
	e.startCoordinator(nil)
	g := newGate()
	rec := &recorder{}
	e.startExecutor("default", map[string]executor.Handler{
		"first": g.handler(),
		"next":  rec.record(nil),
	}, nil)
	id, err := e.client.NewChain(batchq.Jobs("first", "next")...).Dispatch(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the chain to run", func() bool {
		b, err := e.client.Batch(e.ctx(), id)
		return err == nil && b.Status == batchq.StatusRunning
	})
	enc := events.Encoder{Source: "test"}
	msg, err := enc.Encode(events.TypeJobCompleted, events.EventSubject("default", id, events.TypeJobCompleted),
		"forged", events.Route{BatchID: id}, events.JobCompleted{BatchID: id, JobID: "1", Role: events.RoleJob, Attempt: 1})
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(e.nc)
	if _, err := js.PublishMsg(e.ctx(), msg.NATS()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the forged outcome to be rejected", func() bool {
		r, err := e.client.RejectedEvents(e.ctx(), 10)
		return err == nil && len(r) == 1 && strings.Contains(r[0].Reason, "has not started")
	})
	g.release(0)
	info := e.wait(id)
	if info.Status != batchq.StatusCompleted || info.Completed != 2 || len(rec.named("next")) != 1 {
		t.Errorf("chain = %+v, step 2 ran %d times", info, len(rec.named("next")))
	}
}
