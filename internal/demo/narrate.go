package demo

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/batchq/batchq"
	"github.com/batchq/batchq/events"
)

// narrator prints the events of one chain as they arrive: each step's
// outcome with its result and the context keys it left, each compensation,
// and the batch's lifecycle.
type narrator struct {
	w io.Writer
	// steps are the chain's jobs, by position.
	steps []batchq.Job
	// contextKeys are the context keys that the last completed step left.
	contextKeys []string
	// context is the context that the last completed step left.
	context json.RawMessage
	// final is the batch as its last lifecycle event showed it.
	final *events.BatchInfo
}

func newNarrator(w io.Writer, steps []batchq.Job, initialContext map[string]any) *narrator {
	context, _ := json.Marshal(initialContext)
	return &narrator{w: w, steps: steps, contextKeys: slices.Sorted(maps.Keys(initialContext)), context: context}
}

// stepName returns the job name of the step with a job id, or the id when
// the step is not known (a job added while the chain ran).
func (n *narrator) stepName(jobID string) string {
	pos, err := strconv.Atoi(jobID)
	if err != nil || pos < 0 || pos >= len(n.steps) {
		return jobID
	}
	return n.steps[pos].Name
}

// compensationName returns the name of the compensation of a step.
func (n *narrator) compensationName(jobID string) string {
	pos, err := strconv.Atoi(jobID)
	if err != nil || pos < 0 || pos >= len(n.steps) || n.steps[pos].Compensation == nil {
		return "compensation of " + jobID
	}
	return n.steps[pos].Compensation.Name
}

// event prints one event and reports whether the batch settled.
func (n *narrator) event(env events.Envelope) (done bool, err error) {
	switch env.Type {
	case events.TypeBatchStarted, events.TypeBatchCompensating, events.TypeBatchCompleted, events.TypeBatchFailed, events.TypeBatchCancelled:
		return n.lifecycle(env)
	case events.TypeJobCompleted:
		d, err := events.DecodeData[events.JobCompleted](env)
		if err != nil || d.Role != events.RoleJob {
			return false, err
		}
		n.printf("step %-3s %-22s completed  result %s\n", d.JobID, n.stepName(d.JobID), compactJSON(d.Result))
		n.printContext(d.Context)
	case events.TypeJobRetrying:
		d, err := events.DecodeData[events.JobRetrying](env)
		if err != nil || d.Role != events.RoleJob {
			return false, err
		}
		n.printf("step %-3s %-22s attempt %d failed, retrying: %s\n", d.JobID, n.stepName(d.JobID), d.Attempt, d.Error)
	case events.TypeJobFailed:
		d, err := events.DecodeData[events.JobFailed](env)
		if err != nil || d.Role != events.RoleJob {
			return false, err
		}
		n.printf("step %-3s %-22s failed     %s\n", d.JobID, n.stepName(d.JobID), d.Error)
	case events.TypeCompensationCompleted:
		d, err := events.DecodeData[events.CompensationOutcome](env)
		if err != nil {
			return false, err
		}
		n.printf("undo %-3s %-22s completed  result %s\n", d.JobID, n.compensationName(d.JobID), compactJSON(d.Result))
	case events.TypeCompensationRetrying:
		d, err := events.DecodeData[events.CompensationOutcome](env)
		if err != nil {
			return false, err
		}
		n.printf("undo %-3s %-22s attempt %d failed, retrying: %s\n", d.JobID, n.compensationName(d.JobID), d.Attempt, d.Error)
	case events.TypeCompensationFailed:
		d, err := events.DecodeData[events.CompensationOutcome](env)
		if err != nil {
			return false, err
		}
		n.printf("undo %-3s %-22s failed     %s\n", d.JobID, n.compensationName(d.JobID), d.Error)
	}
	return false, nil
}

func (n *narrator) lifecycle(env events.Envelope) (bool, error) {
	d, err := events.DecodeData[events.BatchLifecycle](env)
	if err != nil {
		return false, err
	}
	line := strings.ReplaceAll(env.Type.Name(), ".", " ")
	if d.Batch.Error != "" && env.Type != events.TypeBatchStarted {
		line += ": " + d.Batch.Error
	}
	n.printf("%s\n", line)
	if !finalLifecycle(env.Type) {
		return false, nil
	}
	n.final = &d.Batch
	return true, nil
}

// printContext prints the keys of the context a step left, marking those it
// added and removed.
func (n *narrator) printContext(context json.RawMessage) {
	var values map[string]json.RawMessage
	if err := json.Unmarshal(context, &values); err != nil {
		return
	}
	keys := slices.Sorted(maps.Keys(values))
	var added, removed []string
	for _, k := range keys {
		if !slices.Contains(n.contextKeys, k) {
			added = append(added, k)
		}
	}
	for _, k := range n.contextKeys {
		if _, ok := values[k]; !ok {
			removed = append(removed, k)
		}
	}
	line := "         context keys: " + strings.Join(keys, ", ")
	if len(added) > 0 {
		line += " (added " + strings.Join(added, ", ") + ")"
	}
	if len(removed) > 0 {
		line += " (removed " + strings.Join(removed, ", ") + ")"
	}
	n.printf("%s\n", line)
	n.contextKeys = keys
	n.context = context
}

func (n *narrator) printf(format string, args ...any) {
	fmt.Fprintf(n.w, format, args...)
}

// compactJSON returns raw as one line, or "none" when it is empty.
func compactJSON(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "none"
	}
	return string(raw)
}
