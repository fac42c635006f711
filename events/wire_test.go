package events_test

// This test takes the part of a program written in another language. It
// follows docs/events.md only: every message is hand-built JSON sent with
// nats.go and jetstream, and nothing from batchq is imported except the test
// server, the store and the coordinator under test.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchq/batchq/coordinator"
	"github.com/batchq/batchq/internal/natstest"
	"github.com/batchq/batchq/store/kvstore"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	queue       = "default"
	contentType = "application/cloudevents+json"
	// requestTimeout matches the 10 s that the coordinator allows its store.
	requestTimeout = 10 * time.Second
)

// cloudEvent is a CloudEvents 1.0 event in structured JSON mode with the
// batchq extension attributes.
type cloudEvent struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Subject         string          `json:"subject,omitempty"`
	DataContentType string          `json:"datacontenttype,omitempty"`
	Time            string          `json:"time,omitempty"`
	BatchID         string          `json:"batchid,omitempty"`
	JobID           string          `json:"jobid,omitempty"`
	Queue           string          `json:"queue,omitempty"`
	Attempt         int             `json:"attempt,omitempty"`
	Data            json.RawMessage `json:"data"`
}

// newEvent builds an event about a batch with the given type name, such as
// "job.completed".
func newEvent(typeName, id, batchID string, data any) cloudEvent {
	raw, err := json.Marshal(data)
	if err != nil {
		panic(fmt.Sprintf("encode %s data: %v", typeName, err))
	}
	return cloudEvent{
		SpecVersion:     "1.0",
		ID:              id,
		Source:          "wire-test",
		Type:            "batchq." + typeName,
		DataContentType: "application/json",
		Time:            time.Now().UTC().Format(time.RFC3339Nano),
		BatchID:         batchID,
		Queue:           queue,
		Data:            raw,
	}
}

// jobEvent builds a work or outcome event about one attempt of a job.
func jobEvent(typeName, batchID, jobID string, attempt int, data any) cloudEvent {
	ev := newEvent(typeName, batchID+":"+jobID+":"+typeName+":"+strconv.Itoa(attempt), batchID, data)
	ev.Subject = jobID
	ev.JobID = jobID
	ev.Attempt = attempt
	return ev
}

func eventSubject(batchID, typeName string) string {
	return "batchq.events." + queue + "." + batchID + "." + typeName
}

// publish sends ev to subject with the headers that the doc requires and
// waits for the stream's acknowledgement.
func publish(ctx context.Context, js jetstream.JetStream, subject string, ev cloudEvent) (*jetstream.PubAck, error) {
	body, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	msg := nats.NewMsg(subject)
	msg.Header.Set("Nats-Msg-Id", ev.ID)
	msg.Header.Set("Content-Type", contentType)
	msg.Data = body
	return js.PublishMsg(ctx, msg)
}

func mustPublish(t *testing.T, ctx context.Context, js jetstream.JetStream, subject string, ev cloudEvent) *jetstream.PubAck {
	t.Helper()
	ack, err := publish(ctx, js, subject, ev)
	if err != nil {
		t.Fatalf("publish %s to %s: %v", ev.Type, subject, err)
	}
	return ack
}

// API payloads, as the doc describes them.

type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

type callbackState struct {
	Kind     string          `json:"kind"`
	Name     string          `json:"name"`
	JobID    string          `json:"job_id"`
	Status   string          `json:"status"`
	Attempts int             `json:"attempts"`
	Result   json.RawMessage `json:"result"`
}

type batchInfo struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Status    string          `json:"status"`
	QueueName string          `json:"queue_name"`
	Queue     string          `json:"queue"`
	Total     int             `json:"total"`
	Completed int             `json:"completed"`
	Failed    int             `json:"failed"`
	Skipped   int             `json:"skipped"`
	Progress  int             `json:"progress"`
	Error     string          `json:"error"`
	Callbacks []callbackState `json:"callbacks"`
}

type jobInfo struct {
	BatchID  string          `json:"batch_id"`
	ID       string          `json:"id"`
	Position int             `json:"position"`
	Name     string          `json:"name"`
	Status   string          `json:"status"`
	Attempts int             `json:"attempts"`
	Result   json.RawMessage `json:"result"`
	Error    string          `json:"error"`
}

type batchReply struct {
	Batch *batchInfo `json:"batch"`
	Error *apiError  `json:"error"`
}

type resultsReply struct {
	Jobs  []jobInfo `json:"jobs"`
	More  bool      `json:"more"`
	Error *apiError `json:"error"`
}

type jobReply struct {
	Job   *jobInfo  `json:"job"`
	Error *apiError `json:"error"`
}

type rejectedEvent struct {
	Subject  string `json:"subject"`
	Reason   string `json:"reason"`
	Sequence uint64 `json:"sequence"`
	Data     string `json:"data"`
}

