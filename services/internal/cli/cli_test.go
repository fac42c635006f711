package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchq/batchq"
	"github.com/batchq/batchq/internal/demo"
	"github.com/batchq/batchq/internal/natstest"
	"github.com/batchq/batchq/internal/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
)

// lockedBuffer is a bytes.Buffer that several goroutines may write.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testEnv returns an Env with captured output and no environment
// variables. Commands that it runs stop when ctx ends.
func testEnv(ctx context.Context) (Env, *lockedBuffer, *lockedBuffer) {
	stdout, stderr := &lockedBuffer{}, &lockedBuffer{}
	return Env{Stdout: stdout, Stderr: stderr, Getenv: func(string) string { return "" }, Context: ctx}, stdout, stderr
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file.txt")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"no command", nil, []string{"Usage: batchq COMMAND"}},
		{"unknown command", []string{"frobnicate"}, []string{`unknown command "frobnicate"`, "Usage: batchq COMMAND"}},
		{"no demo", []string{"demo"}, []string{"wordcount|chain|saga"}},
		{"unknown demo", []string{"demo", "chess"}, []string{`unknown demo "chess"`}},
		{"top zero", []string{"demo", "wordcount", "--dir", dir, "--top", "0"}, []string{"invalid --top 0", "1 to 1000"}},
		{"top too large", []string{"demo", "wordcount", "--dir", dir, "--top", "1001"}, []string{"invalid --top 1001"}},
		{"top not a number", []string{"demo", "wordcount", "--top", "ten"}, []string{`invalid value "ten" for flag -top`}},
		{"missing dir", []string{"demo", "wordcount", "--dir", missing}, []string{"invalid --dir", missing, "pass an existing directory"}},
		{"dir is a file", []string{"demo", "wordcount", "--dir", file}, []string{"invalid --dir", file, "not a directory"}},
		{"chain missing dir", []string{"demo", "chain", "--dir", missing}, []string{"invalid --dir", missing}},
		{"chain missing report dir", []string{"demo", "chain", "--dir", dir, "--report-dir", missing}, []string{"invalid --report-dir", missing}},
		{"demo zero concurrency", []string{"demo", "saga", "--concurrency", "0"}, []string{"invalid --concurrency 0"}},
		{"wordcount argument", []string{"demo", "wordcount", dir}, []string{"unexpected argument", "--dir"}},
		{"dev invalid sync", []string{"dev", "--sync", "soon"}, []string{`invalid sync policy "soon"`, "always"}},
		{"dev invalid port", []string{"dev", "--port", "0"}, []string{"invalid --port 0", "-1 for a free port"}},
		{"dev invalid queue", []string{"dev", "--queue", "a.b"}, []string{"--queue", `invalid queue name "a.b"`}},
		{"executor duplicate queue", []string{"executor", "--queue", "q", "--queue", "q"}, []string{`--queue "q" is given twice`}},
		{"executor zero concurrency", []string{"executor", "--concurrency", "0"}, []string{"invalid --concurrency 0"}},
		{"compensator negative drain", []string{"compensator", "--drain-timeout", "-1s"}, []string{"invalid --drain-timeout -1s"}},
		{"coordinator empty bucket", []string{"coordinator", "--kv-bucket", ""}, []string{"--kv-bucket is empty"}},
		{"coordinator empty schema", []string{"coordinator", "--database-url", "postgres://127.0.0.1/x", "--database-schema", ""}, []string{"--database-schema is empty"}},
		{"prune without cutoff", []string{"prune"}, []string{"missing --older-than"}},
		{"prune negative cutoff", []string{"prune", "--older-than", "-5m"}, []string{"invalid --older-than -5m0s"}},
		{"coordinator negative retention", []string{"coordinator", "--retention", "-1h"}, []string{"invalid --retention -1h0m0s"}},
		{"coordinator invalid log level", []string{"coordinator", "--log-level", "loud"}, []string{"-log-level"}},
		{"status without id", []string{"status"}, []string{"missing BATCH_ID"}},
		{"status two ids", []string{"status", "a", "b"}, []string{"too many arguments"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, _, stderr := testEnv(context.Background())
			if code := Main(env, tt.args); code != ExitUsage {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, ExitUsage, stderr)
			}
			for _, want := range tt.want {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr does not contain %q:\n%s", want, stderr)
				}
			}
		})
	}
}

