package cron

import (
	"context"
	"fmt"
	"time"

	"github.com/go-co-op/gocron/v2"
)

// Scheduler runs a Runner's configured jobs on their schedules.
type Scheduler struct {
	s gocron.Scheduler
	r *Runner
}

// NewScheduler registers every job of the Runner's configuration with a gocron scheduler, in singleton mode (a run
// still going when the next is due makes that one wait for the following tick). Call Start, then Shutdown.
func NewScheduler(r *Runner) (*Scheduler, error) {
	s, err := gocron.NewScheduler(gocron.WithLocation(time.UTC))
	if err != nil {
		return nil, fmt.Errorf("cron: scheduler: %w", err)
	}
	for _, job := range r.cfg.Jobs {
		var def gocron.JobDefinition
		opts := []gocron.JobOption{gocron.WithName(job.Name), gocron.WithSingletonMode(gocron.LimitModeReschedule)}
		if job.Every > 0 {
			every := time.Duration(job.Every)
			def = gocron.DurationJob(every)
			// Start on the next multiple of the period so that every replica fires at the same instants.
			opts = append(opts, gocron.WithStartAt(gocron.WithStartDateTime(time.Now().Truncate(every).Add(every))))
		} else {
			def = gocron.CronJob(job.Cron, job.withSeconds())
		}
		task := gocron.NewTask(func(ctx context.Context) {
			if _, err := r.RunTick(ctx, job, job.Tick(time.Now())); err != nil {
				r.log.Error("cron job failed", "job", job.Name, "err", err)
			}
		})
		if _, err := s.NewJob(def, task, opts...); err != nil {
			s.Shutdown()
			return nil, fmt.Errorf("cron: job %s: %w", job.Name, err)
		}
	}
	return &Scheduler{s: s, r: r}, nil
}

// Start starts the schedules.
func (s *Scheduler) Start() { s.s.Start() }

// Shutdown stops the schedules, cancels running jobs' contexts and waits for them.
func (s *Scheduler) Shutdown() error {
	if err := s.s.Shutdown(); err != nil {
		return fmt.Errorf("cron: shutdown: %w", err)
	}
	return nil
}

// NextRuns lists each job's next scheduled time.
func (s *Scheduler) NextRuns() map[string]time.Time {
	out := map[string]time.Time{}
	for _, j := range s.s.Jobs() {
		if t, err := j.NextRun(); err == nil {
			out[j.Name()] = t
		}
	}
	return out
}
