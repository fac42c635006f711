package events

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxNameLength bounds job and callback names in bytes.
const MaxNameLength = 256

// ValidateJobName returns an error unless name can name a job: 1 to
// MaxNameLength bytes of valid UTF-8 without control characters.
func ValidateJobName(name string) error {
	if name == "" {
		return errors.New("job name is empty")
	}
	if len(name) > MaxNameLength {
		return fmt.Errorf("job name %q... is %d bytes long; use at most %d", name[:32], len(name), MaxNameLength)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("job name %q is not valid UTF-8", name)
	}
	if i := strings.IndexFunc(name, unicode.IsControl); i >= 0 {
		return fmt.Errorf("job name %q contains the control character %U; use printable characters", name, name[i])
	}
	return nil
}

func (r *JobRef) validate(field string) error {
	if r == nil {
		return nil
	}
	if err := ValidateJobName(r.Name); err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	return nil
}

func (s *JobSpec) validate() error {
	if s.ID == "" {
		return fmt.Errorf("job at position %d has no id", s.Position)
	}
	if s.Position < 0 {
		return fmt.Errorf("job %q has negative position %d", s.ID, s.Position)
	}
	if err := ValidateJobName(s.Name); err != nil {
		return fmt.Errorf("job %q: %w", s.ID, err)
	}
	if s.MaxAttempts < 0 || s.TimeoutMS < 0 {
		return fmt.Errorf("job %q: max_attempts and timeout_ms must not be negative", s.ID)
	}
	return s.Compensation.validate("job " + s.ID + " compensation")
}

func validateSpecs(jobs []JobSpec) error {
	for i := range jobs {
		if err := jobs[i].validate(); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks the fields of a batch.jobs event.
func (d *BatchJobs) Validate() error {
	if err := ValidateID("batch_id", d.BatchID); err != nil {
		return err
	}
	if d.Chunk < 0 {
		return fmt.Errorf("chunk %d is negative", d.Chunk)
	}
	if len(d.Jobs) == 0 {
		return fmt.Errorf("chunk %d has no jobs", d.Chunk)
	}
	return validateSpecs(d.Jobs)
}

// Validate checks the fields of a batch.submitted event.
func (d *BatchSubmitted) Validate() error {
	if err := ValidateID("batch_id", d.BatchID); err != nil {
		return err
	}
	if d.Type != Parallel && d.Type != Chain {
		return fmt.Errorf("type %q is neither %q nor %q", d.Type, Parallel, Chain)
	}
	if err := ValidateQueueName(d.Queue); err != nil {
		return err
	}
	if d.Total < 0 || d.Chunks < 0 {
		return errors.New("total and chunks must not be negative")
	}
	if d.Options.AllowFailures && d.Type == Chain {
		return errors.New("allow_failures is only valid for parallel batches")
	}
	for field, ref := range map[string]*JobRef{
		"on_complete": d.Options.OnComplete, "on_failure": d.Options.OnFailure, "on_job_failure": d.Options.OnJobFailure,
	} {
		if err := ref.validate(field); err != nil {
			return err
		}
	}
	return validateSpecs(d.Jobs)
}

func validateOutcome(batchID, jobID string, role Role, attempt int) error {
	if err := ValidateID("batch_id", batchID); err != nil {
		return err
	}
	if jobID == "" {
		return errors.New("job_id is missing")
	}
	if role != RoleJob && role != RoleCallback {
		return fmt.Errorf("role %q is neither %q nor %q", role, RoleJob, RoleCallback)
	}
	if attempt < 1 {
		return fmt.Errorf("attempt %d is below 1", attempt)
	}
	return nil
}

// Validate checks the fields of a job.completed event.
func (d *JobCompleted) Validate() error {
	if d.Added < 0 {
		return fmt.Errorf("added %d is negative", d.Added)
	}
	return validateOutcome(d.BatchID, d.JobID, d.Role, d.Attempt)
}

// Validate checks the fields of a job.failed event.
func (d *JobFailed) Validate() error {
	return validateOutcome(d.BatchID, d.JobID, d.Role, d.Attempt)
}

// Validate checks the fields of a job.retrying event.
func (d *JobRetrying) Validate() error {
	return validateOutcome(d.BatchID, d.JobID, d.Role, d.Attempt)
}

// Validate checks the fields of a job.skipped event.
func (d *JobSkipped) Validate() error {
	return validateOutcome(d.BatchID, d.JobID, d.Role, d.Attempt)
}

// Validate checks the fields of a jobs.added event.
func (d *JobsAdded) Validate() error {
	if err := ValidateID("batch_id", d.BatchID); err != nil {
		return err
	}
	if err := ValidateAddID(d.AddID); err != nil {
		return err
	}
	for i := range d.Jobs {
		if err := ValidateJobName(d.Jobs[i].Name); err != nil {
			return fmt.Errorf("added job %d: %w", i, err)
		}
		if err := d.Jobs[i].Compensation.validate(fmt.Sprintf("added job %d compensation", i)); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks the fields of a compensation outcome event.
func (d *CompensationOutcome) Validate() error {
	if err := ValidateID("batch_id", d.BatchID); err != nil {
		return err
	}
	if d.JobID == "" {
		return errors.New("job_id is missing")
	}
	if d.Attempt < 1 {
		return fmt.Errorf("attempt %d is below 1", d.Attempt)
	}
	return nil
}

// Validate checks the fields of a work message.
func (d *JobQueued) Validate() error {
	if err := ValidateJobName(d.Name); err != nil {
		return err
	}
	return validateOutcome(d.BatchID, d.JobID, d.Role, d.Attempt)
}

// Validate checks the fields of a compensation work message.
func (d *CompensationQueued) Validate() error {
	if err := ValidateJobName(d.Name); err != nil {
		return err
	}
	if d.Attempt < 1 {
		return fmt.Errorf("attempt %d is below 1", d.Attempt)
	}
	return ValidateID("batch_id", d.BatchID)
}

// ValidateAddID returns an error unless id can name an addition: dot-separated
// tokens of letters, digits, '-' and '_', at most 128 bytes.
func ValidateAddID(id string) error {
	if id == "" {
		return errors.New("add_id is missing")
	}
	if len(id) > 128 {
		return fmt.Errorf("add_id %q... is longer than 128 bytes", id[:32])
	}
	for _, part := range strings.Split(id, ".") {
		if part == "" {
			return fmt.Errorf("add_id %q has an empty part between dots", id)
		}
		for _, r := range part {
			if !isTokenRune(r) {
				return fmt.Errorf("add_id %q contains %q; use letters, digits, '-', '_' and '.' only", id, r)
			}
		}
	}
	return nil
}
