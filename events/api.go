package events

import "fmt"

// Request/reply subjects that the coordinator serves, each under APIPrefix.
const (
	APIBatchGet     = APIPrefix + ".batch.get"
	APIBatchResults = APIPrefix + ".batch.results"
	APIJobGet       = APIPrefix + ".job.get"
	APIRejected     = APIPrefix + ".events.rejected"
	APIBatchCancel  = APIPrefix + ".batch.cancel"
	APIAdditionGet  = APIPrefix + ".addition.get"
)

// CancelledBucket is the key-value bucket that lists cancelled batches, one
// key per batch id. Executors watch it and skip jobs of those batches.
const CancelledBucket = "batchq_cancelled"

// Error codes of API replies and rejected additions.
const (
	CodeNotFound      = "not_found"
	CodeFinished      = "finished"
	CodeInvalid       = "invalid"
	CodeUnavailable   = "unavailable"
	CodeInternalError = "internal"
)

// APIError is the error part of an API reply.
type APIError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// BatchRequest asks for one batch.
type BatchRequest struct {
	BatchID string `json:"batch_id"`
}

// BatchReply answers a BatchRequest.
type BatchReply struct {
	Batch *BatchInfo `json:"batch,omitempty"`
	Error *APIError  `json:"error,omitempty"`
}

// ResultsRequest asks for one page of a batch's jobs, in position order,
// starting at position From (0, the default, for the first page).
type ResultsRequest struct {
	BatchID string `json:"batch_id"`
	From    int    `json:"from"`
	Limit   int    `json:"limit"`
}

// ResultsReply answers a ResultsRequest. More is set when jobs follow the
// last one in Jobs.
type ResultsReply struct {
	Jobs  []JobInfo `json:"jobs"`
	More  bool      `json:"more"`
	Error *APIError `json:"error,omitempty"`
}

// JobRequest asks for one job of a batch.
type JobRequest struct {
	BatchID string `json:"batch_id"`
	JobID   string `json:"job_id"`
}

// JobReply answers a JobRequest.
type JobReply struct {
	Job   *JobInfo  `json:"job,omitempty"`
	Error *APIError `json:"error,omitempty"`
}

// RejectedRequest asks for the most recent rejected events.
type RejectedRequest struct {
	Limit int `json:"limit"`
}

// RejectedReply answers a RejectedRequest, newest first.
type RejectedReply struct {
	Events []EventRejected `json:"events"`
	Error  *APIError       `json:"error,omitempty"`
}

// CancelRequest asks to cancel a running batch.
type CancelRequest struct {
	BatchID string `json:"batch_id"`
	Reason  string `json:"reason"`
}

// AdditionRequest asks whether a jobs.added event was applied.
type AdditionRequest struct {
	BatchID string `json:"batch_id"`
	AddID   string `json:"add_id"`
}

// AdditionReply answers an AdditionRequest. Answer is nil while the
// addition is not applied.
type AdditionReply struct {
	Answer *JobsAnswer `json:"answer,omitempty"`
	Error  *APIError   `json:"error,omitempty"`
}
