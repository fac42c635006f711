package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/batchq/batchq"
)

// ChainOptions configure the chain driver.
type ChainOptions struct {
	// Dir is the directory whose files the chain lists. Required.
	Dir string
	// ReportDir is the directory where the last step writes its report.
	// Required.
	ReportDir string
	// Out receives one or two lines per step as the steps finish.
	Out io.Writer
}

// ChainSummary is the outcome of a chain that Chain ran.
type ChainSummary struct {
	BatchID string
	Batch   *batchq.BatchInfo
	// Context is the context that the last step left.
	Context json.RawMessage
}

// Chain runs the four-step chain over opts.Dir and prints each step as it
// finishes, then the final context. It returns an error when the chain did
// not complete.
func Chain(ctx context.Context, client *batchq.Client, opts ChainOptions) (*ChainSummary, error) {
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	dir, err := existingDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	reportDir, err := existingDir(opts.ReportDir)
	if err != nil {
		return nil, err
	}

	initial := map[string]any{"dir": dir, "report_dir": reportDir}
	steps := []batchq.Job{
		{Name: ListFilesJob},
		{Name: PickLargestJob, Args: map[string]int{"count": defaultLargest}},
		{Name: ChecksumJob},
		{Name: WriteReportJob},
	}
	id, err := client.NewChain(steps...).Context(initial).Dispatch(ctx)
	if err != nil {
		return nil, fmt.Errorf("dispatch the chain over %s: %w", dir, err)
	}
	fmt.Fprintf(opts.Out, "chain %s: %d steps over %s\n", id, len(steps), dir)

	n := newNarrator(opts.Out, steps, initial)
	if err := followBatch(ctx, client.Conn(), id, n.event); err != nil {
		return nil, err
	}
	info, err := client.Batch(ctx, id)
	if err != nil {
		return nil, err
	}
	summary := &ChainSummary{BatchID: id, Batch: info, Context: n.context}
	if info.Status != batchq.StatusCompleted {
		return summary, fmt.Errorf("chain %s %s: %s", id, info.Status, info.Error)
	}

	var indented bytes.Buffer
	if err := json.Indent(&indented, n.context, "", "  "); err != nil {
		return summary, fmt.Errorf("format the final context: %w", err)
	}
	fmt.Fprintf(opts.Out, "final context:\n%s\n", indented.Bytes())
	return summary, nil
}

// existingDir returns the absolute path of dir, or an error unless it is a
// directory.
func existingDir(dir string) (string, error) {
	if dir == "" {
		return "", fmt.Errorf("no directory given; pass one")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("invalid directory %q: %w", dir, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("directory %s: %w", dir, unwrapPathError(err))
	}
	if !st.IsDir() {
		return "", fmt.Errorf("%s is not a directory; pass a directory", dir)
	}
	return abs, nil
}
