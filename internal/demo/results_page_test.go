package demo

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/batchq/batchq"
	"github.com/batchq/batchq/executor"
)

// TestEachResultLargeResults checks that the reduce step's way of reading
// results works when 500 results, the most one page of the results API
// holds, are larger together than the server's max payload of 1 MiB. The
// word count of the Go source tree has such pages, because its results
// average about 2 KiB.
func TestEachResultLargeResults(t *testing.T) {
	client, _ := startServices(t)
	exec, err := executor.New(executor.Config{Conn: client.Conn(), Queue: "large", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	// Each result is 4 KiB, so 500 of them make a page of about 2 MiB.
	result := strings.Repeat("x", 4<<10)
	exec.Handle("large_result", func(ctx context.Context, job *executor.Job) error {
		return job.SetResult(result)
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- exec.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	jobs := make([]batchq.Job, 600)
	for i := range jobs {
		jobs[i] = batchq.Job{Name: "large_result"}
	}
	id, err := client.NewBatch(jobs...).QueueConfig("large").Dispatch(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if info, err := client.Wait(testContext(t), id); err != nil || info.Status != batchq.StatusCompleted {
		t.Fatalf("Wait = %+v, %v; want a completed batch", info, err)
	}

	readCtx, cancelRead := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancelRead()
	read := 0
	err = client.EachResult(readCtx, id, func(batchq.JobInfo) error {
		read++
		return nil
	})
	if err != nil {
		t.Fatalf("EachResult read %d of 600 results, then failed: %v (max payload %d bytes)", read, err, client.Conn().MaxPayload())
	}
	if read != 600 {
		t.Errorf("EachResult read %d results, want 600", read)
	}
}
