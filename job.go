package batchq

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/batchq/batchq/events"
)

// Job is one job of a batch: the name of a registered handler and its args.
type Job struct {
	// Name selects the handler that runs the job.
	Name string
	// Args is encoded as JSON and given to the handler. Nil means no args.
	// A json.RawMessage is used as it is, after a validity check.
	Args any
	// Compensation runs when the batch fails or is cancelled after this job
	// took effect (or failed while possibly taking effect).
	Compensation *Call
	// MaxAttempts overrides the batch's attempt limit for this job.
	MaxAttempts int
	// Timeout overrides the batch's attempt timeout for this job.
	Timeout time.Duration
}

// Call names a handler with args: a callback or a compensation.
type Call struct {
	Name string
	Args any
}

// Jobs returns jobs without args, one per name.
func Jobs(names ...string) []Job {
	jobs := make([]Job, len(names))
	for i, n := range names {
		jobs[i] = Job{Name: n}
	}
	return jobs
}

// WithCompensation returns a copy of j that names a compensation job.
func (j Job) WithCompensation(name string, args any) Job {
	j.Compensation = &Call{Name: name, Args: args}
	return j
}

// empty reports whether j has nothing in it; AddJobs drops such entries.
func (j Job) empty() bool {
	return j.Name == "" && j.Args == nil && j.Compensation == nil
}

// encodeJSON encodes v, keeping a json.RawMessage as it is after checking
// it. Like MarshalExact it rejects strings that are not valid UTF-8, so that
// what a handler reads back is exactly what was dispatched. JSON null
// encodes to nil.
func encodeJSON(v any) (json.RawMessage, error) {
	if raw, ok := v.(json.RawMessage); ok {
		if !json.Valid(raw) {
			return nil, fmt.Errorf("the json.RawMessage is not valid JSON")
		}
		if !utf8.Valid(raw) {
			return nil, fmt.Errorf("the json.RawMessage is not valid UTF-8")
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			return nil, err
		}
		v = json.RawMessage(buf.Bytes())
	}
	data, err := MarshalExact(v)
	if err != nil {
		return nil, err
	}
	if string(data) == "null" {
		return nil, nil
	}
	return data, nil
}

// encodeCall encodes a callback or compensation for field.
func encodeCall(field string, c *Call) (*events.JobRef, error) {
	if c == nil {
		return nil, nil
	}
	if err := events.ValidateJobName(c.Name); err != nil {
		return nil, specError(field, "%v; give the name of a registered handler", err)
	}
	args, err := encodeJSON(c.Args)
	if err != nil {
		return nil, specError(field+" args", "cannot be encoded as JSON: %v", err)
	}
	return &events.JobRef{Name: c.Name, Args: args}, nil
}

// Spec encodes the job at a position as its wire spec. It returns a
// *SpecError naming the job when the name is invalid or the args cannot be
// encoded.
func (j Job) Spec(position int) (events.JobSpec, error) {
	field := fmt.Sprintf("job %d", position)
	if j.Name != "" {
		field = fmt.Sprintf("job %d (%s)", position, j.Name)
	}
	if err := events.ValidateJobName(j.Name); err != nil {
		return events.JobSpec{}, specError(field, "%v; give the name of a registered handler", err)
	}
	args, err := encodeJSON(j.Args)
	if err != nil {
		return events.JobSpec{}, specError(field+" args", "cannot be encoded as JSON: %v", err)
	}
	comp, err := encodeCall(field+" compensation", j.Compensation)
	if err != nil {
		return events.JobSpec{}, err
	}
	if j.MaxAttempts < 0 {
		return events.JobSpec{}, specError(field, "MaxAttempts %d is negative; use 0 for the default", j.MaxAttempts)
	}
	if j.Timeout < 0 || (j.Timeout > 0 && j.Timeout < time.Millisecond) {
		return events.JobSpec{}, specError(field, "Timeout %s is not 0 or at least 1ms; timeouts count whole milliseconds", j.Timeout)
	}
	return events.JobSpec{
		ID:           events.PositionJobID(position),
		Position:     position,
		Name:         j.Name,
		Args:         args,
		Compensation: comp,
		MaxAttempts:  j.MaxAttempts,
		TimeoutMS:    j.Timeout.Milliseconds(),
	}, nil
}
