package executor

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are an executor's Prometheus metrics, labelled by queue and work
// so that the executors of one process share one registry. A nil *metrics
// records nothing.
type metrics struct {
	attempts    *prometheus.CounterVec
	seconds     prometheus.Observer
	running     prometheus.Gauge
	redelivered prometheus.Counter
}

// register registers c, or returns the collector already registered under
// its name by another executor of the process.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	var exists prometheus.AlreadyRegisteredError
	if errors.As(err, &exists) {
		if existing, ok := exists.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}

func newMetrics(reg prometheus.Registerer, queue string, work Work) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	labels := []string{"queue", "work"}
	attempts, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "batchq_executor_attempts_total",
		Help: "Attempts by how they ended: completed, failed (for good), retried, skipped (batch cancelled) or interrupted (left for redelivery at shutdown).",
	}, append(labels, "outcome")))
	if err != nil {
		return nil, err
	}
	seconds, err := register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "batchq_executor_attempt_seconds",
		Help:    "Time a handler ran for one attempt.",
		Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
	}, labels))
	if err != nil {
		return nil, err
	}
	running, err := register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "batchq_executor_running",
		Help: "Attempts running now.",
	}, labels))
	if err != nil {
		return nil, err
	}
	redelivered, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "batchq_executor_redelivered_total",
		Help: "Work messages delivered more than once for one attempt: an executor crashed or stalled while running it, or the attempt waited for its retry delay.",
	}, labels))
	if err != nil {
		return nil, err
	}
	w := "jobs"
	if work == Compensations {
		w = "compensations"
	}
	return &metrics{
		attempts:    attempts.MustCurryWith(prometheus.Labels{"queue": queue, "work": w}),
		seconds:     seconds.WithLabelValues(queue, w),
		running:     running.WithLabelValues(queue, w),
		redelivered: redelivered.WithLabelValues(queue, w),
	}, nil
}

func (m *metrics) outcome(name string) {
	if m != nil {
		m.attempts.WithLabelValues(name).Inc()
	}
}

// start records a running attempt and returns the function that records
// its end.
func (m *metrics) start() func() {
	if m == nil {
		return func() {}
	}
	m.running.Inc()
	begin := time.Now()
	return func() {
		m.running.Dec()
		m.seconds.Observe(time.Since(begin).Seconds())
	}
}

func (m *metrics) redelivery(deliveries int) {
	if m != nil && deliveries > 1 {
		m.redelivered.Inc()
	}
}
