//! Crashes, pauses and the restart that follows a crash, modelled on the real engine's
//! `recover`.

use std::time::Duration;

use model::{TaskStatus, Timestamp};
use reconciler::{Effect, Observation};

use crate::Violation;
use crate::sim::{Event, Sim};

impl Sim {
    /// The control plane dies: everything in flight inside it is lost, though each effect in
    /// flight may have reached the world first.
    pub(crate) fn crash(&mut self) {
        self.summary.crashes += 1;
        self.trace.record(format!("{} CRASH", self.clock()));
        let in_flight: Vec<(Timestamp, u64)> =
            self.queue.iter().filter(|(_, e)| e.in_process()).map(|(k, _)| *k).collect();
        for key in in_flight {
            let event = self.queue.remove(&key).expect("listed");
            if let Event::Perform(effect) = event
                && self.rng.chance(500)
            {
                self.trace.record(format!("  performed, report lost: {effect:?}"));
                self.perform(effect, false);
            }
        }
        self.stops_in_flight.clear();
        self.hook_results.clear();
        self.down = true;
        let after = self.rng.millis(0, crate::sim::RESTART_MAX.as_millis() as u64);
        self.schedule(after, Event::Restart);
    }

    /// The process stalls; or its host is suspended and the monotonic clock stops with it, so the
    /// control plane's clock falls behind the world's (it still never goes backwards).
    pub(crate) fn pause(&mut self) {
        self.summary.pauses += 1;
        let length = self.rng.millis(1_000, 600_000);
        let suspended = self.rng.chance(500);
        self.trace.record(format!("{} PAUSE {length:?} (clock stops: {suspended})", self.clock()));
        if suspended {
            self.clock_offset_ms -= length.as_millis() as i64;
        }
        self.paused_until = Some(self.now.saturating_add(length));
    }

    /// A new process: the wall clock read afresh (stepped, but never before the newest stored
    /// time), the persisted state loaded, the world adopted, the pollers started.
    pub(crate) fn restart(&mut self) -> Result<(), Violation> {
        let step_ms = match self.rng.below(4) {
            0 => -(self.rng.between(0, 3_600_000) as i64),
            1 => self.rng.between(0, 3_600_000) as i64,
            _ => 0,
        };
        let floor = self.persisted_at.as_millis() as i64 - self.now.as_millis() as i64;
        self.clock_offset_ms = (self.clock_offset_ms + step_ms).max(floor);
        let persisted = self.persisted.clone();
        self.reconciler = self.load(&persisted)?;
        self.down = false;
        self.trace.record(format!("{} RESTART (wall clock stepped {step_ms} ms)", self.clock()));
        // What the runtime and the data plane say about the persisted tasks and table, read
        // before anything new is started; then every machine resumes (a hook in flight runs
        // again, the routing table is pushed again), as the executor does after loading.
        let adoptions = self.adoptions();
        let effects = self.reconciler.resume(self.cp_now());
        self.after_decision(effects)?;
        for observation in adoptions {
            self.deliver(observation)?;
        }
        self.arm_pollers();
        Ok(())
    }

    /// What recovery tells the reconciler about the world, and what the shell does itself:
    /// stopping again what was being stopped, removing what nobody knows.
    fn adoptions(&mut self) -> Vec<Observation> {
        let mut observations = Vec::new();
        let mut stop_again = Vec::new();
        for task in self.reconciler.tasks() {
            let listed = self.runtime.tasks.get(&task.id);
            let id = task.id.clone();
            match (task.last_status, listed) {
                (TaskStatus::Provisioning, Some(listed)) => {
                    observations.push(Observation::TaskStarted {
                        task_id: id.clone(),
                        handle: format!("proc-{id}"),
                        addr: Some(listed.addr),
                    })
                }
                (TaskStatus::Provisioning, None) => {
                    observations.push(Observation::TaskFailedToStart {
                        task_id: id,
                        reason: "its start was lost when the control plane stopped".into(),
                    })
                }
                (TaskStatus::Running, None) => observations.push(Observation::TaskInspected {
                    task_id: id,
                    state: reconciler::TaskProbe::Gone,
                }),
                (TaskStatus::Stopping, Some(_)) => stop_again.push(id),
                (TaskStatus::Stopping, None) => {
                    observations.push(Observation::TaskStopped { task_id: id })
                }
                _ => {}
            }
        }
        let unknown: Vec<String> = self
            .runtime
            .tasks
            .keys()
            .filter(|id| {
                self.reconciler.task(id).is_none_or(|t| t.last_status == TaskStatus::Stopped)
            })
            .cloned()
            .collect();
        for id in unknown {
            self.trace.record(format!("  recovery removes unknown task {id}"));
            self.runtime.tasks.remove(&id);
        }
        for task_id in stop_again {
            *self.stops_in_flight.entry(task_id.clone()).or_default() += 1;
            self.schedule(Duration::ZERO, Event::Perform(Effect::StopTask { task_id }));
        }
        let version = self.reconciler.routes_version();
        observations.push(if self.lb.served_version >= version {
            Observation::RoutesApplied { version }
        } else {
            Observation::RoutesFailed { version, error: "not served after a restart".into() }
        });
        observations
    }
}
