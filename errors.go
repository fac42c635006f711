package batchq

import (
	"errors"
	"fmt"
)

var (
	// ErrBatchNotFound reports a batch id that the coordinator does not
	// know, or knows no more because retention removed it.
	ErrBatchNotFound = errors.New("batchq: batch not found")
	// ErrBatchFinished reports a change to a batch that has settled, or is
	// compensating, and accepts no more jobs or cancels.
	ErrBatchFinished = errors.New("batchq: batch finished")
	// ErrJobNotFound reports a job id that its batch does not have.
	ErrJobNotFound = errors.New("batchq: job not found")
	// ErrInvalidSpec matches every *SpecError.
	ErrInvalidSpec = errors.New("batchq: invalid batch spec")
	// ErrNoCoordinator reports that no coordinator answered a request.
	ErrNoCoordinator = errors.New("batchq: no coordinator answered; start one with `batchq coordinator` or `batchq dev`")
)

// SpecError reports an invalid batch spec. Dispatch returns it before it
// publishes anything.
type SpecError struct {
	// Field names the part of the spec, for example "job 3 (resize) args".
	Field string
	// Problem says what is wrong and how to fix it.
	Problem string
}

func (e *SpecError) Error() string {
	return fmt.Sprintf("batchq: invalid batch spec: %s: %s", e.Field, e.Problem)
}

// Is reports whether target is ErrInvalidSpec.
func (e *SpecError) Is(target error) bool { return target == ErrInvalidSpec }

func specError(field, format string, args ...any) error {
	return &SpecError{Field: field, Problem: fmt.Sprintf(format, args...)}
}
