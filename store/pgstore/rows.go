package pgstore

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/store"
	"github.com/jackc/pgx/v5"
)

// batchColumns lists the columns that scanBatch reads, in its order.
const batchColumns = `id, type, status, queue_name, queue, context, options,
	total, completed, failed, skipped, dispatching, dispatched, current, walk, walk_position, error,
	compensation_total, compensation_completed, compensation_failed, cancelled,
	created_at, updated_at, finished_at, version`

// scanBatch reads one row of batchColumns.
func scanBatch(row pgx.Row) (*store.Batch, error) {
	var (
		b                   store.Batch
		typ, status, walk   string
		context, options    []byte
		total, completed    int32
		failed, skipped     int32
		dispatched, current int32
		dispatching         int32
		walkPosition        int32
		compTotal           int32
		compCompleted       int32
		compFailed          int32
		finishedAt          *time.Time
	)
	err := row.Scan(&b.ID, &typ, &status, &b.QueueName, &b.Queue, &context, &options,
		&total, &completed, &failed, &skipped, &dispatching, &dispatched, &current, &walk, &walkPosition, &b.Error,
		&compTotal, &compCompleted, &compFailed, &b.Cancelled,
		&b.CreatedAt, &b.UpdatedAt, &finishedAt, &b.Version)
	if err != nil {
		return nil, err
	}

	b.Type = events.BatchType(typ)
	b.Status = events.BatchStatus(status)
	b.Context = json.RawMessage(context)
	if err := json.Unmarshal(options, &b.Options); err != nil {
		return nil, fmt.Errorf("pgstore: decode options of batch %s: %w", b.ID, err)
	}
	b.Total = int(total)
	b.Completed = int(completed)
	b.Failed = int(failed)
	b.Skipped = int(skipped)
	b.Dispatching = int(dispatching)
	b.Dispatched = int(dispatched)
	b.Current = int(current)
	b.Walk = store.WalkState(walk)
	b.WalkPosition = int(walkPosition)
	b.CompensationTotal = int(compTotal)
	b.CompensationCompleted = int(compCompleted)
	b.CompensationFailed = int(compFailed)

	b.CreatedAt = b.CreatedAt.UTC()
	b.UpdatedAt = b.UpdatedAt.UTC()
	b.FinishedAt = utcPtr(finishedAt)
	return &b, nil
}

// jobColumns lists the columns that scanJob reads, in its order.
const jobColumns = `batch_id, job_id, position, role, name, args,
	compensation_name, compensation_args, max_attempts, timeout_ms, parent_id,
	status, attempt, result, error, finished_at,
	compensation_status, compensation_attempt, compensation_error`

