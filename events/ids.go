package events

import "strconv"

// Message ids are deterministic, so a republish of the same message is
// dropped by the stream's duplicate window. Ids of work and outcome messages
// include the attempt, so a retry is never mistaken for a duplicate.

// ChunkMsgID returns the id of a batch.jobs event.
func ChunkMsgID(batchID string, chunk int) string {
	return batchID + ":jobs:" + strconv.Itoa(chunk)
}

// SubmittedMsgID returns the id of a batch.submitted event.
func SubmittedMsgID(batchID string) string {
	return batchID + ":submitted"
}

// JobMsgID returns the id of an event of type t about one attempt of a job.
func JobMsgID(batchID, jobID string, t Type, attempt int) string {
	return batchID + ":" + jobID + ":" + t.Name() + ":" + strconv.Itoa(attempt)
}

// BatchMsgID returns the id of a lifecycle event of a batch. A batch emits
// each lifecycle type at most once.
func BatchMsgID(batchID string, t Type) string {
	return batchID + ":" + t.Name()
}

// AddMsgID returns the id of a jobs.added event, or of the answer of type t
// to it.
func AddMsgID(batchID, addID string, t Type) string {
	return batchID + ":" + addID + ":" + t.Name()
}

// CallbackJobID returns the job id of a callback. On_job_failure callbacks
// get one per failed job.
func CallbackJobID(kind CallbackKind, failedJobID string) string {
	if kind == OnJobFailure {
		return string(kind) + "." + failedJobID
	}
	return string(kind)
}

// AddID returns the add id of the index-th jobs.added event that a job
// published during one run. A retry of the job publishes the same ids, so
// the coordinator applies each addition once.
func AddID(jobID string, index int) string {
	return jobID + "." + strconv.Itoa(index)
}

// PositionJobID returns the id of a job given at dispatch: its position.
func PositionJobID(position int) string {
	return strconv.Itoa(position)
}
