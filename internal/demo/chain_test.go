package demo

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batchq/batchq"
)

func TestChainDriver(t *testing.T) {
	client, _ := startServices(t)
	dir := t.TempDir()
	sizes := map[string]int{"a.txt": 10, "b.txt": 700, "c.txt": 300, "d.txt": 300, "e.txt": 50, "f.txt": 5000, "g.txt": 1}
	for name, size := range sizes {
		writeFile(t, filepath.Join(dir, name), strings.Repeat(name[:1], size))
	}
	writeFile(t, filepath.Join(dir, "sub", "huge.txt"), strings.Repeat("x", 100000))
	reportDir := t.TempDir()

	var out bytes.Buffer
	summary, err := Chain(testContext(t), client, ChainOptions{Dir: dir, ReportDir: reportDir, Out: &out})
	if err != nil {
		t.Fatalf("Chain: %v\noutput:\n%s", err, out.String())
	}
	if summary.Batch.Status != batchq.StatusCompleted {
		t.Errorf("status = %s, want completed", summary.Batch.Status)
	}

	text := out.String()
	last := -1
	for _, want := range []string{
		ListFilesJob + " ", "(added files)",
		PickLargestJob + " ", "(added largest)",
		ChecksumJob + " ", "(added checksums)",
		WriteReportJob + " ", "(added report_path)",
		"batch completed", "final context:",
	} {
		i := strings.Index(text, want)
		if i < 0 {
			t.Fatalf("output has no %q:\n%s", want, text)
		}
		if i < last {
			t.Errorf("output shows %q out of order:\n%s", want, text)
		}
		last = i
	}

	var final struct {
		Largest    []FileEntry       `json:"largest"`
		Checksums  map[string]string `json:"checksums"`
		Files      []FileEntry       `json:"files"`
		ReportPath string            `json:"report_path"`
	}
	if err := json.Unmarshal(summary.Context, &final); err != nil {
		t.Fatalf("decode final context %s: %v", summary.Context, err)
	}
	if len(final.Files) != len(sizes) {
		t.Errorf("context lists %d files, want %d (the subdirectory is not listed)", len(final.Files), len(sizes))
	}
	wantLargest := []FileEntry{{"f.txt", 5000}, {"b.txt", 700}, {"c.txt", 300}, {"d.txt", 300}, {"e.txt", 50}}
	if fmt.Sprint(final.Largest) != fmt.Sprint(wantLargest) {
		t.Errorf("largest = %v, want %v", final.Largest, wantLargest)
	}
	for _, f := range wantLargest {
		sum := sha256.Sum256([]byte(strings.Repeat(f.Name[:1], int(f.Size))))
		if got, want := final.Checksums[f.Name], hex.EncodeToString(sum[:]); got != want {
			t.Errorf("checksum of %s = %s, want %s", f.Name, got, want)
		}
	}
	if filepath.Dir(final.ReportPath) != reportDir {
		t.Errorf("report path %s is not in %s", final.ReportPath, reportDir)
	}
	report, err := os.ReadFile(final.ReportPath)
	if err != nil {
		t.Fatalf("read report: %v", err)
	}
	for _, f := range wantLargest {
		if !strings.Contains(string(report), final.Checksums[f.Name]+"  "+f.Name) {
			t.Errorf("report does not list %s with its checksum:\n%s", f.Name, report)
		}
	}
}

func TestChainDriverEmptyDirectoryFails(t *testing.T) {
	client, _ := startServices(t)
	dir := t.TempDir()
	var out bytes.Buffer
	summary, err := Chain(testContext(t), client, ChainOptions{Dir: dir, ReportDir: t.TempDir(), Out: &out})
	if err == nil {
		t.Fatalf("Chain over an empty directory returned no error:\n%s", out.String())
	}
	if summary == nil || summary.Batch.Status != batchq.StatusFailed {
		t.Fatalf("Chain summary = %+v, want a failed batch", summary)
	}
	if !strings.Contains(err.Error(), dir) || !strings.Contains(out.String(), "no regular files") {
		t.Errorf("error %q and output %q should name %s and say it has no regular files", err, out.String(), dir)
	}
}

func TestChainDriverInvalidDirectory(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	_, err := Chain(testContext(t), nil, ChainOptions{Dir: missing, ReportDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("Chain with a missing directory: error %v, want one naming %s", err, missing)
	}
}