// scanJob reads one row of jobColumns.
func scanJob(row pgx.Row) (*store.Job, error) {
	var (
		j                    store.Job
		position             int32
		role, status         string
		args, result         []byte
		compName             *string
		compArgs             []byte
		maxAttempts, attempt int32
		finishedAt           *time.Time
		compStatus           string
		compAttempt          int32
	)
	err := row.Scan(&j.BatchID, &j.ID, &position, &role, &j.Name, &args,
		&compName, &compArgs, &maxAttempts, &j.TimeoutMS, &j.ParentID,
		&status, &attempt, &result, &j.Error, &finishedAt,
		&compStatus, &compAttempt, &j.CompensationError)
	if err != nil {
		return nil, err
	}

	j.Position = int(position)
	j.Role = events.Role(role)
	j.Args = json.RawMessage(args)
	if compName != nil {
		j.Compensation = &events.JobRef{Name: *compName, Args: json.RawMessage(compArgs)}
	}
	j.MaxAttempts = int(maxAttempts)
	j.Status = events.JobStatus(status)
	j.Attempt = int(attempt)
	j.Result = json.RawMessage(result)
	j.FinishedAt = utcPtr(finishedAt)
	j.CompensationStatus = events.CompensationStatus(compStatus)
	j.CompensationAttempt = int(compAttempt)
	return &j, nil
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// jobArrays contains jobs column by column, for inserts that unnest one array
// per column. Byte columns are [][]byte, not []json.RawMessage, so that pgx
// encodes them as bytea.
type jobArrays struct {
	ids          []string
	positions    []int32
	roles        []string
	names        []string
	args         [][]byte
	compNames    []*string
	compArgs     [][]byte
	maxAttempts  []int32
	timeouts     []int64
	parents      []string
	statuses     []string
	attempts     []int32
	results      [][]byte
	errors       []string
	finishedAt   []*time.Time
	compStatuses []string
	compAttempts []int32
	compErrors   []string
}

func newJobArrays(n int) *jobArrays {
	return &jobArrays{
		ids:          make([]string, 0, n),
		positions:    make([]int32, 0, n),
		roles:        make([]string, 0, n),
		names:        make([]string, 0, n),
		args:         make([][]byte, 0, n),
		compNames:    make([]*string, 0, n),
		compArgs:     make([][]byte, 0, n),
		maxAttempts:  make([]int32, 0, n),
		timeouts:     make([]int64, 0, n),
		parents:      make([]string, 0, n),
		statuses:     make([]string, 0, n),
		attempts:     make([]int32, 0, n),
		results:      make([][]byte, 0, n),
		errors:       make([]string, 0, n),
		finishedAt:   make([]*time.Time, 0, n),
		compStatuses: make([]string, 0, n),
		compAttempts: make([]int32, 0, n),
		compErrors:   make([]string, 0, n),
	}
}

func (a *jobArrays) add(j *store.Job) {
	var compName *string
	var compArgs []byte
	if j.Compensation != nil {
		name := j.Compensation.Name
		compName = &name
		compArgs = j.Compensation.Args
	}
	a.ids = append(a.ids, j.ID)
	a.positions = append(a.positions, int32(j.Position))
	a.roles = append(a.roles, string(j.Role))
	a.names = append(a.names, pgText(j.Name))
	a.args = append(a.args, j.Args)
	a.compNames = append(a.compNames, compName)
	a.compArgs = append(a.compArgs, compArgs)
	a.maxAttempts = append(a.maxAttempts, int32(j.MaxAttempts))
	a.timeouts = append(a.timeouts, j.TimeoutMS)
	a.parents = append(a.parents, j.ParentID)
	a.statuses = append(a.statuses, string(j.Status))
	a.attempts = append(a.attempts, int32(j.Attempt))
	a.results = append(a.results, j.Result)
	a.errors = append(a.errors, pgText(j.Error))
	a.finishedAt = append(a.finishedAt, j.FinishedAt)
	a.compStatuses = append(a.compStatuses, string(j.CompensationStatus))
	a.compAttempts = append(a.compAttempts, int32(j.CompensationAttempt))
	a.compErrors = append(a.compErrors, j.CompensationError)
}

// insertJobsSQL inserts the jobs of batch $1 from the arrays of insertArgs,
// skipping ids and positions that are already stored, and returns the ids
// it inserted.
const insertJobsSQL = `INSERT INTO {schema}.jobs (batch_id, job_id, position, role, name, args,
	compensation_name, compensation_args, max_attempts, timeout_ms, parent_id,
	status, attempt, result, error, finished_at,
	compensation_status, compensation_attempt, compensation_error)
SELECT $1, u.* FROM unnest(
	$2::text[], $3::integer[], $4::text[], $5::text[], $6::bytea[],
	$7::text[], $8::bytea[], $9::integer[], $10::bigint[], $11::text[],
	$12::text[], $13::integer[], $14::bytea[], $15::text[], $16::timestamptz[],
	$17::text[], $18::integer[], $19::text[]) AS u
ON CONFLICT DO NOTHING
RETURNING job_id`

// insertArgs returns the arguments of insertJobsSQL.
func (a *jobArrays) insertArgs(batchID string) []any {
	return []any{batchID,
		a.ids, a.positions, a.roles, a.names, a.args,
		a.compNames, a.compArgs, a.maxAttempts, a.timeouts, a.parents,
		a.statuses, a.attempts, a.results, a.errors, a.finishedAt,
		a.compStatuses, a.compAttempts, a.compErrors}
}

// collectJobs reads every row of rows with scanJob.
func collectJobs(rows pgx.Rows) ([]*store.Job, error) {
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (*store.Job, error) {
		return scanJob(row)
	})
}

// pgText returns s as Postgres text can hold it: text columns reject NUL
// bytes and bytes that are not valid UTF-8, so each becomes U+FFFD. Only
// messages such as errors go through it; args, context and results are
// bytea and kept exactly.
func pgText(s string) string {
	if strings.IndexByte(s, 0) < 0 && utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", "\uFFFD"), "\uFFFD")
}
