package demo

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/batchq/batchq/executor"
)

// Job names of the chain demo, in the order the chain runs them.
const (
	// ListFilesJob lists the regular files directly inside the context's
	// "dir" and sets "files".
	ListFilesJob = "chain.list_files"
	// PickLargestJob picks the largest of "files" and sets "largest". Its
	// args may set {"count": N}, 5 by default.
	PickLargestJob = "chain.pick_largest"
	// ChecksumJob computes the SHA-256 of each of "largest" and sets
	// "checksums".
	ChecksumJob = "chain.checksum"
	// WriteReportJob writes a report of "largest" and "checksums" into the
	// context's "report_dir" and sets "report_path".
	WriteReportJob = "chain.write_report"
)

const (
	// maxListedFiles bounds the files that ListFilesJob puts into the
	// context, which the executor caps at 256 KiB by default.
	maxListedFiles = 1000
	// maxListBytes bounds the size of that list, so it stays well inside
	// the 256 KiB context limit whatever the names are.
	maxListBytes = 128 << 10
	// defaultLargest is how many files PickLargestJob picks by default.
	defaultLargest = 5
)

// FileEntry is one listed file: its name inside the directory and its size
// in bytes.
type FileEntry struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// chainInput is the input of a chain step: the context, with the step's
// args on top.
type chainInput struct {
	Dir       string            `json:"dir"`
	ReportDir string            `json:"report_dir"`
	Files     []FileEntry       `json:"files"`
	Largest   []FileEntry       `json:"largest"`
	Checksums map[string]string `json:"checksums"`
	Count     int               `json:"count"`
}

func decodeChainInput(job *executor.Job) (chainInput, error) {
	var in chainInput
	if err := job.Decode(&in); err != nil {
		return in, executor.Permanent(err)
	}
	if in.Dir == "" {
		return in, executor.Permanent(fmt.Errorf("%s: the context has no \"dir\"; dispatch the chain with a context such as {\"dir\": DIR}", job.Name()))
	}
	return in, nil
}

// handleListFiles runs ListFilesJob.
func handleListFiles(ctx context.Context, job *executor.Job) error {
	in, err := decodeChainInput(job)
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(in.Dir)
	if err != nil {
		return executor.Permanent(fmt.Errorf("list directory %s: %w", in.Dir, unwrapPathError(err)))
	}
	var files []FileEntry
	var total int64
	listBytes, unnamed := 0, 0
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if !utf8.ValidString(e.Name()) {
			unnamed++ // a JSON string cannot carry this name exactly
			continue
		}
		listBytes += len(e.Name()) + 32
		info, err := e.Info()
		if err != nil {
			return executor.Permanent(fmt.Errorf("stat %s: %w", filepath.Join(in.Dir, e.Name()), unwrapPathError(err)))
		}
		files = append(files, FileEntry{Name: e.Name(), Size: info.Size()})
		total += info.Size()
	}
	if len(files) == 0 {
		return executor.Permanent(fmt.Errorf("directory %s has no regular files directly inside it; pick a directory that has some", in.Dir))
	}
	if len(files) > maxListedFiles || listBytes > maxListBytes {
		return executor.Permanent(fmt.Errorf("directory %s has %d files, more than fit in the chain's context (at most %d, and %d bytes of names); pick a smaller directory", in.Dir, len(files), maxListedFiles, maxListBytes))
	}
	if err := job.Set("files", files); err != nil {
		return err
	}
	result := map[string]any{"count": len(files), "bytes": total}
	if unnamed > 0 {
		result["skipped_not_utf8"] = unnamed
	}
	return job.SetResult(result)
}

// handlePickLargest runs PickLargestJob.
func handlePickLargest(ctx context.Context, job *executor.Job) error {
	in, err := decodeChainInput(job)
	if err != nil {
		return err
	}
	if in.Count == 0 {
		in.Count = defaultLargest
	}
	if in.Count < 1 {
		return executor.Permanent(fmt.Errorf("%s: invalid count %d: pick at least 1 file", job.Name(), in.Count))
	}
	largest := slices.Clone(in.Files)
	slices.SortFunc(largest, func(a, b FileEntry) int {
		if c := cmp.Compare(b.Size, a.Size); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	largest = largest[:min(in.Count, len(largest))]
	if err := job.Set("largest", largest); err != nil {
		return err
	}
	names := make([]string, len(largest))
	for i, f := range largest {
		names[i] = f.Name
	}
	return job.SetResult(map[string]any{"largest": names})
}

// handleChecksum runs ChecksumJob.
func handleChecksum(ctx context.Context, job *executor.Job) error {
	in, err := decodeChainInput(job)
	if err != nil {
		return err
	}
	if len(in.Largest) == 0 {
		return executor.Permanent(fmt.Errorf("%s: the context has no \"largest\"; run %s first", job.Name(), PickLargestJob))
	}
	sums := make(map[string]string, len(in.Largest))
	for _, f := range in.Largest {
		sum, err := sha256File(ctx, filepath.Join(in.Dir, f.Name))
		if err != nil {
			return executor.Permanent(err)
		}
		sums[f.Name] = sum
	}
	if err := job.Set("checksums", sums); err != nil {
		return err
	}
	return job.SetResult(sums)
}

// sha256File returns the hex SHA-256 digest of a file's content.
func sha256File(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fileError(path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, readerWithContext{ctx, f}); err != nil {
		return "", fileError(path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// readerWithContext stops a long read once ctx ends.
type readerWithContext struct {
	ctx context.Context
	r   io.Reader
}

func (r readerWithContext) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// handleWriteReport runs WriteReportJob.
func handleWriteReport(ctx context.Context, job *executor.Job) error {
	in, err := decodeChainInput(job)
	if err != nil {
		return err
	}
	if in.ReportDir == "" {
		return executor.Permanent(fmt.Errorf("%s: the context has no \"report_dir\"; set it to the directory for the report", job.Name()))
	}
	var report strings.Builder
	fmt.Fprintf(&report, "Largest files in %s\n", in.Dir)
	fmt.Fprintf(&report, "batch %s, written %s\n\n", job.BatchID(), time.Now().UTC().Format(time.RFC3339))
	for _, f := range in.Largest {
		fmt.Fprintf(&report, "%12d  %s  %s\n", f.Size, in.Checksums[f.Name], f.Name)
	}
	path := filepath.Join(in.ReportDir, "batchq-chain-report-"+job.BatchID()+".txt")
	if err := os.WriteFile(path, []byte(report.String()), 0o644); err != nil {
		return executor.Permanent(fmt.Errorf("write report %s: %w", path, unwrapPathError(err)))
	}
	if err := job.Set("report_path", path); err != nil {
		return err
	}
	return job.SetResult(map[string]any{"report_path": path, "bytes": report.Len()})
}
