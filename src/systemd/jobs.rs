//! Following a batch of queued jobs to their results: JobRemoved matched on the job's object path, a timeout per
//! unit (the job is then canceled), and a fallback for a job whose JobRemoved never reaches us (GetJob fails, so
//! the unit's ActiveState decides). A stop request to ade-prep (prepare's steps only: [`crate::signals::stop_now`])
//! ends the following within [`LOOK_FOR_STOP`]: the jobs are left to systemd and reported `Interrupted`, so that the
//! caller rolls back at once instead of waiting for a slow `ExecStop=`. Generic over [`JobBus`] so that the races can
//! be replayed in unit tests. It must not queue jobs itself; the real and fake managers do.

use std::time::{Duration, Instant};

use super::{job_id, reached, ActiveState, DbusError, JobError, JobOp};

/// How often a job still running is looked up (GetJob), in case its JobRemoved was lost.
pub(crate) const PROBE_EVERY: Duration = Duration::from_secs(2);
/// How long a JobRemoved may lag behind the job's disappearance before the unit's state is read instead.
pub(crate) const GRACE: Duration = Duration::from_millis(250);
/// How often a stop request to ade-prep is looked for while jobs run.
pub(crate) const LOOK_FOR_STOP: Duration = Duration::from_secs(1);

/// A JobRemoved signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Removed {
    pub job: String,
    /// The unit it was for (for the log only: matching is on the path).
    pub unit: String,
    /// done, canceled, timeout, failed, dependency, skipped.
    pub result: String,
}

/// What following jobs needs from the bus; the real one is in `real.rs`.
pub(crate) trait JobBus {
    /// Now, on the bus' clock.
    fn now(&mut self) -> Instant;
    /// The next JobRemoved of any job, or None once `until` has passed without one.
    fn next_removed(&mut self, until: Instant) -> Result<Option<Removed>, DbusError>;
    /// Whether the job still exists (GetJob).
    fn job_exists(&mut self, id: u32) -> Result<bool, DbusError>;
    /// The unit's ActiveState.
    fn active_state(&mut self, unit: &str) -> Result<ActiveState, DbusError>;
    /// Cancels the job.
    fn cancel(&mut self, id: u32) -> Result<(), DbusError>;
    /// Whether ade-prep was asked to stop, and the work in flight is stoppable.
    fn stop_requested(&mut self) -> bool;
}

/// A queued job not yet resolved.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    /// Index of the unit in the batch.
    pub index: usize,
    pub unit: String,
    /// The job's object path, as StartUnit/StopUnit returned it.
    pub job: String,
    /// When the job was queued.
    pub queued: Instant,
    /// When its timeout runs out.
    pub deadline: Instant,
    /// When to look the job up next.
    probe_at: Instant,
    /// When GetJob first failed: the JobRemoved may still be on its way until `GRACE` later.
    gone_since: Option<Instant>,
}

impl Pending {
    /// A job queued at `queued` with `timeout`; it is looked up at once, in case it finished before we looked.
    pub fn new(index: usize, unit: String, job: String, queued: Instant, timeout: Duration) -> Self {
        Pending { index, unit, job, queued, deadline: queued + timeout, probe_at: queued, gone_since: None }
    }
}

