// Package demo holds the jobs and drivers of the built-in batchq demos:
//
//   - word count: a parallel batch with one job per file and a reduce step
//     in its completion callback.
//   - chain: four steps over real files whose context grows step by step.
//   - saga: an order workflow whose shipping step fails, so that the
//     compensations of the earlier steps run in reverse order.
//
// Register the handlers on an executor with RegisterJobs and on a
// compensator with RegisterCompensations. The drivers (WordCount, Chain,
// Saga) dispatch a batch through a client and report what happened. The
// handlers read local files, so an executor that runs them must see the
// same file system as the driver that names the files.
package demo

import (
	"github.com/batchq/batchq/executor"
)

// Registrar registers handlers by job name. Both *executor.Executor and
// *compensator.Compensator implement it.
type Registrar interface {
	Handle(name string, h executor.Handler)
}

// RegisterJobs registers the handlers of every demo job and callback.
func RegisterJobs(r Registrar) {
	r.Handle(CountJob, handleCount)
	r.Handle(CountPartJob, handleCount)
	r.Handle(ReduceJob, handleReduce)

	r.Handle(ListFilesJob, handleListFiles)
	r.Handle(PickLargestJob, handlePickLargest)
	r.Handle(ChecksumJob, handleChecksum)
	r.Handle(WriteReportJob, handleWriteReport)

	r.Handle(ReserveStockJob, handleReserveStock)
	r.Handle(ChargeCardJob, handleChargeCard)
	r.Handle(ShipOrderJob, handleShipOrder)
	r.Handle(SendReceiptJob, handleSendReceipt)
}

// RegisterCompensations registers the handlers of the saga's compensation
// jobs.
func RegisterCompensations(r Registrar) {
	r.Handle(ReleaseStockJob, handleReleaseStock)
	r.Handle(RefundCardJob, handleRefundCard)
	r.Handle(CancelShipmentJob, handleCancelShipment)
}
