//! A seeded whole-system simulation of cutover's control plane, in the manner of TigerBeetle's
//! VOPR and FoundationDB's simulation: the pure [`reconciler`] driven through thousands of random
//! deployments by simulated runtimes, a simulated load balancer, hooks, alarms, an API client and
//! a clock, with faults injected, and invariants checked after every step. Everything random is
//! drawn from one seed ([`rng::Rng`], SplitMix64 written here), and time is simulated, so a seed
//! is the same run forever and an hour of canaries takes milliseconds.
//!
//! # The world
//!
//! - **The control plane** is the reconciler plus a shell modelled on the real executor: it
//!   persists the reconciler's state (as JSON) after every decision and *before* performing its
//!   effects; each effect is performed in a task of its own that reports back, after a random
//!   latency, as an observation; it sleeps until the reconciler's next deadline or the next
//!   observation; it polls the load balancer's target health, the runtime for every RUNNING task,
//!   and the alarms (as `control::monitor` evaluates them), each about once a second (alarms every
//!   five).
//! - **The runtime** ([`world::Runtime`]) runs tasks on 127.0.0.1 ports that are reused once free,
//!   as the OS reuses them. A task may fail to start, exit, fail its container health check or
//!   answer the load balancer's checks with errors; each task definition is drawn good, flaky or
//!   broken (never healthy) when first deployed.
//! - **The load balancer** ([`world::LoadBalancer`]) serves the last table pushed *and* accepted
//!   (never an older version than it serves, the proxy's rule), checks its targets every 500 ms
//!   and changes a target's state after two agreeing checks (ALB's thresholds), so health reports
//!   lag the tasks by about a second; a target taken out of the table drains for up to 2 s.
//! - **Hooks** succeed, fail, or hang until their timeout; some report late (after their timeout,
//!   to be rejected). A process hook runs inside the control plane and dies with it; an HTTP hook
//!   is outside and reports whenever it finishes (lost if the API is down then).
//! - **Alarms** go to ALARM and back to OK at random times.
//! - **The client** creates deployments with random configurations (all-at-once, canary, linear;
//!   with or without a test listener, hooks, a ready wait, a termination wait; random auto
//!   rollback and install timeout; some ignoring alarms), stops them (with, without, or by their
//!   configuration's rollback, leftovers included), continues their waits, and scales services.
//!
//! # Faults, and which losses are real
//!
//! Each has a per-mille probability in [`Config`]:
//!
//! - **Crashes** of the control plane at any step: the reconciler is dropped with every effect
//!   in flight and every observation on its way, and reloaded from what was last persisted. Each
//!   effect in flight may or may not have reached the world first (a task started, a table
//!   served, a task stopped), with its report lost. Recovery then does what the real engine's
//!   `recover` does, with the reconciler's observations: a PROVISIONING task the runtime lists is
//!   reported started (else failed to start); a RUNNING task the runtime does not list is
//!   reported gone; a STOPPING task is stopped again (or reported stopped if gone); a task the
//!   runtime lists but the state does not know is stopped and removed by the shell; a routing
//!   version the load balancer does not serve is reported failed (so it is pushed again), one it
//!   serves is reported applied (its acknowledgement may be what was lost). Between reading the
//!   world and reporting it, [`reconciler::Reconciler::resume`] resumes every machine (a hook in
//!   flight runs again with a new execution id; the table is pushed again), as the executor does.
//! - **Lost observations** are only those the real system can lose: a poll that fails (health,
//!   task inspection, alarms: the next poll reports afresh), a push whose acknowledgement times
//!   out after the load balancer applied it (reported failed although served), a push the load
//!   balancer never got, an HTTP hook's callback while the API is down, and everything in flight
//!   at a crash. Inside one process, an effect's report is never lost (the executor's channel does
//!   not drop messages), so the simulation does not drop those outside crashes.
//! - **Reordered observations**: every report travels with its own random latency, so reports of
//!   different effects arrive in any order (a task's stop before an older push's answer, an old
//!   version's acknowledgement after a newer push). Reports of one poller stay in order: each
//!   poller is one loop.
//! - **Hooks that hang**, **tasks** that die, fail to start, fail their container check or turn
//!   unhealthy behind the load balancer.
//! - **Clock**: the reconciler only sees what `store::clock` gives: never backwards, advancing at
//!   the monotonic clock's rate within a process. So the simulation models long *pauses* (the
//!   process stalls, or the host is suspended and the monotonic clock stops with it, leaving the
//!   control plane's clock behind the world's) and, at a restart, wall-clock steps forward or
//!   backward, clamped to never earlier than the newest persisted time.
//!
//! # Invariants (checked after every step; a violation prints the seed, the step, the
//! # invariant and the last events)
//!
//! - **one active deployment per group**.
//! - **weight only onto a healthy green**: when the reconciler orders a table that *raises*
//!   production's weight on a group's green target group, that table lists green targets, and at
//!   least one green task is RUNNING and HEALTHY in the reconciler's view at that instant (its view
//!   is the latest health report, which lags the tasks: "never" is about what the control plane
//!   knew when it decided, not about a task that died since the last report). A rollback moves
//!   weight back to blue whatever blue's health, as on CodeDeploy.
//! - **a rollback is one routing change**: the first table ordered after a rollback (of a running
//!   deployment or of a leftover) has production and test traffic on blue and no preview.
//! - **a hook after a routing event sees that routing served**: when `AfterAllowTestTraffic`'s
//!   hook starts, the load balancer serves test traffic on green; when `AfterAllowTraffic`'s
//!   does, it serves all of production on green.
//! - **no task duplicated**: a task set never has more live tasks than it desires (extra ones are
//!   deactivated at once, and drain; the drain is the replacement window); **no task orphaned**:
//!   every task alive in the runtime is known to the reconciler as not stopped, or being stopped.
//! - **the reconciler never spins**: after at most two ticks at its next deadline, the next one
//!   is later (the second for a drain of zero seconds that a deployment began in the first).
//! - **every started deployment ends**: after the random phase, faults stop (no crash, no task
//!   fault, alarms OK, hooks succeed, no commands) and time runs on; every deployment must finish
//!   within [`client::bound`] of its configuration, and then the world converges: every task set
//!   at its count with running tasks (except a broken revision's), drained task sets retired,
//!   the load balancer serving the latest table, no task the reconciler does not know.
//! - **persisted state round-trips and reloading changes nothing**: on a sample of steps, the
//!   state goes through JSON and must compare equal, and the reloaded copy must take the same
//!   decisions on the next observation as the original.
//!
//! # Running it
//!
//! `cargo test -p simulation` runs a fixed budget of seeds; `SIM_SEED=N cargo test -p simulation
//! -- replay` replays one; `cargo run -p simulation --release -- --seeds 100000` runs a campaign.
//! See the crate's README.