type rejectedReply struct {
	Events []rejectedEvent `json:"events"`
	Error  *apiError       `json:"error"`
}

// request sends a JSON request to an API subject and decodes the reply.
func request(ctx context.Context, nc *nats.Conn, subject string, body, reply any) error {
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	msg, err := nc.RequestWithContext(ctx, subject, data)
	if err != nil {
		return fmt.Errorf("request %s: %w", subject, err)
	}
	if err := json.Unmarshal(msg.Data, reply); err != nil {
		return fmt.Errorf("decode reply from %s: %w (body %s)", subject, err, msg.Data)
	}
	return nil
}

func getBatch(t *testing.T, ctx context.Context, nc *nats.Conn, batchID string) batchReply {
	t.Helper()
	var reply batchReply
	if err := request(ctx, nc, "batchq.api.batch.get", map[string]string{"batch_id": batchID}, &reply); err != nil {
		t.Fatal(err)
	}
	return reply
}

// waitFor polls cond every 50 ms until it returns true, and fails the test
// when ctx ends first.
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

// waitForBatch polls batch.get until cond holds for the batch and returns it.
func waitForBatch(t *testing.T, ctx context.Context, nc *nats.Conn, batchID, what string, cond func(*batchInfo) bool) *batchInfo {
	t.Helper()
	var last *batchInfo
	waitFor(t, ctx, what, func() bool {
		reply := getBatch(t, ctx, nc, batchID)
		last = reply.Batch
		return reply.Error == nil && reply.Batch != nil && cond(reply.Batch)
	})
	return last
}

// Work messages and the executor.

type callbackInfo struct {
	Kind      string `json:"kind"`
	Status    string `json:"status"`
	Total     int    `json:"total"`
	Completed int    `json:"completed"`
	Failed    int    `json:"failed"`
}

type workData struct {
	BatchID     string          `json:"batch_id"`
	BatchType   string          `json:"batch_type"`
	Queue       string          `json:"queue"`
	Role        string          `json:"role"`
	JobID       string          `json:"job_id"`
	Position    int             `json:"position"`
	Name        string          `json:"name"`
	Args        json.RawMessage `json:"args"`
	Context     json.RawMessage `json:"context"`
	Attempt     int             `json:"attempt"`
	MaxAttempts int             `json:"max_attempts"`
	NotBefore   *time.Time      `json:"not_before"`
	Callback    *callbackInfo   `json:"callback"`
}

// workSeen is one work message as the executor received it.
type workSeen struct {
	subject    string
	msgID      string
	event      cloudEvent
	data       workData
	deliveries uint64
}

// handlerFunc runs one attempt. A non-nil newContext is a chain step's
// changed context.
type handlerFunc func(w workData) (result any, newContext map[string]any, err error)

// executor runs the work of one queue by the executor protocol of the doc.
type executor struct {
	t         *testing.T
	js        jetstream.JetStream
	cancelled jetstream.KeyValue
	handlers  map[string]handlerFunc

	mu   sync.Mutex
	seen []workSeen
}

const maxDeliver = 10

func (x *executor) run(ctx context.Context, cons jetstream.Consumer) {
	for ctx.Err() == nil {
		// This executor runs one job at a time, so it fetches one message.
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			if ctx.Err() == nil {
				x.t.Errorf("fetch work: %v", err)
			}
			return
		}
		for msg := range batch.Messages() {
			x.process(ctx, msg)
		}
	}
}

func (x *executor) work() []workSeen {
	x.mu.Lock()
	defer x.mu.Unlock()
	return slices.Clone(x.seen)
}

