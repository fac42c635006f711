package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/batchq/batchq"
	"github.com/batchq/batchq/executor"
)

// Job names of the saga demo: an order whose steps each have an undo.
const (
	// ReserveStockJob reserves stock and sets "reservation_id".
	ReserveStockJob = "saga.reserve_stock"
	// ReleaseStockJob undoes ReserveStockJob.
	ReleaseStockJob = "saga.release_stock"
	// ChargeCardJob charges the order's amount and sets "charge_id".
	ChargeCardJob = "saga.charge_card"
	// RefundCardJob undoes ChargeCardJob.
	RefundCardJob = "saga.refund_card"
	// ShipOrderJob books a shipment and sets "shipment_id". Its args may
	// set "fail_reason", which makes it fail for good with that message.
	ShipOrderJob = "saga.ship_order"
	// CancelShipmentJob undoes ShipOrderJob.
	CancelShipmentJob = "saga.cancel_shipment"
	// SendReceiptJob sends the receipt. It has no compensation.
	SendReceiptJob = "saga.send_receipt"
)

// order is the input of a saga step: the context, with the step's args on
// top.
type order struct {
	OrderID       string `json:"order_id"`
	SKU           string `json:"sku"`
	Quantity      int    `json:"quantity"`
	AmountCents   int64  `json:"amount_cents"`
	Currency      string `json:"currency"`
	Email         string `json:"email"`
	ReservationID string `json:"reservation_id"`
	ChargeID      string `json:"charge_id"`
	ShipmentID    string `json:"shipment_id"`
	FailReason    string `json:"fail_reason"`
}

func decodeOrder(job *executor.Job) (order, error) {
	var o order
	if err := job.Decode(&o); err != nil {
		return o, executor.Permanent(err)
	}
	if o.OrderID == "" {
		return o, executor.Permanent(fmt.Errorf("%s: no \"order_id\" in the args or the context", job.Name()))
	}
	return o, nil
}

func handleReserveStock(ctx context.Context, job *executor.Job) error {
	o, err := decodeOrder(job)
	if err != nil {
		return err
	}
	if o.Quantity < 1 {
		return executor.Permanent(fmt.Errorf("%s: invalid quantity %d for order %s: reserve at least 1", job.Name(), o.Quantity, o.OrderID))
	}
	id := "res-" + o.OrderID
	if err := job.Set("reservation_id", id); err != nil {
		return err
	}
	return job.SetResult(map[string]any{"reservation_id": id, "sku": o.SKU, "quantity": o.Quantity})
}

func handleChargeCard(ctx context.Context, job *executor.Job) error {
	o, err := decodeOrder(job)
	if err != nil {
		return err
	}
	if o.ReservationID == "" {
		return executor.Permanent(fmt.Errorf("%s: order %s has no \"reservation_id\"; reserve stock first", job.Name(), o.OrderID))
	}
	id := "ch-" + o.OrderID
	if err := job.Set("charge_id", id); err != nil {
		return err
	}
	return job.SetResult(map[string]any{"charge_id": id, "amount_cents": o.AmountCents, "currency": o.Currency})
}

func handleShipOrder(ctx context.Context, job *executor.Job) error {
	o, err := decodeOrder(job)
	if err != nil {
		return err
	}
	if o.FailReason != "" {
		return executor.Permanent(errors.New(o.FailReason))
	}
	id := "sh-" + o.OrderID
	if err := job.Set("shipment_id", id); err != nil {
		return err
	}
	return job.SetResult(map[string]any{"shipment_id": id})
}

func handleSendReceipt(ctx context.Context, job *executor.Job) error {
	o, err := decodeOrder(job)
	if err != nil {
		return err
	}
	return job.SetResult(map[string]any{"sent_to": o.Email, "charge_id": o.ChargeID, "shipment_id": o.ShipmentID})
}

// undoneStep decodes the result of the step that a compensation undoes
// into v. A step that failed before it took effect has no result, and v
// stays unchanged.
func undoneStep(job *executor.Job, v any) error {
	info := job.Compensation()
	if info == nil {
		return executor.Permanent(fmt.Errorf("%s runs as a compensation, not as a job", job.Name()))
	}
	if len(info.Result) == 0 {
		return nil
	}
	if err := json.Unmarshal(info.Result, v); err != nil {
		return executor.Permanent(fmt.Errorf("%s: decode the result of %s: %w", job.Name(), info.JobName, err))
	}
	return nil
}

