package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sort"
	"sync"
	"time"

	"github.com/batchq/batchq"
	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/internal/addition"
)

// ErrReadOnlyContext is returned by Job.Set and Job.Delete outside a chain
// step: a parallel batch shares one context among jobs that run at once, so
// it cannot change.
var ErrReadOnlyContext = errors.New("executor: the context is read-only here; only chain steps may change it, and a parallel job stores its output with SetResult")

// Job is one attempt of a job as its handler sees it. Its methods are safe
// for use by several goroutines of one handler.
type Job struct {
	e *Executor
	w *work

	mu         sync.Mutex
	ctx        map[string]json.RawMessage
	ctxErr     error
	ctxChanged bool
	result     json.RawMessage
	added      int
	// addFailed is the error of an AddJobs call whose addition may or may
	// not have been published; the attempt then fails.
	addFailed error
}

func newJob(e *Executor, w *work) *Job {
	return &Job{e: e, w: w}
}

// BatchID returns the id of the job's batch.
func (j *Job) BatchID() string { return j.w.batchID() }

// ID returns the job's id within its batch: its position in decimal, or
// "on_complete", "on_failure" or "on_job_failure.<id>" for callbacks.
func (j *Job) ID() string { return j.w.jobID() }

// Position returns the job's position in its batch; callbacks have -1.
func (j *Job) Position() int { return j.w.position() }

// Name returns the job name that selected the handler.
func (j *Job) Name() string { return j.w.name() }

// Attempt returns the attempt number, 1 for the first run. Redeliveries
// after an executor crash keep the attempt number; see Deliveries.
func (j *Job) Attempt() int { return j.w.attempt() }

// Deliveries returns how often the server delivered this attempt's message.
// More than one means an earlier executor crashed or stalled while running
// it, or the attempt waited for its retry delay.
func (j *Job) Deliveries() int { return j.w.deliveries }

// Queue returns the queue the job runs on.
func (j *Job) Queue() string { return j.e.cfg.Queue }

// BatchType returns whether the job's batch is parallel or a chain.
func (j *Job) BatchType() events.BatchType {
	if j.w.kind == Compensations {
		return ""
	}
	return j.w.job.BatchType
}

// Callback returns what a callback job gets about its batch, or nil for a
// job that is not a callback.
func (j *Job) Callback() *events.CallbackInfo {
	if j.w.kind == Compensations {
		return nil
	}
	return j.w.job.Callback
}

// Compensation returns what a compensation job gets about the job it
// undoes, or nil outside a compensation.
func (j *Job) Compensation() *events.CompensationInfo {
	if j.w.kind != Compensations {
		return nil
	}
	info := j.w.comp.Compensation
	return &info
}

// Client returns a client for reading batches, for example the results of
// the batch in a completion callback.
func (j *Job) Client() *batchq.Client { return j.e.client }

// RawArgs returns the job's args as JSON, nil when it has none.
func (j *Job) RawArgs() json.RawMessage { return j.w.args() }

// Args decodes the job's own args into v.
func (j *Job) Args(v any) error {
	args := j.w.args()
	if len(args) == 0 {
		args = []byte("null")
	}
	if err := json.Unmarshal(args, v); err != nil {
		return fmt.Errorf("executor: decode args of job %s (%s): %w", j.ID(), j.Name(), err)
	}
	return nil
}

// Decode decodes the job's input into v: the context's keys, with the args'
// keys on top, so a job's own args win over context keys of the same name.
// Args that are not a JSON object are decoded alone.
func (j *Job) Decode(v any) error {
	merged, err := j.mergedInput()
	if err != nil {
		return err
	}
	if err := json.Unmarshal(merged, v); err != nil {
		return fmt.Errorf("executor: decode input of job %s (%s): %w", j.ID(), j.Name(), err)
	}
	return nil
}

func (j *Job) mergedInput() ([]byte, error) {
	args := j.w.args()
	var argMap map[string]json.RawMessage
	if len(args) > 0 && json.Unmarshal(args, &argMap) != nil {
		return args, nil // args are not an object
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.loadContext(); err != nil {
		return nil, err
	}
	merged := make(map[string]json.RawMessage, len(j.ctx)+len(argMap))
	maps.Copy(merged, j.ctx)
	maps.Copy(merged, argMap)
	return json.Marshal(merged)
}

// Arg decodes one input value into v: the arg named key, or else the
// context key of that name. It reports whether either exists.
func (j *Job) Arg(key string, v any) (bool, error) {
	var argMap map[string]json.RawMessage
	if args := j.w.args(); len(args) > 0 {
		_ = json.Unmarshal(args, &argMap)
	}
	if raw, ok := argMap[key]; ok {
		return true, decodeValue(raw, key, v)
	}
	return j.Get(key, v)
}

func decodeValue(raw json.RawMessage, key string, v any) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("executor: decode %q: %w", key, err)
	}
	return nil
}