func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{
		{"-h"}, {"dev", "-h"}, {"demo", "-h"}, {"demo", "wordcount", "-h"}, {"demo", "chain", "-h"},
		{"demo", "saga", "-h"}, {"coordinator", "-h"}, {"executor", "-h"}, {"compensator", "-h"}, {"status", "-h"}, {"prune", "-h"},
	} {
		env, stdout, stderr := testEnv(context.Background())
		if code := Main(env, args); code != ExitOK {
			t.Errorf("batchq %s: exit code %d, want 0", strings.Join(args, " "), code)
		}
		if out := stdout.String() + stderr.String(); !strings.Contains(out, "Usage:") {
			t.Errorf("batchq %s printed no usage:\n%s", strings.Join(args, " "), out)
		}
	}
}

func TestNATSURLFromEnvironment(t *testing.T) {
	env, _, stderr := testEnv(context.Background())
	env.Getenv = func(key string) string {
		if key == "BATCHQ_NATS_URL" {
			return "nats://127.0.0.1:1"
		}
		return ""
	}
	code := Status(env, "batchq status", []string{"some-batch"})
	if code != ExitFailure {
		t.Errorf("exit code %d, want %d", code, ExitFailure)
	}
	if !strings.Contains(stderr.String(), "nats://127.0.0.1:1") || !strings.Contains(stderr.String(), "--nats-url") {
		t.Errorf("stderr should name the URL from BATCHQ_NATS_URL and the flag:\n%s", stderr)
	}
}

func TestDemoSagaCommand(t *testing.T) {
	env, stdout, stderr := testEnv(context.Background())
	if code := Main(env, []string{"demo", "saga"}); code != ExitOK {
		t.Fatalf("exit code %d, want 0; stderr:\n%s", code, stderr)
	}
	if stderr.String() != "" {
		t.Errorf("the demo wrote to stderr:\n%s", stderr)
	}
	text := stdout.String()
	order := []string{demo.ShipOrderJob, demo.CancelShipmentJob, demo.RefundCardJob, demo.ReleaseStockJob, "status failed"}
	last := -1
	for _, want := range order {
		i := strings.Index(text, want)
		if i <= last {
			t.Fatalf("output shows %q missing or out of order:\n%s", want, text)
		}
		last = i
	}
}