func handleReleaseStock(ctx context.Context, job *executor.Job) error {
	var reserved struct {
		ReservationID string `json:"reservation_id"`
		Quantity      int    `json:"quantity"`
	}
	if err := undoneStep(job, &reserved); err != nil {
		return err
	}
	if reserved.ReservationID == "" {
		return job.SetResult(map[string]any{"released": false, "reason": "no stock was reserved"})
	}
	return job.SetResult(map[string]any{"released": true, "reservation_id": reserved.ReservationID, "quantity": reserved.Quantity})
}

func handleRefundCard(ctx context.Context, job *executor.Job) error {
	var charge struct {
		ChargeID    string `json:"charge_id"`
		AmountCents int64  `json:"amount_cents"`
	}
	if err := undoneStep(job, &charge); err != nil {
		return err
	}
	if charge.ChargeID == "" {
		return job.SetResult(map[string]any{"refunded": false, "reason": "the card was not charged"})
	}
	return job.SetResult(map[string]any{"refunded": true, "charge_id": charge.ChargeID, "amount_cents": charge.AmountCents})
}

func handleCancelShipment(ctx context.Context, job *executor.Job) error {
	var shipment struct {
		ShipmentID string `json:"shipment_id"`
	}
	if err := undoneStep(job, &shipment); err != nil {
		return err
	}
	if shipment.ShipmentID == "" {
		return job.SetResult(map[string]any{"cancelled": false, "reason": "no shipment was booked"})
	}
	return job.SetResult(map[string]any{"cancelled": true, "shipment_id": shipment.ShipmentID})
}

// SagaOptions configure the saga driver.
type SagaOptions struct {
	// Out receives one line per step, compensation and lifecycle event.
	Out io.Writer
	// ShipFailure is the error of the shipping step. Default "the carrier
	// rejected the shipment: address not deliverable". Set Ship to run the
	// order to completion instead.
	ShipFailure string
	// Ship lets the shipping step succeed.
	Ship bool
}

// SagaSummary is the outcome of a saga that Saga ran.
type SagaSummary struct {
	BatchID string
	Batch   *batchq.BatchInfo
}

// defaultShipFailure is the error of the saga's shipping step.
const defaultShipFailure = "the carrier rejected the shipment: address not deliverable"

// Saga runs an order as a chain whose shipping step fails for good, prints
// each step and each compensation as the events stream recorded them, and
// returns the batch as the coordinator stored it. The batch ends failed
// after its compensations ran, which is the expected outcome, so Saga
// returns an error only when the batch ends otherwise.
func Saga(ctx context.Context, client *batchq.Client, opts SagaOptions) (*SagaSummary, error) {
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if opts.ShipFailure == "" {
		opts.ShipFailure = defaultShipFailure
	}
	shipArgs := map[string]any{"fail_reason": opts.ShipFailure}
	if opts.Ship {
		shipArgs = nil
	}
	initial := map[string]any{"order_id": "order-1001", "email": "buyer@example.com"}
	steps := []batchq.Job{
		batchq.Job{Name: ReserveStockJob, Args: map[string]any{"sku": "BOOK-42", "quantity": 2}}.
			WithCompensation(ReleaseStockJob, nil),
		batchq.Job{Name: ChargeCardJob, Args: map[string]any{"amount_cents": 4999, "currency": "EUR"}}.
			WithCompensation(RefundCardJob, nil),
		batchq.Job{Name: ShipOrderJob, Args: shipArgs}.
			WithCompensation(CancelShipmentJob, nil),
		{Name: SendReceiptJob},
	}
	id, err := client.NewChain(steps...).Context(initial).Dispatch(ctx)
	if err != nil {
		return nil, fmt.Errorf("dispatch the saga: %w", err)
	}
	fmt.Fprintf(opts.Out, "saga %s: order %s, %d steps\n", id, initial["order_id"], len(steps))

	n := newNarrator(opts.Out, steps, initial)
	if err := followBatch(ctx, client.Conn(), id, n.event); err != nil {
		return nil, err
	}
	info, err := client.Batch(ctx, id)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(opts.Out, "status %s; jobs: %d completed, %d failed, %d skipped of %d; compensations: %d completed, %d failed of %d\n",
		info.Status, info.Completed, info.Failed, info.Skipped, info.Total,
		info.Compensation.Completed, info.Compensation.Failed, info.Compensation.Total)

	summary := &SagaSummary{BatchID: id, Batch: info}
	want := batchq.StatusFailed
	if opts.Ship {
		want = batchq.StatusCompleted
	}
	if info.Status != want {
		return summary, fmt.Errorf("saga %s ended %s, expected %s: %s", id, info.Status, want, info.Error)
	}
	return summary, nil
}
