package demo

import (
	"bytes"
	"strings"
	"testing"

	"github.com/batchq/batchq"
)

func TestSagaDriverCompensatesInReverse(t *testing.T) {
	client, _ := startServices(t)
	var out bytes.Buffer
	summary, err := Saga(testContext(t), client, SagaOptions{Out: &out})
	if err != nil {
		t.Fatalf("Saga: %v\noutput:\n%s", err, out.String())
	}

	text := out.String()
	last := -1
	for _, want := range []string{
		ReserveStockJob + " ", "completed",
		ChargeCardJob + " ", "completed",
		ShipOrderJob + " ", "failed     " + defaultShipFailure,
		"batch compensating",
		CancelShipmentJob + " ", `"cancelled":false`,
		RefundCardJob + " ", `"refunded":true`,
		ReleaseStockJob + " ", `"released":true`,
		"batch failed",
		"status failed",
	} {
		i := strings.Index(text[last+1:], want)
		if i < 0 {
			t.Fatalf("output has no %q after position %d:\n%s", want, last, text)
		}
		last += 1 + i
	}
	if strings.Contains(text, SendReceiptJob) {
		t.Errorf("the receipt step ran after the shipping step failed:\n%s", text)
	}

	info := summary.Batch
	if info.Status != batchq.StatusFailed {
		t.Errorf("status = %s, want failed", info.Status)
	}
	if info.Compensation.Total != 3 || info.Compensation.Completed != 3 || info.Compensation.Failed != 0 {
		t.Errorf("compensation counts = %+v, want 3 total, 3 completed, 0 failed", info.Compensation)
	}
	if info.Completed != 2 || info.Failed != 1 {
		t.Errorf("jobs: %d completed and %d failed, want 2 and 1", info.Completed, info.Failed)
	}
}

func TestSagaDriverShipsOrder(t *testing.T) {
	client, _ := startServices(t)
	var out bytes.Buffer
	summary, err := Saga(testContext(t), client, SagaOptions{Out: &out, Ship: true})
	if err != nil {
		t.Fatalf("Saga: %v\noutput:\n%s", err, out.String())
	}
	if summary.Batch.Status != batchq.StatusCompleted {
		t.Errorf("status = %s, want completed", summary.Batch.Status)
	}
	if summary.Batch.Compensation.Total != 0 {
		t.Errorf("%d compensations ran for an order that shipped", summary.Batch.Compensation.Total)
	}
	if !strings.Contains(out.String(), SendReceiptJob) || strings.Contains(out.String(), "undo") {
		t.Errorf("output should show the receipt step and no undo:\n%s", out.String())
	}
}
