package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/batchq/batchq"
	"github.com/batchq/batchq/executor"
	"github.com/batchq/batchq/store"
	"github.com/nats-io/nats.go"
)

// TestHardInputRoundTrip sends args, context and results that are easy to
// mangle through the whole system and reads them back byte for byte.
func TestHardInputRoundTrip(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store) {
		e := newEnv(t, open)
		e.startCoordinator(nil)
		seen := make(chan string, 16)
		e.startExecutor("default", map[string]executor.Handler{
			"echo": func(ctx context.Context, j *executor.Job) error {
				var v map[string]string
				if err := j.Args(&v); err != nil {
					return err
				}
				var tenant string
				if _, err := j.Get("tenant", &tenant); err != nil {
					return err
				}
				seen <- tenant
				return j.SetResult(v)
			},
		}, nil)
		big := strings.Repeat("ab\x00ç", 70_000) // 700 kB of JSON, near the 1 MiB limit
		values := []map[string]string{
			{"nul": "a\x00b\x00"},
			{"emoji": "😀🎉👩‍👩‍👧", "rtl": "שלום עולם مرحبا \u202eevil\u202c"},
			{"escapes": `quote " backslash \ newline` + "\n\ttab </script>"},
			{"big": big},
			{"big": big},
		}
		jobs := make([]batchq.Job, len(values))
		for i, v := range values {
			jobs[i] = batchq.Job{Name: "echo", Args: v}
		}
		ctxValue := map[string]string{"tenant": "Ωmega\x00ツ"}
		id, err := e.client.NewBatch(jobs...).Context(ctxValue).Dispatch(e.ctx())
		if err != nil {
			t.Fatal(err)
		}
		info := e.wait(id)
		if info.Status != batchq.StatusCompleted {
			t.Fatalf("batch = %+v", info)
		}
		for range values {
			if got := <-seen; got != ctxValue["tenant"] {
				t.Errorf("context value read back as %q", got)
			}
		}
		results, err := e.client.Results(e.ctx(), id)
		if err != nil {
			t.Fatal(err)
		}
		if len(results) != len(values) {
			t.Fatalf("Results returned %d jobs, want %d", len(results), len(values))
		}
		for i, r := range results {
			want, _ := json.Marshal(values[i])
			if string(r.Result) != string(want) {
				t.Errorf("result %d differs: %d bytes read, %d bytes sent", i, len(r.Result), len(want))
			}
		}
	})
}

func TestInvalidUTF8RejectedAtDispatch(t *testing.T) {
	e := kvEnv(t)
	_, err := e.client.NewBatch(
		batchq.Job{Name: "ok", Args: "fine"},
		batchq.Job{Name: "import", Args: map[string]string{"row": "caf\xe9"}},
	).Dispatch(e.ctx())
	var se *batchq.SpecError
	if !errors.As(err, &se) || se.Field != "job 1 (import) args" {
		t.Fatalf("Dispatch error = %v, want a SpecError for job 1 (import) args", err)
	}
	if !strings.Contains(err.Error(), "UTF-8") {
		t.Errorf("error %q does not say what is wrong", err)
	}
	_, err = e.client.NewBatch(batchq.Jobs("ok")...).Context(map[string]string{"k": "\xff"}).Dispatch(e.ctx())
	if !errors.As(err, &se) || se.Field != "context" {
		t.Errorf("Dispatch with a bad context: %v", err)
	}
}
