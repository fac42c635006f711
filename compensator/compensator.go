// Package compensator runs the compensation jobs of one batchq queue and
// reports compensation.completed or compensation.failed to the coordinator.
//
// A compensation handler is an executor.Handler: Job.Compensation returns
// what it undoes (batch id, the original job's id, name, args and result,
// its position, the error that triggered the compensation, and the context
// at that moment), and Job.Args decodes the compensation's own args.
// Compensations retry with backoff like jobs; one that fails for good is
// recorded, and the remaining compensations still run.
package compensator

import (
	"github.com/batchq/batchq/executor"
)

// Config configures a Compensator. Its fields mean what they mean for an
// executor; Work is set by New.
type Config = executor.Config

// Compensator runs compensation jobs.
type Compensator struct {
	*executor.Executor
}

// New returns a compensator for cfg.Queue without handlers; register them
// with Handle before Run.
func New(cfg Config) (*Compensator, error) {
	cfg.Work = executor.Compensations
	e, err := executor.New(cfg)
	if err != nil {
		return nil, err
	}
	return &Compensator{Executor: e}, nil
}