func TestDemoWordCountJSON(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.txt"), []byte("One two two THREE three three"), 0o644); err != nil {
		t.Fatal(err)
	}
	env, stdout, stderr := testEnv(context.Background())
	if code := Main(env, []string{"demo", "wordcount", "--dir", dir, "--top", "2", "--json"}); code != ExitOK {
		t.Fatalf("exit code %d, want 0; stderr:\n%s", code, stderr)
	}
	out := stdout.String()
	if strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "}\n") {
		t.Fatalf("stdout should be one JSON object on one line:\n%s", out)
	}
	var got struct {
		Files     int                  `json:"files"`
		Words     int                  `json:"words"`
		Top       []demo.WordFrequency `json:"top"`
		ElapsedMS *int64               `json:"elapsed_ms"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("decode %s: %v", out, err)
	}
	if got.Files != 1 || got.Words != 6 || fmt.Sprint(got.Top) != "[{three 3} {two 2}]" || got.ElapsedMS == nil {
		t.Errorf("output = %s, want 1 file, 6 words, top three and two, and elapsed_ms", out)
	}
}

func TestDemoChainCommand(t *testing.T) {
	dir, reportDir := t.TempDir(), t.TempDir()
	for i := range 3 {
		name := filepath.Join(dir, fmt.Sprintf("f%d.txt", i))
		if err := os.WriteFile(name, bytes.Repeat([]byte("x"), 10*(i+1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env, stdout, stderr := testEnv(context.Background())
	if code := Main(env, []string{"demo", "chain", "--dir", dir, "--report-dir", reportDir}); code != ExitOK {
		t.Fatalf("exit code %d, want 0; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(stdout.String(), `"report_path": "`+reportDir) {
		t.Errorf("final context does not name a report in %s:\n%s", reportDir, stdout)
	}
	reports, _ := filepath.Glob(filepath.Join(reportDir, "batchq-chain-report-*.txt"))
	if len(reports) != 1 {
		t.Errorf("report directory holds %d reports, want 1", len(reports))
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// runCommand runs a long-running command until the test stops it with
// the returned function, which returns the exit code.
func runCommand(t *testing.T, command func(Env, string, []string) int, args []string) (stop func() int, stderr *lockedBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	env, _, stderr := testEnv(ctx)
	done := make(chan int, 1)
	go func() { done <- command(env, "test", args) }()
	var once sync.Once
	code := -1
	stop = func() int {
		once.Do(func() {
			cancel()
			select {
			case code = <-done:
			case <-time.After(30 * time.Second):
				t.Errorf("command %v did not stop within 30s; stderr:\n%s", args, stderr)
			}
		})
		return code
	}
	t.Cleanup(func() { stop() })
	return stop, stderr
}

// connectWhenReady connects to url, retrying until a server listens there.
func connectWhenReady(t *testing.T, url string) *nats.Conn {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		nc, err := nats.Connect(url)
		if err == nil {
			t.Cleanup(nc.Close)
			return nc
		}
		if time.Now().After(deadline) {
			t.Fatalf("no NATS server at %s within 20s: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func newClient(t *testing.T, nc *nats.Conn) *batchq.Client {
	t.Helper()
	client, err := batchq.NewClient(nc, batchq.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return client
}

func TestDevServesOtherProcesses(t *testing.T) {
	port := freePort(t)
	dataDir := t.TempDir()
	stop, stderr := runCommand(t, Dev, []string{"--port", strconv.Itoa(port), "--data", dataDir, "--sync", "always", "--queue", "default", "--queue", "other"})
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	client := newClient(t, connectWhenReady(t, url))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	summary, err := demo.Saga(ctx, client, demo.SagaOptions{})
	if err != nil {
		t.Fatalf("saga against dev: %v\nstderr:\n%s", err, stderr)
	}

	env, stdout, statusErr := testEnv(ctx)
	if code := Status(env, "batchq status", []string{summary.BatchID, "--nats-url", url}); code != ExitOK {
		t.Fatalf("status: exit code %d; stderr:\n%s", code, statusErr)
	}
	var info batchq.BatchInfo
	if err := json.Unmarshal([]byte(stdout.String()), &info); err != nil {
		t.Fatalf("status printed %q: %v", stdout, err)
	}
	if info.ID != summary.BatchID || info.Status != batchq.StatusFailed || info.Compensation.Completed != 3 {
		t.Errorf("status = %+v, want the failed saga with 3 compensations", info)
	}

	env, _, statusErr = testEnv(ctx)
	if code := Status(env, "batchq status", []string{"--nats-url", url, "01a00000-0000-7000-8000-000000000000"}); code != ExitFailure {
		t.Errorf("status of an unknown batch: exit code %d, want %d", code, ExitFailure)
	}
	if !strings.Contains(statusErr.String(), "not found") {
		t.Errorf("status of an unknown batch printed %q, want \"not found\"", statusErr)
	}

	if code := stop(); code != ExitOK {
		t.Errorf("dev exit code %d, want 0; stderr:\n%s", code, stderr)
	}
	log := stderr.String()
	for _, want := range []string{"url=" + url, "data_dir=" + dataDir, "sync=always", "queue=other", "stopped"} {
		if !strings.Contains(log, want) {
			t.Errorf("dev log does not contain %q:\n%s", want, log)
		}
	}
	if _, err := os.Stat(filepath.Join(dataDir, "jetstream")); err != nil {
		t.Errorf("data directory has no JetStream files: %v", err)
	}
}

func TestDevPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	env, _, stderr := testEnv(context.Background())
	code := Dev(env, "batchq dev", []string{"--port", strconv.Itoa(port), "--data", t.TempDir()})
	if code != ExitFailure {
		t.Errorf("exit code %d, want %d", code, ExitFailure)
	}
	if !strings.Contains(stderr.String(), strconv.Itoa(port)) || !strings.Contains(stderr.String(), "another port") {
		t.Errorf("stderr should name port %d and suggest another port:\n%s", port, stderr)
	}
}

func TestServicesAgainstExternalNATS(t *testing.T) {
	t.Run("kv", func(t *testing.T) {
		testServices(t, []string{"--kv-bucket", "state"})
	})
	t.Run("postgres", func(t *testing.T) {
		url := pgtest.URL(t)
		schema := fmt.Sprintf("cli_test_%d", os.Getpid())
		t.Cleanup(func() { dropSchema(t, url, schema) })
		testServices(t, []string{"--database-url", url, "--database-schema", schema})
	})
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// scrape returns the metrics page at addr.
func scrape(t *testing.T, addr string) string {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// dropSchema removes a Postgres schema that a test created.
func dropSchema(t *testing.T, url, schema string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Errorf("connect to drop schema %s: %v", schema, err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
		t.Errorf("drop schema %s: %v", schema, err)
	}
}

// testServices runs the coordinator with storeArgs, an executor and a
// compensator as separate commands against one NATS server, runs two demos
// through them, and prunes the finished batches.
func testServices(t *testing.T, storeArgs []string) {
	srv := natstest.Start(t)
	url := srv.ClientURL()
	args := []string{"--nats-url", url, "--log-level", "warn"}
	client := newClient(t, natstest.Connect(t, srv))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// The workers start after the coordinator has set up the streams, as
	// in the all-in-one process, because nats-server v2.15.3 races when a
	// stream update and a consumer creation on that stream run at once.
	coordinatorMetrics, executorMetrics := freeAddr(t), freeAddr(t)
	stopCoordinator, coordinatorErr := runCommand(t, Coordinator, append(append([]string{"--metrics-addr", coordinatorMetrics}, storeArgs...), args...))
	if err := waitForCoordinator(ctx, client); err != nil {
		t.Fatalf("%v; stderr:\n%s", err, coordinatorErr)
	}
	stopExecutor, executorErr := runCommand(t, Executor, append([]string{"--concurrency", "2", "--metrics-addr", executorMetrics}, args...))
	stopCompensator, compensatorErr := runCommand(t, Compensator, args)

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.txt"), []byte("alpha beta alpha"), 0o644); err != nil {
		t.Fatal(err)
	}
	count, err := demo.WordCount(ctx, client, demo.WordCountOptions{Dir: dir})
	if err != nil {
		t.Fatalf("word count: %v", err)
	}
	if count.Words != 3 {
		t.Errorf("words = %d, want 3", count.Words)
	}
	saga, err := demo.Saga(ctx, client, demo.SagaOptions{})
	if err != nil {
		t.Fatalf("saga: %v", err)
	}
	if saga.Batch.Compensation.Completed != 3 {
		t.Errorf("compensations completed = %d, want 3", saga.Batch.Compensation.Completed)
	}

	scrapes := map[string][]string{
		coordinatorMetrics: {`batchq_coordinator_events_total{type="batchq.job.completed",verdict="applied"}`, `batchq_coordinator_batches_settled_total{status="failed"} 1`},
		executorMetrics:    {`batchq_executor_attempts_total{outcome="completed",queue="default",work="jobs"}`, "batchq_executor_attempt_seconds_bucket"},
	}
	for addr, wants := range scrapes {
		// The coordinator counts a message once the stream has stored it,
		// which may be just after a client saw it.
		deadline := time.Now().Add(10 * time.Second)
		for _, want := range wants {
			body := scrape(t, addr)
			for !strings.Contains(body, want) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
				body = scrape(t, addr)
			}
			if !strings.Contains(body, want) {
				t.Errorf("metrics at %s lack %s", addr, want)
			}
		}
	}

	for name, stop := range map[string]func() int{"coordinator": stopCoordinator, "executor": stopExecutor, "compensator": stopCompensator} {
		if code := stop(); code != ExitOK {
			t.Errorf("%s exit code %d, want 0", name, code)
		}
	}
	for name, stderr := range map[string]*lockedBuffer{"coordinator": coordinatorErr, "executor": executorErr, "compensator": compensatorErr} {
		if strings.Contains(stderr.String(), "level=ERROR") {
			t.Errorf("%s logged an error:\n%s", name, stderr)
		}
	}

	env, stdout, stderr := testEnv(context.Background())
	time.Sleep(10 * time.Millisecond)
	pruneArgs := append(append([]string{"--older-than", "1ms"}, storeArgs...), args...)
	if code := Prune(env, "batchq prune", pruneArgs); code != ExitOK {
		t.Fatalf("prune exit code %d; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(stdout.String(), "removed 2 batches") {
		t.Errorf("prune printed %q, want the two finished batches removed", stdout)
	}
}

func TestCoordinatorUnreachableNATS(t *testing.T) {
	env, _, stderr := testEnv(context.Background())
	code := Coordinator(env, "batchq coordinator", []string{"--nats-url", "nats://127.0.0.1:1"})
	if code != ExitFailure {
		t.Errorf("exit code %d, want %d", code, ExitFailure)
	}
	if !strings.Contains(stderr.String(), "nats://127.0.0.1:1") {
		t.Errorf("stderr does not name the URL:\n%s", stderr)
	}
}
