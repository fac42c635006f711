package demo

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/batchq/batchq"
	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/executor"
)

// Job names of the word count demo.
const (
	// CountJob counts the words of one file. Its args are {"path": FILE}.
	CountJob = "wordcount.count"
	// CountPartJob counts the words of one part of a file's vocabulary. A
	// count job adds such jobs when its result would be too large for one
	// message.
	CountPartJob = "wordcount.count_part"
	// ReduceJob merges the counts of every file. It runs as the batch's
	// completion callback with args {"top": N}.
	ReduceJob = "wordcount.reduce"
)

// Limits of the word count demo.
const (
	// DefaultTop is how many of the most frequent words the reduce step
	// reports when its args name no number.
	DefaultTop = 10
	// MaxTop bounds the number of top words, so that the reduce step's
	// result stays far below the 1 MiB default max payload of a NATS
	// message.
	MaxTop = 1000
	// maxResultBytes bounds the encoded counts that one count job returns.
	// A file with more distinct words is split into parts by word hash. The
	// bound stays well below the 1 MiB default max payload.
	maxResultBytes = 128 << 10
	// resultsStall bounds the wait for the next result while the reduce
	// step reads them. A page of results normally arrives within a second.
	resultsStall = 30 * time.Second
	// readBufferBytes is the size of the buffer that files are read with.
	readBufferBytes = 64 << 10
)

// countArgs are the args of CountJob and CountPartJob. Parts is 0 for a
// whole file. Otherwise the job counts only the words whose hash modulo
// Parts equals Part.
type countArgs struct {
	Path string `json:"path,omitempty"`
	// RawPath holds a path that is not valid UTF-8, as bytes, which JSON
	// carries as base64; a JSON string cannot hold such a name exactly.
	RawPath []byte `json:"raw_path,omitempty"`
	Part    int    `json:"part,omitempty"`
	Parts   int    `json:"parts,omitempty"`
}

// newCountArgs returns the args that name path.
func newCountArgs(path string) countArgs {
	if utf8.ValidString(path) {
		return countArgs{Path: path}
	}
	return countArgs{RawPath: []byte(path)}
}

// path returns the file that the args name.
func (a countArgs) path() string {
	if a.RawPath != nil {
		return string(a.RawPath)
	}
	return a.Path
}

// CountWords counts the words that r yields, in lower case. A word is a
// maximal run of the ASCII letters A-Z and a-z. Every other byte separates
// words, including digits, '_' and the bytes of non-ASCII characters.
func CountWords(r io.Reader) (map[string]int, error) {
	return countWords(context.Background(), r, 0, 0)
}

