package worker

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the worker's Prometheus series. Each Worker registers its own on the registry it is given, so that
// tests and several workers in one process do not share state.
type Metrics struct {
	Jobs          *prometheus.CounterVec   // dae_worker_jobs_total{kind,outcome}
	BatchSize     prometheus.Histogram     // dae_worker_batch_size
	DeviceSeconds *prometheus.HistogramVec // dae_worker_device_seconds_per_image{kind}
	Wait          *prometheus.HistogramVec // dae_worker_job_wait_seconds{kind}: publish to start
	Pending       *prometheus.GaugeVec     // dae_worker_queue_pending{kind}: jobs not yet delivered or acknowledged
}

// Job outcomes counted in dae_worker_jobs_total.
const (
	OutcomeDone      = "done"
	OutcomeFailed    = "failed"    // permanent: bad input, unknown model, invalid message
	OutcomeRetried   = "retried"   // transient: released for redelivery with a delay
	OutcomeDead      = "dead"      // transient errors until the last delivery: sent to the dead-letter stream
	OutcomeDuplicate = "duplicate" // a redelivery of a job already final: only acknowledged
	OutcomeReleased  = "released"  // given back unfinished at shutdown
)

// NewMetrics creates the series and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dae_worker_jobs_total", Help: "Jobs handled, by kind and outcome.",
		}, []string{"kind", "outcome"}),
		BatchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "dae_worker_batch_size", Help: "Images per encode micro-batch sent to the device.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128},
		}),
		DeviceSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dae_worker_device_seconds_per_image", Help: "Model time per image (or output frame), by kind.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}, []string{"kind"}),
		Wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dae_worker_job_wait_seconds", Help: "Time from a job's publication to its start (queue lag).",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 12),
		}, []string{"kind"}),
		Pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dae_worker_queue_pending", Help: "Jobs waiting in the consumer (undelivered plus unacknowledged).",
		}, []string{"kind"}),
	}
	reg.MustRegister(m.Jobs, m.BatchSize, m.DeviceSeconds, m.Wait, m.Pending)
	return m
}