// process takes one work message through the executor protocol of the doc:
// not_before, cancelled batch, delivery limit, run, outcome, acknowledgement.
func (x *executor) process(ctx context.Context, msg jetstream.Msg) {
	var ev cloudEvent
	if err := json.Unmarshal(msg.Data(), &ev); err != nil {
		x.t.Errorf("work message on %s is not JSON: %v", msg.Subject(), err)
		_ = msg.Term()
		return
	}
	var w workData
	if err := json.Unmarshal(ev.Data, &w); err != nil {
		x.t.Errorf("work data of %s: %v", ev.ID, err)
		_ = msg.Term()
		return
	}
	meta, err := msg.Metadata()
	if err != nil {
		x.t.Errorf("metadata of %s: %v", ev.ID, err)
		return
	}
	x.mu.Lock()
	x.seen = append(x.seen, workSeen{
		subject: msg.Subject(), msgID: msg.Headers().Get("Nats-Msg-Id"),
		event: ev, data: w, deliveries: meta.NumDelivered,
	})
	x.mu.Unlock()

	if w.NotBefore != nil {
		if wait := time.Until(*w.NotBefore); wait > 0 {
			_ = msg.NakWithDelay(wait)
			return
		}
	}
	base := map[string]any{
		"batch_id": w.BatchID, "job_id": w.JobID, "role": w.Role,
		"attempt": w.Attempt, "deliveries": meta.NumDelivered,
	}

	_, err = x.cancelled.Get(ctx, w.BatchID)
	switch {
	case err == nil:
		skipped := with(base, "reason", "batch cancelled before the job started")
		delete(skipped, "deliveries")
		x.finish(ctx, msg, w, jobEvent("job.skipped", w.BatchID, w.JobID, w.Attempt, skipped))
		return
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		if ctx.Err() == nil {
			x.t.Errorf("read bucket batchq_cancelled: %v", err)
		}
		_ = msg.NakWithDelay(time.Second)
		return
	}
	if meta.NumDelivered >= maxDeliver {
		failed := with(base, "error", "delivery limit reached", "reason", "delivery_limit")
		x.finish(ctx, msg, w, jobEvent("job.failed", w.BatchID, w.JobID, w.Attempt, failed))
		return
	}

	handler, ok := x.handlers[w.Name]
	if !ok {
		failed := with(base, "error", "no handler for "+w.Name, "reason", "unknown_job")
		x.finish(ctx, msg, w, jobEvent("job.failed", w.BatchID, w.JobID, w.Attempt, failed))
		return
	}
	// The handlers here return at once. A long job sends this every third of
	// the ack wait while it runs.
	if err := msg.InProgress(); err != nil {
		x.t.Errorf("send in-progress for %s: %v", ev.ID, err)
	}
	started := time.Now()
	result, newContext, runErr := handler(w)
	base["duration_ms"] = time.Since(started).Milliseconds()

	maxAttempts := w.MaxAttempts
	if maxAttempts == 0 {
		maxAttempts = 3
	}
	switch {
	case runErr == nil:
		completed := with(base, "result", result)
		if newContext != nil {
			completed["context"] = newContext
		}
		x.finish(ctx, msg, w, jobEvent("job.completed", w.BatchID, w.JobID, w.Attempt, completed))
	case w.Attempt < maxAttempts:
		x.retry(ctx, msg, w, base, runErr)
	default:
		failed := with(base, "error", runErr.Error(), "reason", "error")
		x.finish(ctx, msg, w, jobEvent("job.failed", w.BatchID, w.JobID, w.Attempt, failed))
	}
}

// retry publishes the next attempt's work message with not_before, then
// job.retrying, then acknowledges the message.
func (x *executor) retry(ctx context.Context, msg jetstream.Msg, w workData, base map[string]any, runErr error) {
	at := time.Now().Add(300 * time.Millisecond).UTC()

	var next map[string]json.RawMessage
	if err := json.Unmarshal(msg.Data(), &struct {
		Data *map[string]json.RawMessage `json:"data"`
	}{&next}); err != nil {
		x.t.Errorf("copy work data: %v", err)
		return
	}
	next["attempt"] = json.RawMessage(strconv.Itoa(w.Attempt + 1))
	next["not_before"] = json.RawMessage(strconv.Quote(at.Format(time.RFC3339Nano)))
	nextEvent := jobEvent("job.queued", w.BatchID, w.JobID, w.Attempt+1, next)
	if _, err := publish(ctx, x.js, msg.Subject(), nextEvent); err != nil {
		if ctx.Err() == nil {
			x.t.Errorf("publish attempt %d of job %s: %v", w.Attempt+1, w.JobID, err)
		}
		_ = msg.NakWithDelay(time.Second)
		return
	}

	retrying := with(base, "error", runErr.Error(), "reason", "error", "retry_at", at.Format(time.RFC3339Nano))
	delete(retrying, "duration_ms")
	x.finish(ctx, msg, w, jobEvent("job.retrying", w.BatchID, w.JobID, w.Attempt, retrying))
}

// finish publishes an outcome on its event subject and acknowledges the
// work message only after the stream stored the outcome.
func (x *executor) finish(ctx context.Context, msg jetstream.Msg, w workData, outcome cloudEvent) {
	typeName := strings.TrimPrefix(outcome.Type, "batchq.")
	if _, err := publish(ctx, x.js, "batchq.events."+w.Queue+"."+w.BatchID+"."+typeName, outcome); err != nil {
		if ctx.Err() == nil {
			x.t.Errorf("publish %s: %v", outcome.ID, err)
		}
		_ = msg.NakWithDelay(time.Second)
		return
	}
	if err := msg.DoubleAck(ctx); err != nil && ctx.Err() == nil {
		x.t.Errorf("acknowledge work of %s: %v", outcome.ID, err)
	}
}