mod checks;
pub mod client;
mod recovery;
pub mod rng;
mod shell;
mod sim;
pub mod trace;
pub mod world;

use std::fmt;

pub use sim::run;

/// Fault rates (per mille, per opportunity) and the length of a run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Steps of the random phase; the quiescent phase that follows runs until everything ends.
    pub steps: u64,
    /// Per step: the control plane crashes.
    pub crash: u32,
    /// Per step: the control plane pauses (or its host is suspended).
    pub pause: u32,
    /// Per poll: it fails.
    pub poll_lost: u32,
    /// Per push: the load balancer does not get it.
    pub push_unreachable: u32,
    /// Per push: the load balancer applies it but the acknowledgement times out.
    pub push_ack_lost: u32,
    /// Per task start: it fails.
    pub start_fails: u32,
    /// Per task: it exits at some point.
    pub task_dies: u32,
    /// Per task: its container health check fails.
    pub container_unhealthy: u32,
    /// Per task: the load balancer's checks of it fail at some point.
    pub lb_unhealthy: u32,
    /// Per hook execution: it fails, or hangs.
    pub hook_fails: u32,
    pub hook_hangs: u32,
    /// Per step: the persisted state is reloaded beside the live one and both are compared.
    pub reload_check: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            steps: 3_000,
            crash: 4,
            pause: 2,
            poll_lost: 50,
            push_unreachable: 50,
            push_ack_lost: 50,
            start_fails: 30,
            task_dies: 60,
            container_unhealthy: 30,
            lb_unhealthy: 40,
            hook_fails: 40,
            hook_hangs: 30,
            reload_check: 60,
        }
    }
}

/// What one run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub seed: u64,
    pub steps: u64,
    /// Simulated time, in milliseconds.
    pub simulated_ms: u64,
    pub deployments: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub stopped: u64,
    pub rolled_back: u64,
    pub rejected_commands: u64,
    pub crashes: u64,
    pub pauses: u64,
    pub reload_checks: u64,
    /// The largest persisted state, in bytes.
    pub state_bytes_max: u64,
    /// FNV-1a of every event line: equal hashes mean identical runs.
    pub trace_hash: u64,
}

/// An invariant that did not hold: everything needed to replay and understand it.
#[derive(Clone, Debug)]
pub struct Violation {
    pub seed: u64,
    pub step: u64,
    /// The world's and the control plane's times since the start, as trace lines show them.
    pub at: String,
    pub invariant: &'static str,
    pub detail: String,
    /// The last events, oldest first.
    pub tail: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} step {} ({}): invariant `{}` violated: {}",
            self.seed, self.step, self.at, self.invariant, self.detail
        )?;
        writeln!(f, "last {} events:", self.tail.len())?;
        for line in &self.tail {
            writeln!(f, "  {line}")?;
        }
        write!(f, "replay: SIM_SEED={} cargo test -p simulation -- replay", self.seed)
    }
}