/// Follows the pending jobs until each is resolved; fills `results[p.index]` for each.
pub(crate) fn wait<B: JobBus>(
    bus: &mut B,
    op: JobOp,
    mut pending: Vec<Pending>,
    results: &mut [Option<Result<(), JobError>>],
) {
    let resolve = |p: &Pending, r: Result<(), JobError>, now: Instant, results: &mut [Option<Result<(), JobError>>]| {
        let took = now.saturating_duration_since(p.queued).as_secs_f64();
        // One line per change; failures are returned, for the caller to report once.
        match &r {
            Ok(()) => log::info!("{}: {op} job done in {took:.1}s", p.unit),
            Err(e) => log::debug!("{e} (after {took:.1}s)"),
        }
        results[p.index] = Some(r);
    };
    while !pending.is_empty() {
        let now = bus.now();
        // A stop request: no more waiting. The jobs are not canceled: a stop whose ExecStop= runs goes on whatever
        // becomes of its job, and the rollback's start job replaces it (the unit starts again once it has stopped).
        if bus.stop_requested() {
            for p in pending.drain(..) {
                let e = JobError::Interrupted { op, unit: p.unit.clone(), job: p.job.clone() };
                resolve(&p, Err(e), now, results);
            }
            break;
        }
        // Timeouts: cancel the job, so that nothing of ours is left queued; a job that ended meanwhile is resolved
        // as one that vanished.
        let mut i = 0;
        while i < pending.len() {
            let p = &mut pending[i];
            if now < p.deadline || p.gone_since.is_some() {
                i += 1;
                continue;
            }
            let timeout = p.deadline - p.queued;
            let cancel = match job_id(&p.job) {
                Some(id) => bus.cancel(id),
                None => Err(DbusError { name: None, message: format!("no job id in {}", p.job) }),
            };
            match cancel {
                Err(e) if e.is("NoSuchJob") => {
                    p.gone_since = Some(now);
                    p.probe_at = now + GRACE;
                    i += 1;
                }
                cancel => {
                    let p = pending.remove(i);
                    let e = JobError::Timeout {
                        op,
                        unit: p.unit.clone(),
                        job: p.job.clone(),
                        timeout,
                        cancel_error: cancel.err(),
                    };
                    resolve(&p, Err(e), now, results);
                }
            }
        }
        // Lookups: a job gone with no JobRemoved after GRACE is judged by its unit's state.
        let mut i = 0;
        while i < pending.len() {
            let p = &mut pending[i];
            if now < p.probe_at {
                i += 1;
                continue;
            }
            if p.gone_since.is_some() {
                let p = pending.remove(i);
                let r = match bus.active_state(&p.unit) {
                    Ok(state) if reached(op, &state) => {
                        log::warn!("{op} {}: job {} ended unseen; the unit is {state}", p.unit, p.job);
                        Ok(())
                    }
                    Ok(active_state) => {
                        Err(JobError::Vanished { op, unit: p.unit.clone(), job: p.job.clone(), active_state })
                    }
                    Err(error) => Err(JobError::Follow { op, unit: p.unit.clone(), error }),
                };
                resolve(&p, r, now, results);
                continue;
            }
            let exists = match job_id(&p.job) {
                Some(id) => bus.job_exists(id),
                None => Ok(false),
            };
            match exists {
                Ok(false) => {
                    p.gone_since = Some(now);
                    p.probe_at = now + GRACE;
                }
                Ok(true) => p.probe_at = now + PROBE_EVERY,
                Err(e) => {
                    log::debug!("{op} {}: looking up job {}: {e}", p.unit, p.job);
                    p.probe_at = now + PROBE_EVERY;
                }
            }
            i += 1;
        }
        // A job already gone waits only for its grace; its deadline no longer counts.
        let next = |p: &Pending| if p.gone_since.is_some() { p.probe_at } else { p.deadline.min(p.probe_at) };
        let Some(until) = pending.iter().map(next).min() else {
            break;
        };
        let until = until.min(now + LOOK_FOR_STOP);
        match bus.next_removed(until) {
            Ok(Some(r)) => {
                // Only our own jobs, by object path: the same unit may have other jobs, and other units' jobs
                // (dependencies pulled in, other clients) arrive on the same stream. A unit named twice in the
                // batch got the same job twice.
                let now = bus.now();
                let (ours, others): (Vec<Pending>, Vec<Pending>) = pending.drain(..).partition(|p| p.job == r.job);
                pending = others;
                if ours.is_empty() {
                    log::debug!("JobRemoved {} ({}) {}: not ours", r.job, r.unit, r.result);
                }
                for p in ours {
                    let res = if r.result == "done" {
                        Ok(())
                    } else {
                        Err(JobError::Result { op, unit: p.unit.clone(), job: p.job.clone(), result: r.result.clone() })
                    };
                    resolve(&p, res, now, results);
                }
            }
            Ok(None) => {}
            Err(error) => {
                let now = bus.now();
                for p in pending.drain(..) {
                    let e = JobError::Follow { op, unit: p.unit.clone(), error: error.clone() };
                    resolve(&p, Err(e), now, results);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, VecDeque};

    use super::*;

    /// A scripted bus on a virtual clock: signals arrive at given times, jobs exist until given times.
    struct Script {
        t0: Instant,
        now: Instant,
        signals: VecDeque<(Duration, Removed)>,
        /// Job id → when GetJob starts failing.
        gone_at: BTreeMap<u32, Duration>,
        states: BTreeMap<String, String>,
        canceled: BTreeSet<u32>,
        cancel_fails: Option<DbusError>,
        stream_error: Option<(Duration, DbusError)>,
        lookups: usize,
        waits: usize,
        /// When ade-prep is asked to stop.
        stop_at: Option<Duration>,
    }

    impl Script {
        fn new() -> Self {
            let t0 = Instant::now();
            Script {
                t0,
                now: t0,
                signals: VecDeque::new(),
                gone_at: BTreeMap::new(),
                states: BTreeMap::new(),
                canceled: BTreeSet::new(),
                cancel_fails: None,
                stream_error: None,
                lookups: 0,
                waits: 0,
                stop_at: None,
            }
        }
        fn signal(mut self, at_ms: u64, id: u32, unit: &str, result: &str) -> Self {
            let job = format!("/org/freedesktop/systemd1/job/{id}");
            self.signals
                .push_back((Duration::from_millis(at_ms), Removed { job, unit: unit.into(), result: result.into() }));
            self
        }
        fn gone(mut self, id: u32, at_ms: u64) -> Self {
            self.gone_at.insert(id, Duration::from_millis(at_ms));
            self
        }
        fn state(mut self, unit: &str, s: &str) -> Self {
            self.states.insert(unit.into(), s.into());
            self
        }
        fn elapsed(&self) -> Duration {
            self.now - self.t0
        }
    }

    impl JobBus for Script {
        fn now(&mut self) -> Instant {
            self.now
        }
        fn next_removed(&mut self, until: Instant) -> Result<Option<Removed>, DbusError> {
            self.waits += 1;
            assert!(self.waits < 10_000, "wait() spins without time passing");
            let next_signal = self.signals.front().map(|(at, _)| *at);
            if let Some((at, e)) = &self.stream_error {
                if self.t0 + *at <= until && !matches!(next_signal, Some(s) if s <= *at) {
                    self.now = self.now.max(self.t0 + *at);
                    return Err(e.clone());
                }
            }
            match self.signals.front() {
                Some((at, _)) if self.t0 + *at <= until => {
                    let (at, r) = self.signals.pop_front().unwrap();
                    self.now = self.now.max(self.t0 + at);
                    Ok(Some(r))
                }
                _ => {
                    self.now = self.now.max(until);
                    Ok(None)
                }
            }
        }
        fn job_exists(&mut self, id: u32) -> Result<bool, DbusError> {
            self.lookups += 1;
            let gone = self.gone_at.get(&id).is_some_and(|at| self.t0 + *at <= self.now);
            Ok(!gone && !self.canceled.contains(&id))
        }
        fn active_state(&mut self, unit: &str) -> Result<ActiveState, DbusError> {
            Ok(self.states.get(unit).map_or(ActiveState::Active, |s| ActiveState::parse(s)))
        }
        fn cancel(&mut self, id: u32) -> Result<(), DbusError> {
            if let Some(e) = &self.cancel_fails {
                return Err(e.clone());
            }
            if self.gone_at.get(&id).is_some_and(|at| self.t0 + *at <= self.now) {
                return Err(DbusError::named(
                    "org.freedesktop.systemd1.NoSuchJob",
                    format!("Job {id} does not exist."),
                ));
            }
            self.canceled.insert(id);
            Ok(())
        }
        fn stop_requested(&mut self) -> bool {
            self.stop_at.is_some_and(|at| self.t0 + at <= self.now)
        }
    }

    fn run(bus: &mut Script, op: JobOp, jobs: &[(&str, u32, u64)]) -> Vec<Result<(), JobError>> {
        let pending = jobs
            .iter()
            .enumerate()
            .map(|(i, (unit, id, timeout_ms))| {
                let job = format!("/org/freedesktop/systemd1/job/{id}");
                Pending::new(i, unit.to_string(), job, bus.t0, Duration::from_millis(*timeout_ms))
            })
            .collect();
        let mut results = vec![None; jobs.len()];
        wait(bus, op, pending, &mut results);
        results.into_iter().map(|r| r.expect("every job resolved")).collect()
    }

    #[test]
    fn results_are_matched_on_the_job_path_not_the_unit() {
        // a.service has an older job (id 1, someone else's) that fails; ours is id 3. b's job times out at
        // systemd's side. Job 9 is a dependency pulled in: not ours.
        let mut bus = Script::new()
            .signal(100, 1, "a.service", "failed")
            .signal(200, 9, "c.service", "done")
            .signal(300, 4, "b.service", "timeout")
            .signal(2000, 3, "a.service", "done")
            .gone(1, 100)
            .gone(9, 200)
            .gone(4, 300)
            .gone(3, 2000);
        let r = run(&mut bus, JobOp::Stop, &[("a.service", 3, 90_000), ("b.service", 4, 90_000)]);
        assert_eq!(r[0], Ok(()));
        assert_eq!(r[1].as_ref().unwrap_err().to_string(), "stop b.service: job result 'timeout'");
        assert_eq!(bus.elapsed(), Duration::from_millis(2000));
        assert!(bus.canceled.is_empty());
    }

    #[test]
    fn a_job_past_its_timeout_is_canceled_and_reported_with_its_unit() {
        let mut bus = Script::new().signal(500, 2, "fast.service", "done").gone(2, 500);
        let r = run(&mut bus, JobOp::Stop, &[("slow.service", 1, 1000), ("fast.service", 2, 1000)]);
        assert_eq!(
            r[0].as_ref().unwrap_err().to_string(),
            "stop slow.service: no job result within 1s; job /org/freedesktop/systemd1/job/1 canceled"
        );
        assert_eq!(r[1], Ok(()));
        assert_eq!(bus.canceled, BTreeSet::from([1]));
        assert_eq!(bus.elapsed(), Duration::from_millis(1000));
    }

    #[test]
    fn a_cancel_that_fails_is_reported() {
        let mut bus = Script::new();
        bus.cancel_fails = Some(DbusError::named("org.freedesktop.DBus.Error.AccessDenied", "no"));
        let r = run(&mut bus, JobOp::Start, &[("x.service", 5, 300)]);
        match &r[0] {
            Err(JobError::Timeout { cancel_error: Some(e), .. }) => assert!(e.is("AccessDenied")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_job_gone_before_we_looked_is_judged_by_the_unit_state() {
        // Jobs 1 and 2 ended before the first lookup and their JobRemoved never comes (lost): stop of an inactive
        // unit is fine; a start whose unit is failed is not.
        let mut bus = Script::new().gone(1, 0).gone(2, 0).state("a.service", "inactive").state("b.service", "failed");
        let r = run(&mut bus, JobOp::Stop, &[("a.service", 1, 90_000)]);
        assert_eq!(r[0], Ok(()));
        assert_eq!(bus.elapsed(), GRACE);
        let r = run(&mut bus, JobOp::Start, &[("b.service", 2, 90_000)]);
        assert_eq!(
            r[0].as_ref().unwrap_err().to_string(),
            "start b.service: job /org/freedesktop/systemd1/job/2 ended unseen and the unit is failed"
        );
    }

    #[test]
    fn a_late_signal_within_the_grace_wins_over_the_unit_state() {
        // GetJob fails at once, the JobRemoved (result failed) arrives 100 ms later: the result counts, though the
        // unit is inactive.
        let mut bus = Script::new().gone(1, 0).signal(100, 1, "a.service", "failed").state("a.service", "inactive");
        let r = run(&mut bus, JobOp::Stop, &[("a.service", 1, 90_000)]);
        assert_eq!(r[0].as_ref().unwrap_err().to_string(), "stop a.service: job result 'failed'");
    }

    #[test]
    fn a_job_that_ends_at_its_deadline_is_not_reported_as_a_timeout() {
        // The job is gone when the timeout runs out (cancel: NoSuchJob) and its signal was lost: judged by state.
        let mut bus = Script::new().gone(1, 1000).state("a.service", "inactive");
        let r = run(&mut bus, JobOp::Stop, &[("a.service", 1, 1000)]);
        assert_eq!(r[0], Ok(()));
        assert!(bus.canceled.is_empty());
    }

    #[test]
    fn running_jobs_are_looked_up_now_and_then_not_constantly() {
        let mut bus = Script::new().signal(10_000, 1, "a.service", "done").gone(1, 10_000);
        let r = run(&mut bus, JobOp::Stop, &[("a.service", 1, 90_000)]);
        assert_eq!(r[0], Ok(()));
        // At 0, 2, 4, 6, 8 s.
        assert_eq!(bus.lookups, 5);
    }

    #[test]
    fn a_unit_named_twice_gets_the_result_twice() {
        let mut bus = Script::new().signal(100, 1, "a.service", "failed").gone(1, 100);
        let r = run(&mut bus, JobOp::Stop, &[("a.service", 1, 90_000), ("a.service", 1, 90_000)]);
        assert_eq!(r[0], r[1]);
        assert!(r[0].is_err());
        assert_eq!(bus.elapsed(), Duration::from_millis(100));
    }

    #[test]
    fn a_broken_stream_fails_every_pending_job() {
        let mut bus = Script::new().signal(100, 1, "a.service", "done").gone(1, 100);
        bus.stream_error = Some((Duration::from_millis(500), DbusError { name: None, message: "EOF".into() }));
        let r = run(&mut bus, JobOp::Stop, &[("a.service", 1, 90_000), ("b.service", 2, 90_000)]);
        assert_eq!(r[0], Ok(()));
        assert_eq!(r[1].as_ref().unwrap_err().to_string(), "stop b.service: cannot follow the job: EOF");
    }

    #[test]
    fn a_stop_request_ends_the_following_of_a_slow_stop_within_a_second_and_leaves_the_job_to_systemd() {
        // slow.service's ExecStop takes 5 minutes (its job ends at 300 s); fast.service is done at 100 ms; ade-prep
        // is asked to stop at 2.5 s.
        let mut bus = Script::new().signal(100, 2, "fast.service", "done").gone(2, 100).signal(
            300_000,
            1,
            "slow.service",
            "done",
        );
        bus.stop_at = Some(Duration::from_millis(2500));
        let r = run(&mut bus, JobOp::Stop, &[("slow.service", 1, 600_000), ("fast.service", 2, 600_000)]);
        assert_eq!(
            r[0].as_ref().unwrap_err().to_string(),
            "stop slow.service: job /org/freedesktop/systemd1/job/1 no longer followed: ade-prep was asked to stop"
        );
        assert_eq!(r[1], Ok(()), "a job that ended before the request keeps its result");
        assert!(
            bus.elapsed() >= Duration::from_millis(2500)
                && bus.elapsed() <= Duration::from_millis(2500) + LOOK_FOR_STOP
        );
        assert!(bus.canceled.is_empty(), "the job is left to systemd: the rollback's start replaces it");
    }

    #[test]
    fn without_a_stop_request_a_slow_stop_is_followed_to_its_end() {
        let mut bus = Script::new().signal(300_000, 1, "slow.service", "done").gone(1, 300_000);
        let r = run(&mut bus, JobOp::Stop, &[("slow.service", 1, 600_000)]);
        assert_eq!(r[0], Ok(()));
        assert_eq!(bus.elapsed(), Duration::from_millis(300_000));
    }
}