// with returns a copy of m with the key/value pairs in kv added.
func with(m map[string]any, kv ...any) map[string]any {
	out := make(map[string]any, len(m)+len(kv)/2)
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

// Lifecycle tap.

type lifecycleSeen struct {
	typ     string
	id      string
	msgID   string
	status  string
	decoded bool
}

type tap struct {
	mu      sync.Mutex
	byBatch map[string][]lifecycleSeen
}

func (tp *tap) record(m jetstream.Msg) {
	var ev cloudEvent
	var data struct {
		Batch struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		} `json:"batch"`
	}
	seen := lifecycleSeen{msgID: m.Headers().Get("Nats-Msg-Id")}
	if json.Unmarshal(m.Data(), &ev) == nil && json.Unmarshal(ev.Data, &data) == nil {
		seen.typ, seen.id, seen.status, seen.decoded = ev.Type, ev.ID, data.Batch.Status, true
	}
	tp.mu.Lock()
	defer tp.mu.Unlock()
	tp.byBatch[data.Batch.ID] = append(tp.byBatch[data.Batch.ID], seen)
}

func (tp *tap) events(batchID string) []lifecycleSeen {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return slices.Clone(tp.byBatch[batchID])
}

// startCoordinator runs a coordinator on its own connection and waits until
// its read API responds.
func startCoordinator(t *testing.T, ctx context.Context, nc, coordConn *nats.Conn) {
	t.Helper()
	st, err := kvstore.New(ctx, nc, kvstore.Config{})
	if err != nil {
		t.Fatalf("kvstore.New: %v", err)
	}
	c, err := coordinator.New(coordinator.Config{
		Conn:   coordConn,
		Store:  st,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("coordinator.New: %v", err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("coordinator stopped with error: %v", err)
		}
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})

	waitFor(t, ctx, "the coordinator's read API to answer", func() bool {
		var reply rejectedReply
		err := request(ctx, nc, "batchq.api.events.rejected", map[string]int{"limit": 1}, &reply)
		return err == nil && reply.Error == nil
	})
}

