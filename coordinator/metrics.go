package coordinator

import (
	"context"
	"time"

	"github.com/batchq/batchq/events"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the coordinator's Prometheus metrics. A nil *metrics records
// nothing, so the coordinator runs without a registry.
type metrics struct {
	events       *prometheus.CounterVec
	groupSize    prometheus.Histogram
	applySeconds prometheus.Histogram
	applyErrors  prometheus.Counter
	published    prometheus.Counter
	republished  prometheus.Counter
	settled      *prometheus.CounterVec
	pending      prometheus.Gauge
	ackPending   prometheus.Gauge
	redelivered  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "batchq_coordinator_events_total",
			Help: "Events the coordinator consumed, by type and what happened to them (applied, delayed, rejected).",
		}, []string{"type", "verdict"}),
		groupSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "batchq_coordinator_group_events",
			Help:    "Events applied per store update.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512},
		}),
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "batchq_coordinator_apply_seconds",
			Help:    "Time to apply one group of events to the store and publish its outbox.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		applyErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "batchq_coordinator_apply_errors_total",
			Help: "Store updates that failed; their events are retried.",
		}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "batchq_coordinator_published_total",
			Help: "Messages published from the outbox and by the dispatcher.",
		}),
		republished: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "batchq_coordinator_outbox_swept_total",
			Help: "Outbox messages that the sweeper published because an update left them behind.",
		}),
		settled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "batchq_coordinator_batches_settled_total",
			Help: "Batches this coordinator settled, by final status.",
		}, []string{"status"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "batchq_coordinator_consumer_pending",
			Help: "Events in the stream that the coordinators' consumer has not delivered yet; a growing value means they fall behind.",
		}),
		ackPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "batchq_coordinator_consumer_ack_pending",
			Help: "Events delivered to coordinators and not yet acknowledged, delayed ones included.",
		}),
		redelivered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "batchq_coordinator_consumer_redelivered",
			Help: "Events the server is redelivering to the coordinators' consumer.",
		}),
	}
	for _, c := range []prometheus.Collector{m.events, m.groupSize, m.applySeconds, m.applyErrors, m.published, m.republished, m.settled, m.pending, m.ackPending, m.redelivered} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) countEvents(ops []*op) {
	if m == nil {
		return
	}
	for _, o := range ops {
		verdict := "applied"
		switch o.verdict {
		case retry:
			verdict = "delayed"
		case reject:
			verdict = "rejected"
		}
		t := string(o.env.Type)
		if t == "" {
			t = "invalid"
		}
		m.events.WithLabelValues(t, verdict).Inc()
	}
}

func (m *metrics) observeGroup(n int, start time.Time) {
	if m == nil {
		return
	}
	m.groupSize.Observe(float64(n))
	m.applySeconds.Observe(time.Since(start).Seconds())
}

func (m *metrics) applyFailed() {
	if m != nil {
		m.applyErrors.Inc()
	}
}

func (m *metrics) addPublished(n int, swept bool) {
	if m == nil {
		return
	}
	m.published.Add(float64(n))
	if swept {
		m.republished.Add(float64(n))
	}
}

// countSettled counts lifecycle messages that settle a batch.
func (m *metrics) countSettled(msgs []events.Message) {
	if m == nil {
		return
	}
	for _, msg := range msgs {
		switch msg.Type {
		case events.TypeBatchCompleted:
			m.settled.WithLabelValues(string(events.StatusCompleted)).Inc()
		case events.TypeBatchFailed:
			m.settled.WithLabelValues(string(events.StatusFailed)).Inc()
		case events.TypeBatchCancelled:
			m.settled.WithLabelValues(string(events.StatusCancelled)).Inc()
		}
	}
}

// observeConsumer reads the shared consumer's counts, so a stalled
// consumer shows within one sweep interval.
func (m *metrics) observeConsumer(ctx context.Context, cons jetstream.Consumer) {
	if m == nil || cons == nil {
		return
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return
	}
	m.pending.Set(float64(info.NumPending))
	m.ackPending.Set(float64(info.NumAckPending))
	m.redelivered.Set(float64(info.NumRedelivered))
}
