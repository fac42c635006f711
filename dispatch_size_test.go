package batchq

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/batchq/batchq/internal/natstest"
)

// newSizeTestClient returns a client on a fresh in-process server with the
// default max payload of 1 MiB.
func newSizeTestClient(t *testing.T) *Client {
	t.Helper()
	srv := natstest.Start(t)
	c, err := NewClient(natstest.Connect(t, srv), Config{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// dispatchOutcome reports whether err is acceptable from Dispatch: success
// or a *SpecError. Any other error means the batch passed validation and
// then failed at publish time.
func dispatchOutcome(t *testing.T, err error) {
	t.Helper()
	var se *SpecError
	if err != nil && !errors.As(err, &se) {
		t.Errorf("Dispatch passed validation, then failed while publishing: %v", err)
	}
}

// TestDispatchEscapedArgsSize dispatches one job whose json.RawMessage
// args hold 300 kB of '<', which encoding/json escapes to about 1.8 MB.
func TestDispatchEscapedArgsSize(t *testing.T) {
	c := newSizeTestClient(t)
	args := json.RawMessage(`{"html":"` + strings.Repeat("<", 300_000) + `"}`)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := c.NewBatch(Job{Name: "render", Args: args}).Dispatch(ctx)
	dispatchOutcome(t, err)
}

// TestDispatchCallbackArgsSize dispatches a batch whose completion callback
// has 2 MB of args: Dispatch rejects it with a *SpecError.
func TestDispatchCallbackArgsSize(t *testing.T) {
	c := newSizeTestClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := c.NewBatch(Jobs("a")...).OnComplete("reduce", strings.Repeat("x", 2<<20)).Dispatch(ctx)
	dispatchOutcome(t, err)
}

// TestDispatchLastChunkWithContext dispatches a job, a context and callback
// args that fit one by one but not together in batch.submitted.
func TestDispatchLastChunkWithContext(t *testing.T) {
	c := newSizeTestClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	batchContext := map[string]string{"k": strings.Repeat("c", 250_000)}
	job := Job{Name: "a", Args: strings.Repeat("a", 700_000)}
	_, err := c.NewBatch(job).Context(batchContext).OnComplete("reduce", strings.Repeat("r", 100_000)).Dispatch(ctx)
	dispatchOutcome(t, err)
}

// TestNestedRawEscapedReplacement encodes args that embed a JSON document
// from another producer with a \ufffd escape, which is valid JSON and valid
// UTF-8.
func TestNestedRawEscapedReplacement(t *testing.T) {
	doc := json.RawMessage(`{"text":"decoded with errors=replace: \ufffd"}`)
	if _, err := (Job{Name: "index", Args: doc}).Spec(0); err != nil {
		t.Fatalf("top-level raw document rejected: %v", err)
	}
	if _, err := (Job{Name: "index", Args: map[string]any{"doc": doc}}).Spec(0); err != nil {
		t.Errorf("the same document nested in a map is rejected: %v", err)
	}
}