func TestWireContract(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	startCoordinator(t, ctx, nc, natstest.Connect(t, srv))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}

	// The tap: an ordered consumer on the five lifecycle subjects.
	tapConn := natstest.Connect(t, srv)
	tapJS, err := jetstream.New(tapConn)
	if err != nil {
		t.Fatal(err)
	}
	lifecycleFilters := []string{}
	for _, name := range []string{"started", "compensating", "completed", "failed", "cancelled"} {
		lifecycleFilters = append(lifecycleFilters, "batchq.events.*.*.batch."+name)
	}
	tapConsumer, err := tapJS.OrderedConsumer(ctx, "BATCHQ_EVENTS", jetstream.OrderedConsumerConfig{FilterSubjects: lifecycleFilters})
	if err != nil {
		t.Fatalf("create tap consumer: %v", err)
	}
	lifecycle := &tap{byBatch: map[string][]lifecycleSeen{}}
	tapRun, err := tapConsumer.Consume(lifecycle.record)
	if err != nil {
		t.Fatalf("consume lifecycle events: %v", err)
	}
	t.Cleanup(tapRun.Stop)

	// The executor: the shared durable consumer work_default and the bucket
	// of cancelled batches that the coordinator created.
	execConn := natstest.Connect(t, srv)
	execJS, err := jetstream.New(execConn)
	if err != nil {
		t.Fatal(err)
	}
	workConsumer, err := execJS.CreateOrUpdateConsumer(ctx, "BATCHQ_WORK", jetstream.ConsumerConfig{
		Durable:       "work_" + queue,
		FilterSubject: "batchq.work." + queue + ".*",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxDeliver:    maxDeliver,
		MaxAckPending: -1,
	})
	if err != nil {
		t.Fatalf("create consumer work_%s: %v", queue, err)
	}
	cancelledBucket, err := execJS.KeyValue(ctx, "batchq_cancelled")
	if err != nil {
		t.Fatalf("open bucket batchq_cancelled: %v", err)
	}
	x := &executor{t: t, js: execJS, cancelled: cancelledBucket, handlers: map[string]handlerFunc{
		"square": func(w workData) (any, map[string]any, error) {
			var args struct {
				N         int  `json:"n"`
				FailFirst bool `json:"fail_first"`
			}
			if err := json.Unmarshal(w.Args, &args); err != nil {
				return nil, nil, err
			}
			if args.FailFirst && w.Attempt == 1 {
				return nil, nil, errors.New("first attempt fails on purpose")
			}
			return map[string]int{"square": args.N * args.N}, nil, nil
		},
		"reduce": func(w workData) (any, map[string]any, error) {
			if w.Callback == nil {
				return nil, nil, errors.New("reduce runs only as a callback")
			}
			return map[string]any{"kind": w.Callback.Kind, "completed": w.Callback.Completed}, nil, nil
		},
		"reserve": func(w workData) (any, map[string]any, error) {
			var ctxValues map[string]any
			if err := json.Unmarshal(w.Context, &ctxValues); err != nil {
				return nil, nil, err
			}
			ctxValues["reservation"] = "r-1"
			return map[string]bool{"reserved": true}, ctxValues, nil
		},
		"ship": func(w workData) (any, map[string]any, error) {
			var ctxValues map[string]string
			if err := json.Unmarshal(w.Context, &ctxValues); err != nil {
				return nil, nil, err
			}
			return map[string]string{"shipped_with": ctxValues["reservation"], "order": ctxValues["order"]}, nil, nil
		},
	}}
	execCtx, stopExec := context.WithCancel(ctx)
	execDone := make(chan struct{})
	go func() {
		defer close(execDone)
		x.run(execCtx, workConsumer)
	}()
	t.Cleanup(func() {
		stopExec()
		<-execDone
	})

	stamp := strconv.FormatInt(time.Now().UnixNano(), 10)
	parallelID := "wire-parallel-" + stamp
	chainID := "wire-chain-" + stamp

	t.Run("parallel batch with callback", func(t *testing.T) {
		submitted := newEvent("batch.submitted", parallelID+":submitted", parallelID, map[string]any{
			"batch_id":   parallelID,
			"type":       "parallel",
			"queue_name": queue,
			"queue":      queue,
			"context":    map[string]string{"tenant": "acme"},
			"options":    map[string]any{"on_complete": map[string]any{"name": "reduce", "args": map[string]string{"channel": "ops"}}},
			"total":      3,
			"chunks":     0,
			"jobs": []map[string]any{
				{"id": "0", "position": 0, "name": "square", "args": map[string]any{"n": 2}},
				{"id": "1", "position": 1, "name": "square", "args": map[string]any{"n": 3}},
				{"id": "2", "position": 2, "name": "square", "args": map[string]any{"n": 4, "fail_first": true}},
			},
		})
		ack := mustPublish(t, ctx, js, eventSubject(parallelID, "batch.submitted"), submitted)
		if ack.Stream != "BATCHQ_EVENTS" {
			t.Errorf("submission stored in stream %q, want BATCHQ_EVENTS", ack.Stream)
		}
		if ack.Duplicate {
			t.Error("first publish of the submission was reported as a duplicate")
		}
		again := mustPublish(t, ctx, js, eventSubject(parallelID, "batch.submitted"), submitted)
		if !again.Duplicate {
			t.Error("second publish with the same Nats-Msg-Id was not reported as a duplicate")
		}

		// Once the stream stored the seal, the batch id is valid in the API.
		first := getBatch(t, ctx, nc, parallelID)
		if first.Error != nil {
			t.Fatalf("batch.get right after dispatch: %+v", first.Error)
		}
		if s := first.Batch.Status; s != "pending" && s != "running" && s != "completed" {
			t.Errorf("status right after dispatch = %q, want pending, running or completed", s)
		}

		info := waitForBatch(t, ctx, nc, parallelID, "the parallel batch to complete and its callback to finish", func(b *batchInfo) bool {
			return b.Status == "completed" && len(b.Callbacks) == 1 && b.Callbacks[0].Status == "completed"
		})
		if info.Type != "parallel" {
			t.Errorf("type = %q, want parallel", info.Type)
		}
		if info.Queue != queue || info.QueueName != queue {
			t.Errorf("queue = %q, queue_name = %q, want %q", info.Queue, info.QueueName, queue)
		}
		if info.Total != 3 {
			t.Errorf("total = %d, want 3", info.Total)
		}
		if info.Completed != 3 {
			t.Errorf("completed = %d, want 3", info.Completed)
		}
		if info.Failed != 0 || info.Skipped != 0 {
			t.Errorf("failed = %d and skipped = %d, want 0 and 0", info.Failed, info.Skipped)
		}
		if info.Progress != 100 {
			t.Errorf("progress = %d, want 100", info.Progress)
		}
		cb := info.Callbacks[0]
		if cb.Kind != "on_complete" {
			t.Errorf("callback kind = %q, want on_complete", cb.Kind)
		}
		if cb.JobID != "on_complete" {
			t.Errorf("callback job id = %q, want on_complete", cb.JobID)
		}
		if cb.Name != "reduce" {
			t.Errorf("callback name = %q, want reduce", cb.Name)
		}
	})

	t.Run("work messages follow the envelope rules", func(t *testing.T) {
		var jobs, callbacks, retries int
		for _, w := range x.work() {
			if w.data.BatchID != parallelID {
				continue
			}
			if w.msgID != w.event.ID {
				t.Errorf("Nats-Msg-Id %q differs from the event id %q", w.msgID, w.event.ID)
			}
			if w.subject != "batchq.work."+queue+"."+parallelID {
				t.Errorf("work subject = %q", w.subject)
			}
			if w.event.SpecVersion != "1.0" {
				t.Errorf("work event %s has specversion %q, want 1.0", w.event.ID, w.event.SpecVersion)
			}
			if w.event.Type != "batchq.job.queued" {
				t.Errorf("work event %s has type %q, want batchq.job.queued", w.event.ID, w.event.Type)
			}
			if w.event.BatchID != w.data.BatchID {
				t.Errorf("work event %s has extension batchid %q, want %q", w.event.ID, w.event.BatchID, w.data.BatchID)
			}
			if w.event.JobID != w.data.JobID {
				t.Errorf("work event %s has extension jobid %q, want %q", w.event.ID, w.event.JobID, w.data.JobID)
			}
			if w.event.Queue != queue {
				t.Errorf("work event %s has extension queue %q, want %q", w.event.ID, w.event.Queue, queue)
			}
			if w.event.Attempt != w.data.Attempt {
				t.Errorf("work event %s has extension attempt %d, want %d", w.event.ID, w.event.Attempt, w.data.Attempt)
			}
			wantID := fmt.Sprintf("%s:%s:job.queued:%d", parallelID, w.data.JobID, w.data.Attempt)
			if w.event.ID != wantID {
				t.Errorf("work id = %q, want %q", w.event.ID, wantID)
			}
			if string(w.data.Context) != `{"tenant":"acme"}` {
				t.Errorf("work of job %s carries context %s, want the batch context", w.data.JobID, w.data.Context)
			}

			switch {
			case w.data.Role == "callback":
				callbacks++
				if w.data.JobID != "on_complete" || w.data.Position != -1 {
					t.Errorf("callback work has job id %q and position %d", w.data.JobID, w.data.Position)
				}
				cb := w.data.Callback
				if cb == nil {
					t.Errorf("callback work %s has no callback object", w.event.ID)
					continue
				}
				if cb.Kind != "on_complete" {
					t.Errorf("callback kind = %q, want on_complete", cb.Kind)
				}
				if cb.Status != "completed" {
					t.Errorf("callback batch status = %q, want completed", cb.Status)
				}
				if cb.Total != 3 || cb.Completed != 3 {
					t.Errorf("callback counts completed/total = %d/%d, want 3/3", cb.Completed, cb.Total)
				}
				if string(w.data.Args) != `{"channel":"ops"}` {
					t.Errorf("callback args = %s", w.data.Args)
				}
			case w.data.Attempt == 2:
				retries++
				if w.data.JobID != "2" {
					t.Errorf("job %s has attempt 2, but only job 2 fails once", w.data.JobID)
				}
				if w.data.NotBefore == nil {
					t.Errorf("attempt 2 of job %s has no not_before", w.data.JobID)
				}
			default:
				jobs++
				if w.data.Role != "job" {
					t.Errorf("job %s has role %q, want job", w.data.JobID, w.data.Role)
				}
				if w.data.BatchType != "parallel" {
					t.Errorf("job %s has batch type %q, want parallel", w.data.JobID, w.data.BatchType)
				}
				if w.data.Attempt != 1 {
					t.Errorf("job %s has attempt %d, want 1", w.data.JobID, w.data.Attempt)
				}
				if w.data.JobID != strconv.Itoa(w.data.Position) {
					t.Errorf("job id %q is not its position %d", w.data.JobID, w.data.Position)
				}
			}
		}
		if jobs != 3 {
			t.Errorf("saw %d first attempts, want 3", jobs)
		}
		if retries == 0 {
			t.Error("never saw attempt 2 of job 2")
		}
		if callbacks != 1 {
			t.Errorf("saw %d callback deliveries, want 1", callbacks)
		}
	})

	t.Run("results and jobs through the API", func(t *testing.T) {
		var page1 resultsReply
		if err := request(ctx, nc, "batchq.api.batch.results", map[string]any{"batch_id": parallelID, "limit": 2}, &page1); err != nil {
			t.Fatal(err)
		}
		if page1.Error != nil {
			t.Fatalf("first page: %+v", page1.Error)
		}
		if len(page1.Jobs) != 2 || !page1.More {
			t.Fatalf("first page has %d jobs and more=%v, want 2 and true", len(page1.Jobs), page1.More)
		}
		var page2 resultsReply
		from := page1.Jobs[len(page1.Jobs)-1].Position + 1
		if err := request(ctx, nc, "batchq.api.batch.results", map[string]any{"batch_id": parallelID, "from": from, "limit": 2}, &page2); err != nil {
			t.Fatal(err)
		}
		if len(page2.Jobs) != 1 || page2.More {
			t.Fatalf("second page has %d jobs and more=%v, want 1 and false", len(page2.Jobs), page2.More)
		}

		want := []string{`{"square":4}`, `{"square":9}`, `{"square":16}`}
		for i, j := range append(page1.Jobs, page2.Jobs...) {
			if j.Position != i || j.ID != strconv.Itoa(i) {
				t.Errorf("result %d has id %q and position %d", i, j.ID, j.Position)
			}
			if j.Status != "completed" {
				t.Errorf("job %s status = %q", j.ID, j.Status)
			}
			if string(j.Result) != want[i] {
				t.Errorf("job %s result = %s, want %s", j.ID, j.Result, want[i])
			}
		}
		if got := page2.Jobs[0].Attempts; got != 2 {
			t.Errorf("job 2 attempts = %d, want 2 after one retry", got)
		}

		var cb jobReply
		if err := request(ctx, nc, "batchq.api.job.get", map[string]string{"batch_id": parallelID, "job_id": "on_complete"}, &cb); err != nil {
			t.Fatal(err)
		}
		if cb.Error != nil || cb.Job == nil {
			t.Fatalf("job.get on_complete: %+v", cb.Error)
		}
		if cb.Job.Position != -1 {
			t.Errorf("callback position = %d, want -1", cb.Job.Position)
		}
		if cb.Job.Status != "completed" {
			t.Errorf("callback status = %q, want completed", cb.Job.Status)
		}
		if string(cb.Job.Result) != `{"completed":3,"kind":"on_complete"}` {
			t.Errorf("callback result = %s", cb.Job.Result)
		}

		missing := getBatch(t, ctx, nc, "no-such-batch-"+stamp)
		if missing.Error == nil || missing.Error.Code != "not_found" {
			t.Errorf("batch.get of an unknown batch returned error %+v, want code not_found", missing.Error)
		}
	})

	t.Run("chain passes the changed context on", func(t *testing.T) {
		// The seal goes first and declares one chunk that is not yet
		// published, so the batch must show as pending.
		submitted := newEvent("batch.submitted", chainID+":submitted", chainID, map[string]any{
			"batch_id":   chainID,
			"type":       "chain",
			"queue_name": queue,
			"queue":      queue,
			"context":    map[string]string{"order": "1001"},
			"options":    map[string]any{},
			"total":      2,
			"chunks":     1,
			"jobs":       []map[string]any{{"id": "1", "position": 1, "name": "ship"}},
		})
		mustPublish(t, ctx, js, eventSubject(chainID, "batch.submitted"), submitted)

		pending := getBatch(t, ctx, nc, chainID)
		if pending.Error != nil || pending.Batch == nil {
			t.Fatalf("batch.get of the sealed chain: %+v", pending.Error)
		}
		if pending.Batch.Status != "pending" {
			t.Errorf("chain status before its chunk = %q, want pending", pending.Batch.Status)
		}
		if pending.Batch.Type != "chain" {
			t.Errorf("pending chain has type %q, want chain", pending.Batch.Type)
		}
		if pending.Batch.Total != 2 {
			t.Errorf("pending chain has total %d, want 2", pending.Batch.Total)
		}
		var pendingResults resultsReply
		if err := request(ctx, nc, "batchq.api.batch.results", map[string]any{"batch_id": chainID}, &pendingResults); err != nil {
			t.Fatal(err)
		}
		if pendingResults.Error == nil || pendingResults.Error.Code != "not_found" {
			t.Errorf("batch.results of a pending batch returned error %+v, want code not_found", pendingResults.Error)
		}

		chunk := newEvent("batch.jobs", chainID+":jobs:0", chainID, map[string]any{
			"batch_id": chainID,
			"chunk":    0,
			"jobs":     []map[string]any{{"id": "0", "position": 0, "name": "reserve"}},
		})
		mustPublish(t, ctx, js, eventSubject(chainID, "batch.jobs"), chunk)

		info := waitForBatch(t, ctx, nc, chainID, "the chain to complete", func(b *batchInfo) bool {
			return b.Status == "completed"
		})
		if info.Total != 2 {
			t.Errorf("chain total = %d, want 2", info.Total)
		}
		if info.Completed != 2 {
			t.Errorf("chain completed = %d, want 2", info.Completed)
		}

		contexts := map[string]string{}
		for _, w := range x.work() {
			if w.data.BatchID == chainID {
				contexts[w.data.Name] = string(w.data.Context)
			}
		}
		if got := contexts["reserve"]; got != `{"order":"1001"}` {
			t.Errorf("step 0 started from context %s, want the initial context", got)
		}
		if got := contexts["ship"]; got != `{"order":"1001","reservation":"r-1"}` {
			t.Errorf("step 1 started from context %s, want the context step 0 left", got)
		}

		var step jobReply
		if err := request(ctx, nc, "batchq.api.job.get", map[string]string{"batch_id": chainID, "job_id": "1"}, &step); err != nil {
			t.Fatal(err)
		}
		if step.Error != nil || step.Job == nil {
			t.Fatalf("job.get of step 1: %+v", step.Error)
		}
		if string(step.Job.Result) != `{"order":"1001","shipped_with":"r-1"}` {
			t.Errorf("step 1 result = %s", step.Job.Result)
		}
	})

	t.Run("tap sees each lifecycle event once", func(t *testing.T) {
		for _, id := range []string{parallelID, chainID} {
			waitFor(t, ctx, "batch.started and batch.completed of "+id, func() bool {
				return len(lifecycle.events(id)) >= 2
			})
			seen := lifecycle.events(id)
			if len(seen) != 2 {
				t.Fatalf("batch %s has %d lifecycle events, want 2: %+v", id, len(seen), seen)
			}
			for i, want := range []struct{ typ, status string }{
				{"batchq.batch.started", "running"},
				{"batchq.batch.completed", "completed"},
			} {
				ev := seen[i]
				if !ev.decoded {
					t.Errorf("lifecycle event %d of %s is not a decodable CloudEvent", i, id)
					continue
				}
				if ev.typ != want.typ {
					t.Errorf("lifecycle event %d of %s has type %s, want %s", i, id, ev.typ, want.typ)
				}
				if ev.status != want.status {
					t.Errorf("%s of %s carries status %q, want %q", ev.typ, id, ev.status, want.status)
				}
				wantID := id + ":" + strings.TrimPrefix(want.typ, "batchq.")
				if ev.id != wantID {
					t.Errorf("lifecycle event id = %q, want %q", ev.id, wantID)
				}
				if ev.msgID != wantID {
					t.Errorf("lifecycle Nats-Msg-Id = %q, want %q", ev.msgID, wantID)
				}
			}
		}
	})

	t.Run("wrong specversion is rejected", func(t *testing.T) {
		badID := "wire-bad-" + stamp
		bad := jobEvent("job.completed", badID, "0", 1, map[string]any{
			"batch_id": badID, "job_id": "0", "role": "job", "attempt": 1, "deliveries": 1, "duration_ms": 0,
		})
		bad.SpecVersion = "0.3"
		subject := eventSubject(badID, "job.completed")
		mustPublish(t, ctx, js, subject, bad)

		var found *rejectedEvent
		waitFor(t, ctx, "the rejected event in batchq.api.events.rejected", func() bool {
			var reply rejectedReply
			if err := request(ctx, nc, "batchq.api.events.rejected", map[string]int{"limit": 100}, &reply); err != nil || reply.Error != nil {
				return false
			}
			for i := range reply.Events {
				if reply.Events[i].Subject == subject {
					found = &reply.Events[i]
					return true
				}
			}
			return false
		})
		if !strings.Contains(found.Reason, "specversion") {
			t.Errorf("reason %q does not name the specversion", found.Reason)
		}
		if found.Sequence == 0 {
			t.Error("rejected event has no stream sequence")
		}
		body, err := base64.StdEncoding.DecodeString(found.Data)
		if err != nil {
			t.Fatalf("rejected data is not base64: %v", err)
		}
		if !strings.HasPrefix(string(body), `{"specversion":"0.3"`) {
			t.Errorf("rejected data starts with %.40q, want the message body", body)
		}

		stream, err := js.Stream(ctx, "BATCHQ_EVENTS")
		if err != nil {
			t.Fatal(err)
		}
		var rejected *jetstream.RawStreamMsg
		waitFor(t, ctx, "event.rejected in BATCHQ_EVENTS", func() bool {
			rejected, err = stream.GetLastMsgForSubject(ctx, "batchq.events._._.event.rejected")
			return err == nil
		})
		var ev cloudEvent
		if err := json.Unmarshal(rejected.Data, &ev); err != nil {
			t.Fatalf("event.rejected is not JSON: %v", err)
		}
		wantID := "rejected:" + strconv.FormatUint(found.Sequence, 10)
		if ev.Type != "batchq.event.rejected" {
			t.Errorf("last message on the rejected subject has type %q, want batchq.event.rejected", ev.Type)
		}
		if ev.ID != wantID {
			t.Errorf("event.rejected id = %q, want %q", ev.ID, wantID)
		}
		if got := rejected.Header.Get("Nats-Msg-Id"); got != wantID {
			t.Errorf("event.rejected Nats-Msg-Id = %q, want %q", got, wantID)
		}
		var data rejectedEvent
		if err := json.Unmarshal(ev.Data, &data); err != nil {
			t.Fatalf("event.rejected data: %v", err)
		}
		if data.Subject != subject {
			t.Errorf("event.rejected names subject %q, want %q", data.Subject, subject)
		}
	})
}