// loadContext decodes the context on first use. The caller holds j.mu.
func (j *Job) loadContext() error {
	if j.ctx != nil || j.ctxErr != nil {
		return j.ctxErr
	}
	raw := j.w.context()
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &j.ctx); err != nil {
			j.ctxErr = fmt.Errorf("executor: the context of batch %s is not a JSON object: %w", j.BatchID(), err)
		}
	}
	if j.ctx == nil {
		// Also for a context of JSON null, which decodes to a nil map.
		j.ctx = map[string]json.RawMessage{}
	}
	return j.ctxErr
}

// Get decodes the context value of key into v and reports whether the key
// exists.
func (j *Job) Get(key string, v any) (bool, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.loadContext(); err != nil {
		return false, err
	}
	raw, ok := j.ctx[key]
	if !ok {
		return false, nil
	}
	return true, decodeValue(raw, key, v)
}

// ContextKeys returns the context's keys in sorted order.
func (j *Job) ContextKeys() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.loadContext() != nil {
		return nil
	}
	keys := make([]string, 0, len(j.ctx))
	for k := range j.ctx {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (j *Job) writable() bool {
	return j.w.kind == Jobs && j.w.job.BatchType == events.Chain && j.w.job.Role == events.RoleJob
}

// Set stores value under key in the context that the next chain step sees.
// Outside a chain step it returns ErrReadOnlyContext.
func (j *Job) Set(key string, value any) error {
	if !j.writable() {
		return ErrReadOnlyContext
	}
	raw, err := batchq.MarshalExact(value)
	if err != nil {
		return fmt.Errorf("executor: encode context value %q: %w", key, err)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.loadContext(); err != nil {
		return err
	}
	j.ctx[key] = raw
	j.ctxChanged = true
	return nil
}

// Delete removes key from the context that the next chain step sees.
// Outside a chain step it returns ErrReadOnlyContext.
func (j *Job) Delete(key string) error {
	if !j.writable() {
		return ErrReadOnlyContext
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.loadContext(); err != nil {
		return err
	}
	delete(j.ctx, key)
	j.ctxChanged = true
	return nil
}

// SetResult stores the job's result, encoded as JSON. The last call wins;
// the result is kept only when the attempt succeeds.
func (j *Job) SetResult(v any) error {
	raw, err := batchq.MarshalExact(v)
	if err != nil {
		return fmt.Errorf("executor: encode result of job %s (%s): %w", j.ID(), j.Name(), err)
	}
	j.mu.Lock()
	j.result = raw
	j.mu.Unlock()
	return nil
}

// AddJobs appends jobs to the running batch and returns their ids, as
// batchq.Client.AddJobs does. The batch does not settle before the added
// jobs are stored, and a retry of this job does not add them twice.
// Callbacks and compensations cannot add jobs.
func (j *Job) AddJobs(ctx context.Context, jobs ...batchq.Job) ([]string, error) {
	if j.w.kind == Compensations {
		return nil, errors.New("executor: a compensation cannot add jobs to its batch")
	}
	specs, err := batchq.AddSpecs(jobs)
	if err != nil || len(specs) == 0 {
		return nil, err
	}
	req := addition.Request{
		BatchID:        j.BatchID(),
		Queue:          j.w.job.Queue,
		AddID:          events.AddID(j.ID(), 1<<30), // the longest id, for the size check
		ParentJobID:    j.ID(),
		ParentRole:     j.w.job.Role,
		Jobs:           specs,
		MaxMessageSize: int(j.e.cfg.Conn.MaxPayload()),
		Source:         j.e.enc.Source,
	}
	// Check before taking an index: a call that publishes nothing must not
	// count as an addition that the completion waits for.
	if _, err := addition.Message(req); err != nil {
		return nil, fmt.Errorf("executor: %w", err)
	}
	j.mu.Lock()
	index := j.added
	j.added++
	j.mu.Unlock()
	req.AddID = events.AddID(j.ID(), index)
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	ans, err := addition.Add(ctx, j.e.cfg.Conn, j.e.js, req)
	if err != nil {
		// The addition may or may not be in the stream. The attempt must
		// not complete on that doubt, so it fails and a retry adds again
		// under the same add ids.
		j.mu.Lock()
		j.addFailed = err
		j.mu.Unlock()
		return nil, fmt.Errorf("executor: %w", err)
	}
	return batchq.AnswerIDs(ans)
}

// addError reports an attempt that must not complete because one of its
// additions may be missing.
type addError struct{ err error }

func (e *addError) Error() string {
	return "an AddJobs call failed, so the attempt is retried to add its jobs for sure: " + e.err.Error()
}

// outcome returns what the attempt leaves behind: its result, the context
// of a chain step, and how many additions it published.
func (j *Job) outcome() (result, context json.RawMessage, added int, err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.addFailed != nil {
		return nil, nil, 0, &addError{j.addFailed}
	}
	result, added = j.result, j.added
	if !j.writable() {
		return result, nil, added, nil
	}
	if !j.ctxChanged {
		return result, j.w.context(), added, nil
	}
	context, err = json.Marshal(j.ctx)
	return result, context, added, err
}
