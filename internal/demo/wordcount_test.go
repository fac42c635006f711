package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batchq/batchq"
)

func TestCountWordsRules(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  map[string]int
	}{
		{"empty", "", map[string]int{}},
		{"mixed case", "Hello hello HELLO hElLo", map[string]int{"hello": 4}},
		{"digits separate", "abc123def 42 x9", map[string]int{"abc": 1, "def": 1, "x": 1}},
		{"underscores separate", "snake_case_name _x_", map[string]int{"snake": 1, "case": 1, "name": 1, "x": 1}},
		{"punctuation separates", "it's a don't-stop (word).", map[string]int{"it": 1, "s": 1, "a": 1, "don": 1, "t": 1, "stop": 1, "word": 1}},
		{"non-ASCII bytes separate", "café naïve Straße", map[string]int{"caf": 1, "na": 1, "ve": 1, "stra": 1, "e": 1}},
		{"invalid UTF-8 separates", "ab\xffcd\x80ef", map[string]int{"ab": 1, "cd": 1, "ef": 1}},
		{"whitespace kinds", "one\ttwo\nthree\r\nfour", map[string]int{"one": 1, "two": 1, "three": 1, "four": 1}},
		{"word at end without newline", "last", map[string]int{"last": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CountWords(strings.NewReader(tt.input))
			if err != nil {
				t.Fatalf("CountWords: %v", err)
			}
			if !maps.Equal(got, tt.want) {
				t.Errorf("CountWords(%q) = %v, want %v", tt.input, got, tt.want)
			}
		})
	}
}

func TestCountWordsAcrossReadBuffer(t *testing.T) {
	// A word that straddles two reads must still count once.
	input := strings.Repeat(" ", readBufferBytes-3) + "straddle end"
	got, err := CountWords(strings.NewReader(input))
	if err != nil {
		t.Fatalf("CountWords: %v", err)
	}
	want := map[string]int{"straddle": 1, "end": 1}
	if !maps.Equal(got, want) {
		t.Errorf("CountWords = %v, want %v", got, want)
	}
}

func TestCountWordsPartsCoverWords(t *testing.T) {
	text := "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu Alpha beta"
	whole, err := CountWords(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	// Split into 3 parts, then split part 1 again into 2, as a part job
	// that is still too large would.
	var parts []countArgs
	for _, a := range []countArgs{{Part: 0, Parts: 3}, {Part: 2, Parts: 3}} {
		parts = append(parts, a)
	}
	for _, job := range splitCount(countArgs{Path: "f", Part: 1, Parts: 3}, 3, 2) {
		parts = append(parts, job.Args.(countArgs))
	}
	merged := map[string]int{}
	for _, p := range parts {
		counts, err := countWords(context.Background(), strings.NewReader(text), p.Part, p.Parts)
		if err != nil {
			t.Fatal(err)
		}
		for w, n := range counts {
			if _, dup := merged[w]; dup {
				t.Errorf("word %q counted by two parts", w)
			}
			merged[w] = n
		}
	}
	if !maps.Equal(merged, whole) {
		t.Errorf("merged parts = %v, want %v", merged, whole)
	}
}

func TestSplitCountParts(t *testing.T) {
	jobs := splitCount(countArgs{Path: "/f"}, 1000, 100)
	if len(jobs) != 20 {
		t.Fatalf("splitCount made %d jobs, want 20 (twice size/limit)", len(jobs))
	}
	for k, job := range jobs {
		args := job.Args.(countArgs)
		if job.Name != CountPartJob {
			t.Errorf("job %d name = %s, want %s", k, job.Name, CountPartJob)
		}
		if args.Path != "/f" || args.Part != k || args.Parts != 20 {
			t.Errorf("job %d args = %+v, want part %d of 20 of /f", k, args, k)
		}
	}
	if n := len(splitCount(countArgs{Path: "/f"}, 101, 100)); n != 3 {
		t.Errorf("splitCount of 101 bytes with limit 100 made %d jobs, want 3", n)
	}
}

func TestCountFileMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing.txt")
	_, err := countFile(context.Background(), path, 0, 0)
	if err == nil {
		t.Fatal("countFile of a missing file returned no error")
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name the file %s", err, path)
	}
	if strings.Count(err.Error(), path) != 1 {
		t.Errorf("error %q names the file more than once", err)
	}
}

