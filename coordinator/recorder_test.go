package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/executor"
	"github.com/nats-io/nats.go"
)

// recorder collects what handlers saw, for assertions across goroutines.
type recorder struct {
	mu    sync.Mutex
	calls []call
}

type call struct {
	name     string
	batchID  string
	jobID    string
	position int
	attempt  int
	args     json.RawMessage
	input    map[string]any
	callback *events.CallbackInfo
	comp     *events.CompensationInfo
}

func (r *recorder) add(j *executor.Job) call {
	c := call{name: j.Name(), batchID: j.BatchID(), jobID: j.ID(), position: j.Position(), attempt: j.Attempt(), args: j.RawArgs(), callback: j.Callback(), comp: j.Compensation()}
	_ = j.Decode(&c.input)
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
	return c
}

func (r *recorder) all() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]call(nil), r.calls...)
}

// named returns the calls of one job name.
func (r *recorder) named(name string) []call {
	var out []call
	for _, c := range r.all() {
		if c.name == name {
			out = append(out, c)
		}
	}
	return out
}

// names returns the sequence of call names.
func (r *recorder) names() string {
	var out []string
	for _, c := range r.all() {
		out = append(out, c.name)
	}
	return strings.Join(out, ",")
}

// record returns a handler that records its call and then runs then, if
// set.
func (r *recorder) record(then func(context.Context, *executor.Job) error) executor.Handler {
	return func(ctx context.Context, j *executor.Job) error {
		r.add(j)
		if then != nil {
			return then(ctx, j)
		}
		return nil
	}
}

// tap records the types of the events of one batch in stream order as a
// core subscriber sees them.
type tap struct {
	mu    sync.Mutex
	types []string
	sub   *nats.Subscription
}

func newTap(t *testing.T, nc *nats.Conn, filter string) *tap {
	tp := &tap{}
	sub, err := nc.Subscribe(filter, func(m *nats.Msg) {
		env, err := events.Decode(m.Data)
		if err != nil {
			return
		}
		tp.mu.Lock()
		tp.types = append(tp.types, env.Type.Name()+":"+env.JobID)
		tp.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	tp.sub = sub
	return tp
}

func (tp *tap) count(prefix string) int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	n := 0
	for _, s := range tp.types {
		if strings.HasPrefix(s, prefix) {
			n++
		}
	}
	return n
}

func (tp *tap) String() string {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	s := append([]string(nil), tp.types...)
	sort.Strings(s)
	return fmt.Sprint(s)
}

// settleTime is how long a test waits for messages that must not come.
const settleTime = 500 * time.Millisecond
