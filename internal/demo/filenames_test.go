package demo

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batchq/batchq"
)

// TestWordCountLatin1FileName counts a directory that holds a file whose
// name is Latin-1, not UTF-8, as older archives often do: the file is
// counted like any other.
func TestWordCountLatin1FileName(t *testing.T) {
	client, _ := startServices(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "plain.txt"), "hello world")
	writeFile(t, filepath.Join(dir, "caf\xe9.txt"), "hello again")

	summary, err := WordCount(testContext(t), client, WordCountOptions{Dir: dir, Top: 1})
	if err != nil {
		t.Fatalf("WordCount: %v", err)
	}
	if summary.Files != 2 || summary.Words != 4 {
		t.Errorf("counted %d words in %d files, want 4 in 2", summary.Words, summary.Files)
	}
}

// TestChainLatin1FileName runs the chain demo over a directory whose
// largest file has a Latin-1 name, which a JSON context cannot carry: the
// chain leaves it out and completes.
func TestChainLatin1FileName(t *testing.T) {
	client, _ := startServices(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "small.txt"), "x")
	writeFile(t, filepath.Join(dir, "caf\xe9.txt"), strings.Repeat("y", 1000))

	var out bytes.Buffer
	summary, err := Chain(testContext(t), client, ChainOptions{Dir: dir, ReportDir: t.TempDir(), Out: &out})
	if err != nil {
		t.Fatalf("Chain: %v\noutput:\n%s", err, out.String())
	}
	if summary.Batch.Status != batchq.StatusCompleted {
		t.Errorf("status = %s, want completed", summary.Batch.Status)
	}
}
