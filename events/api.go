package events

import "fmt"

// Request/reply subjects that the coordinator serves, each under APIPrefix.
const (
	APIBatchGet     = APIPrefix + ".batch.get"
	APIBatchResults = APIPrefix + ".batch.results"
	APIJobGet       = APIPrefix + ".job.get"
	APIRejected     = APIPrefix + ".events.rejected"
)

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
// starting after position After (use -1 for the first page).
type ResultsRequest struct {
	BatchID string `json:"batch_id"`
	After   int    `json:"after"`
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
