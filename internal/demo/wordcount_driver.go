package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/batchq/batchq"
)

// WordCountOptions configure the word count driver.
type WordCountOptions struct {
	// Dir is the directory whose regular files are counted, recursively.
	// Symbolic links below it are not followed. Required.
	Dir string
	// Top is how many of the most frequent words to report. Default 10,
	// at most MaxTop.
	Top int
	// Progress, when set, receives a progress bar that is redrawn in place
	// with carriage returns, so it should be a terminal.
	Progress io.Writer
	// ProgressInterval is how often the progress bar is redrawn. Default
	// 200ms.
	ProgressInterval time.Duration
}

// WordCountSummary is the outcome of a word count: the reduce step's result
// with the batch's size and timing.
type WordCountSummary struct {
	WordCountResult
	// BatchID is the id of the batch that counted the words.
	BatchID string
	// Jobs counts the jobs of the batch: one per file, plus the part jobs
	// of files that were split.
	Jobs int
	// Elapsed runs from the dispatch until the reduce step completed.
	Elapsed time.Duration
}

// JobsPerSecond returns the batch's jobs divided by the elapsed time.
func (s *WordCountSummary) JobsPerSecond() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Jobs) / s.Elapsed.Seconds()
}

// WordCount counts the words of every regular file under opts.Dir with one
// job per file, and returns the result of the reduce step that runs as the
// batch's completion callback.
func WordCount(ctx context.Context, client *batchq.Client, opts WordCountOptions) (*WordCountSummary, error) {
	if opts.Top == 0 {
		opts.Top = DefaultTop
	}
	if opts.Top < 1 || opts.Top > MaxTop {
		return nil, fmt.Errorf("invalid number of top words %d: use 1 to %d", opts.Top, MaxTop)
	}
	if opts.ProgressInterval == 0 {
		opts.ProgressInterval = 200 * time.Millisecond
	}
	files, err := ListFiles(opts.Dir)
	if err != nil {
		return nil, err
	}
	jobs := make([]batchq.Job, len(files))
	for i, path := range files {
		jobs[i] = batchq.Job{Name: CountJob, Args: newCountArgs(path)}
	}

	started := time.Now()
	id, err := client.NewBatch(jobs...).OnComplete(ReduceJob, reduceArgs{Top: opts.Top}).Dispatch(ctx)
	if err != nil {
		return nil, fmt.Errorf("dispatch the word count of %s: %w", opts.Dir, err)
	}
	info, err := waitWithProgress(ctx, client, id, opts.Progress, opts.ProgressInterval)
	if err != nil {
		return nil, err
	}
	if info.Status != batchq.StatusCompleted {
		return nil, fmt.Errorf("word count batch %s %s: %s", id, info.Status, info.Error)
	}
	callback, err := WaitCallback(ctx, client, id, "on_complete")
	if err != nil {
		return nil, err
	}
	elapsed := time.Since(started)

	summary := &WordCountSummary{BatchID: id, Jobs: info.Total, Elapsed: elapsed}
	if err := json.Unmarshal(callback.Result, &summary.WordCountResult); err != nil {
		return nil, fmt.Errorf("decode the result of %s in batch %s: %w", ReduceJob, id, err)
	}
	return summary, nil
}

// ListFiles returns the absolute paths of the regular files under dir, in
// lexical order. Symbolic links below dir are skipped, not followed, but dir
// itself may be a link to a directory.
func ListFiles(dir string) ([]string, error) {
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("invalid directory %q: %w", dir, err)
	}
	if root, err = filepath.EvalSymlinks(root); err != nil {
		return nil, fmt.Errorf("directory %s: %w", dir, unwrapPathError(err))
	}
	st, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("directory %s: %w", dir, unwrapPathError(err))
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s is not a directory; pass a directory", dir)
	}

	var files []string
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("list %s: %w", path, unwrapPathError(err))
		}
		if d.Type().IsRegular() {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("directory %s has no regular files to count", dir)
	}
	return files, nil
}

func unwrapPathError(err error) error {
	var pathErr *fs.PathError
	if errors.As(err, &pathErr) {
		return pathErr.Err
	}
	return err
}

// WriteText writes the summary for a person to read.
func (s *WordCountSummary) WriteText(w io.Writer) error {
	_, err := fmt.Fprintf(w, "Counted %d words in %d files with %d jobs in %s (%.0f jobs/s).\n",
		s.Words, s.Files, s.Jobs, s.Elapsed.Round(time.Millisecond), s.JobsPerSecond())
	if err != nil {
		return err
	}
	if len(s.Top) == 0 {
		return nil
	}
	width := 0
	for _, f := range s.Top {
		width = max(width, len(f.Word))
	}
	if _, err := fmt.Fprintf(w, "Top %d words:\n", len(s.Top)); err != nil {
		return err
	}
	for i, f := range s.Top {
		if _, err := fmt.Fprintf(w, "%4d  %-*s  %d\n", i+1, width, f.Word, f.Count); err != nil {
			return err
		}
	}
	return nil
}

// wordCountJSON is the JSON form of a summary.
type wordCountJSON struct {
	Files     int             `json:"files"`
	Words     int64           `json:"words"`
	Top       []WordFrequency `json:"top"`
	ElapsedMS int64           `json:"elapsed_ms"`
}

// WriteJSON writes the summary as one JSON object on one line:
// {"files": N, "words": N, "top": [{"word": W, "count": N}], "elapsed_ms": N}.
func (s *WordCountSummary) WriteJSON(w io.Writer) error {
	top := s.Top
	if top == nil {
		top = []WordFrequency{}
	}
	return json.NewEncoder(w).Encode(wordCountJSON{
		Files: s.Files, Words: s.Words, Top: top, ElapsedMS: s.Elapsed.Milliseconds(),
	})
}