func TestCountFileDirectory(t *testing.T) {
	dir := t.TempDir()
	_, err := countFile(context.Background(), dir, 0, 0)
	if err == nil {
		t.Fatal("countFile of a directory returned no error")
	}
	if !strings.Contains(err.Error(), dir) {
		t.Errorf("error %q does not name the directory %s", err, dir)
	}
}

func TestTopWordsTies(t *testing.T) {
	totals := map[string]int64{"b": 3, "a": 3, "c": 5, "d": 1, "e": 3}
	got := topWords(totals, 4)
	want := []WordFrequency{{"c", 5}, {"a", 3}, {"b", 3}, {"e", 3}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("topWords = %v, want %v", got, want)
	}
	if n := len(topWords(totals, 100)); n != 5 {
		t.Errorf("topWords with n above the word count returned %d words, want 5", n)
	}
}

func TestListFilesSkipsLinks(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.txt"), "a")
	writeFile(t, filepath.Join(dir, "sub", "b.txt"), "b")
	if err := os.Symlink(filepath.Join(dir, "a.txt"), filepath.Join(dir, "link.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "sub"), filepath.Join(dir, "linkdir")); err != nil {
		t.Fatal(err)
	}
	files, err := ListFiles(dir)
	if err != nil {
		t.Fatalf("ListFiles: %v", err)
	}
	want := []string{filepath.Join(dir, "a.txt"), filepath.Join(dir, "sub", "b.txt")}
	if fmt.Sprint(files) != fmt.Sprint(want) {
		t.Errorf("ListFiles = %v, want %v", files, want)
	}
}

func TestListFilesInvalidDirectory(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file.txt")
	writeFile(t, file, "x")
	for _, tt := range []struct{ name, dir, want string }{
		{"missing", filepath.Join(dir, "nope"), "no such file or directory"},
		{"file", file, "is not a directory"},
		{"empty", dir + "/empty", "no regular files"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "empty" {
				if err := os.Mkdir(tt.dir, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			_, err := ListFiles(tt.dir)
			if err == nil {
				t.Fatalf("ListFiles(%s) returned no error", tt.dir)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), tt.dir) {
				t.Errorf("ListFiles(%s) error %q, want it to name the directory and contain %q", tt.dir, err, tt.want)
			}
		})
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestWordCountDriver(t *testing.T) {
	client, _ := startServices(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.txt"), "Hello hello world")
	writeFile(t, filepath.Join(dir, "sub", "b.go"), "foo_bar 42x café\nworld")
	writeFile(t, filepath.Join(dir, "empty"), "")
	if err := os.Symlink(filepath.Join(dir, "a.txt"), filepath.Join(dir, "link.txt")); err != nil {
		t.Fatal(err)
	}

	var progress bytes.Buffer
	summary, err := WordCount(testContext(t), client, WordCountOptions{Dir: dir, Top: 3, Progress: &progress})
	if err != nil {
		t.Fatalf("WordCount: %v", err)
	}
	if summary.Files != 3 {
		t.Errorf("files = %d, want 3 (the link is skipped)", summary.Files)
	}
	if summary.Jobs != 3 {
		t.Errorf("jobs = %d, want 3", summary.Jobs)
	}
	if summary.Words != 8 {
		t.Errorf("words = %d, want 8", summary.Words)
	}
	want := []WordFrequency{{"hello", 2}, {"world", 2}, {"bar", 1}}
	if fmt.Sprint(summary.Top) != fmt.Sprint(want) {
		t.Errorf("top = %v, want %v", summary.Top, want)
	}
	if !strings.Contains(progress.String(), "100% 3/3 jobs") {
		t.Errorf("progress output %q does not end at 100%%", progress.String())
	}

	var out bytes.Buffer
	if err := summary.WriteJSON(&out); err != nil {
		t.Fatal(err)
	}
	var decoded map[string]json.RawMessage
	if err := json.Unmarshal(out.Bytes(), &decoded); err != nil {
		t.Fatalf("WriteJSON output %q is not one JSON object: %v", out.String(), err)
	}
	for _, key := range []string{"files", "words", "top", "elapsed_ms"} {
		if _, ok := decoded[key]; !ok {
			t.Errorf("JSON output %s has no key %q", out.String(), key)
		}
	}
	if len(decoded) != 4 {
		t.Errorf("JSON output %s has %d keys, want 4", out.String(), len(decoded))
	}
	if !strings.HasPrefix(out.String(), `{"files":3,"words":8,"top":[{"word":"hello","count":2},{"word":"world","count":2},{"word":"bar","count":1}]`) {
		t.Errorf("JSON output = %s", out.String())
	}
}

// distinctWords returns n distinct words of lower-case letters.
func distinctWords(n int) []string {
	words := make([]string, n)
	for i := range n {
		var w []byte
		for v := i + 26; v > 0; v /= 26 {
			w = append(w, byte('a'+v%26))
		}
		words[i] = string(w)
	}
	return words
}

func TestWordCountSplitsLargeResult(t *testing.T) {
	client, _ := startServices(t)
	dir := t.TempDir()
	// 40,000 distinct words encode to about 400 KiB of counts, above the
	// limit of one result, so the file is counted in parts.
	big := strings.Join(distinctWords(40000), " ") + " again again"
	writeFile(t, filepath.Join(dir, "big.txt"), big)
	writeFile(t, filepath.Join(dir, "small.txt"), "again")

	summary, err := WordCount(testContext(t), client, WordCountOptions{Dir: dir, Top: 1})
	if err != nil {
		t.Fatalf("WordCount: %v", err)
	}
	if summary.Files != 2 {
		t.Errorf("files = %d, want 2", summary.Files)
	}
	if summary.Jobs <= 2 {
		t.Errorf("jobs = %d, want more than 2 because the large file is split", summary.Jobs)
	}
	if summary.Words != 40003 {
		t.Errorf("words = %d, want 40003", summary.Words)
	}
	if want := []WordFrequency{{"again", 3}}; fmt.Sprint(summary.Top) != fmt.Sprint(want) {
		t.Errorf("top = %v, want %v", summary.Top, want)
	}
}

func TestCountJobMissingFileFailsOnce(t *testing.T) {
	client, _ := startServices(t)
	ctx := testContext(t)
	path := filepath.Join(t.TempDir(), "gone.txt")
	id, err := client.NewBatch(batchq.Job{Name: CountJob, Args: countArgs{Path: path}}).Dispatch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	info, err := client.Wait(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if info.Status != batchq.StatusFailed {
		t.Fatalf("batch status = %s, want failed", info.Status)
	}
	job, err := client.JobResult(ctx, id, "0")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(job.Error, path) {
		t.Errorf("job error %q does not name the file %s", job.Error, path)
	}
	if job.Attempts != 1 {
		t.Errorf("job ran %d attempts, want 1 because a missing file is a permanent failure", job.Attempts)
	}
}

func TestWordCountInvalidTop(t *testing.T) {
	for _, top := range []int{-1, MaxTop + 1} {
		_, err := WordCount(context.Background(), nil, WordCountOptions{Dir: t.TempDir(), Top: top})
		if err == nil || !strings.Contains(err.Error(), fmt.Sprint(top)) {
			t.Errorf("WordCount with top %d: error %v, want one naming the value", top, err)
		}
	}
}
