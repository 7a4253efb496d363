//! What happened, as one line per event: the last lines are kept to explain a violation, and a
//! hash of every line proves that a seed replays exactly.

use std::collections::VecDeque;
use std::fmt::Write as _;

use reconciler::{Command, Effect, Observation, RoutingView};

/// How many of the latest events a violation prints.
pub const TRACE_TAIL: usize = 30;

#[derive(Clone, Debug, Default)]
pub struct Trace {
    tail: VecDeque<String>,
    /// FNV-1a over every line ever recorded, each followed by a newline.
    hash: u64,
    lines: u64,
    /// `SIM_TRACE=1`: every line goes to stderr as well, to read a replay whole.
    echo: bool,
}

impl Trace {
    pub fn new() -> Trace {
        let echo = std::env::var_os("SIM_TRACE").is_some();
        Trace { tail: VecDeque::new(), hash: 0xCBF2_9CE4_8422_2325, lines: 0, echo }
    }

    pub fn record(&mut self, line: String) {
        for byte in line.bytes().chain(std::iter::once(b'\n')) {
            self.hash = (self.hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01B3);
        }
        self.lines += 1;
        if self.echo {
            eprintln!("{line}");
        }
        if self.tail.len() == TRACE_TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }

    pub fn lines(&self) -> u64 {
        self.lines
    }

    pub fn tail(&self) -> impl Iterator<Item = &String> {
        self.tail.iter()
    }
}

/// One observation on one line; the bulky ones (health reports, declarations) summarised.
pub fn observation(observation: &Observation) -> String {
    match observation {
        Observation::TargetHealth(report) => {
            let mut line = format!("TargetHealth v{}", report.version);
            for (tg, targets) in &report.target_groups {
                let _ = write!(line, " {tg}:");
                for t in targets {
                    let _ = write!(line, " {}={:?}", t.addr.port(), t.state);
                }
            }
            line
        }
        Observation::Command(Command::Declare(declared)) => {
            let counts: Vec<String> =
                declared.services.iter().map(|(n, s)| format!("{n}={}", s.desired_count)).collect();
            format!("Declare {}", counts.join(" "))
        }
        other => format!("{other:?}"),
    }
}

/// One effect on one line; a routing table summarised.
pub fn effect(effect: &Effect) -> String {
    match effect {
        Effect::PushRoutes { version, view } => format!("PushRoutes v{version} {}", routes(view)),
        Effect::Rollout { deployment_id, effect } => format!("{deployment_id}: {effect}"),
        other => format!("{other:?}"),
    }
}

fn routes(view: &RoutingView) -> String {
    let mut line = String::new();
    for (key, r) in &view.groups {
        let _ = write!(
            line,
            "{key}[blue={} prod={}% test={} preview={}] ",
            r.blue_target_group,
            r.production_green_percent,
            if r.test_to_green { "green" } else { "blue" },
            r.deployment_in_progress
        );
    }
    for (tg, addrs) in &view.targets {
        let ports: Vec<String> = addrs.iter().map(|a| a.port().to_string()).collect();
        let _ = write!(line, "{tg}:{} ", ports.join(","));
    }
    line.trim_end().to_string()
}