// countWords counts words like CountWords, keeping only the words whose
// hash modulo parts equals part when parts is above 1. It stops when ctx
// ends.
func countWords(ctx context.Context, r io.Reader, part, parts int) (map[string]int, error) {
	counts := make(map[string]int)
	buf := make([]byte, readBufferBytes)
	var word []byte
	flush := func() {
		if len(word) > 0 && (parts <= 1 || int(wordHash(word)%uint32(parts)) == part) {
			counts[string(word)]++
		}
		word = word[:0]
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n, err := r.Read(buf)
		for _, c := range buf[:n] {
			switch {
			case 'a' <= c && c <= 'z':
				word = append(word, c)
			case 'A' <= c && c <= 'Z':
				word = append(word, c+('a'-'A'))
			default:
				flush()
			}
		}
		if errors.Is(err, io.EOF) {
			flush()
			return counts, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// wordHash is the 32-bit FNV-1a hash of a word. It decides which part of a
// split file counts the word, so it must not change between processes.
func wordHash(word []byte) uint32 {
	h := uint32(2166136261)
	for _, c := range word {
		h ^= uint32(c)
		h *= 16777619
	}
	return h
}

// countFile counts the words of the file at path.
func countFile(ctx context.Context, path string, part, parts int) (map[string]int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fileError(path, err)
	}
	defer f.Close()
	counts, err := countWords(ctx, f, part, parts)
	if err != nil && ctx.Err() == nil {
		return nil, fileError(path, err)
	}
	return counts, err
}

// fileError puts the file's path in front of err, and drops the path that
// an *fs.PathError would repeat.
func fileError(path string, err error) error {
	var pathErr *fs.PathError
	if errors.As(err, &pathErr) {
		err = pathErr.Err
	}
	return fmt.Errorf("cannot read file %s: %w", path, err)
}

// handleCount runs CountJob and CountPartJob. When the counts would not fit
// in one result, it adds CountPartJob jobs that each count one part of the
// words and leaves an empty result itself.
func handleCount(ctx context.Context, job *executor.Job) error {
	var args countArgs
	if err := job.Args(&args); err != nil {
		return executor.Permanent(err)
	}
	if args.path() == "" {
		return executor.Permanent(fmt.Errorf("%s: the args have no \"path\"; pass {\"path\": FILE}", job.Name()))
	}
	if args.Parts < 0 || (args.Parts > 0 && (args.Part < 0 || args.Part >= args.Parts)) {
		return executor.Permanent(fmt.Errorf("%s: invalid part %d of %d for %s: part must be at least 0 and below parts", job.Name(), args.Part, args.Parts, args.path()))
	}

	counts, err := countFile(ctx, args.path(), args.Part, args.Parts)
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		return executor.Permanent(err)
	}
	encoded, err := json.Marshal(counts)
	if err != nil {
		return err
	}
	if len(encoded) <= resultLimit(job) {
		return job.SetResult(json.RawMessage(encoded))
	}

	if _, err := job.AddJobs(ctx, splitCount(args, len(encoded), resultLimit(job))...); err != nil {
		return fmt.Errorf("split the count of %s: %w", args.path(), err)
	}
	return job.SetResult(map[string]int{})
}

// resultLimit returns the largest result that a count job returns itself.
func resultLimit(job *executor.Job) int {
	limit := maxResultBytes
	if payload := int(job.Client().Conn().MaxPayload()); payload > 0 {
		limit = min(limit, payload/4)
	}
	return limit
}

// splitCount returns the jobs that count the words of args in parts small
// enough for one result each. A part job that still finds too many words
// splits again: its parts divide its own share of the hash space, because a
// hash that is Part+Parts*k modulo Parts*factor is Part modulo Parts.
func splitCount(args countArgs, size, limit int) []batchq.Job {
	factor := max(2, (2*size+limit-1)/limit)
	parts := max(args.Parts, 1)
	jobs := make([]batchq.Job, factor)
	for k := range factor {
		jobs[k] = batchq.Job{Name: CountPartJob, Args: countArgs{
			Path:    args.Path,
			RawPath: args.RawPath,
			Part:    args.Part + parts*k,
			Parts:   parts * factor,
		}}
	}
	return jobs
}

// WordFrequency is a word with the number of times it occurs.
type WordFrequency struct {
	Word  string `json:"word"`
	Count int64  `json:"count"`
}

// WordCountResult is the result of the reduce step.
type WordCountResult struct {
	// Files counts the files whose words were counted.
	Files int `json:"files"`
	// Words counts every word of every file.
	Words int64 `json:"words"`
	// Top lists the most frequent words, most frequent first, and words of
	// equal count in ascending order.
	Top []WordFrequency `json:"top"`
}

type reduceArgs struct {
	Top int `json:"top"`
}

// handleReduce runs ReduceJob: it streams the results of every count job of
// the batch, merges them and keeps the totals and the top words.
func handleReduce(ctx context.Context, job *executor.Job) error {
	if job.Callback() == nil {
		return executor.Permanent(fmt.Errorf("%s runs as the completion callback of a word count batch, not as a job", job.Name()))
	}
	args := reduceArgs{Top: DefaultTop}
	if err := job.Args(&args); err != nil {
		return executor.Permanent(err)
	}
	if args.Top < 1 || args.Top > MaxTop {
		return executor.Permanent(fmt.Errorf("%s: invalid top %d: use 1 to %d", job.Name(), args.Top, MaxTop))
	}

	// A page request whose reply never comes would otherwise wait until the
	// attempt times out, 30 minutes by default, so the read fails once no
	// result has arrived for resultsStall.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stall := time.AfterFunc(resultsStall, func() {
		cancel(fmt.Errorf("no result arrived within %s; check the coordinator's log", resultsStall))
	})
	defer stall.Stop()

	totals := make(map[string]int64)
	var result WordCountResult
	err := job.Client().EachResult(ctx, job.BatchID(), func(info batchq.JobInfo) error {
		stall.Reset(resultsStall)
		if info.Status != events.JobStatusCompleted {
			return nil
		}
		if info.Name == CountJob {
			result.Files++
		}
		var counts map[string]int64
		if err := json.Unmarshal(info.Result, &counts); err != nil {
			return fmt.Errorf("decode the result of job %s (%s): %w", info.ID, info.Name, err)
		}
		for word, n := range counts {
			totals[word] += n
			result.Words += n
		}
		return nil
	})
	if cause := context.Cause(ctx); err != nil && cause != nil && ctx.Err() != nil {
		err = cause
	}
	if err != nil {
		return fmt.Errorf("read the results of batch %s: %w", job.BatchID(), err)
	}
	result.Top = topWords(totals, args.Top)
	return job.SetResult(result)
}

// topWords returns the n most frequent words, ties broken by word in
// ascending order.
func topWords(totals map[string]int64, n int) []WordFrequency {
	all := make([]WordFrequency, 0, len(totals))
	for word, count := range totals {
		all = append(all, WordFrequency{Word: word, Count: count})
	}
	slices.SortFunc(all, func(a, b WordFrequency) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return cmp.Compare(a.Word, b.Word)
	})
	return all[:min(n, len(all))]
}
