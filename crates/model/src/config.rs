//! Deployment configurations: how production traffic moves from blue to green, and when.
//!
//! The five `CodeDeployDefault.ECS*` configs are built in with AWS's exact parameters; custom ones
//! use the same three shapes. AWS only accepts whole minutes for intervals; cutover also accepts
//! seconds so that a canary can be exercised in a demo or a test in a few seconds.

use std::fmt;
use std::time::Duration;

/// The shape of a traffic shift.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrafficRouting {
    /// 100% of production traffic at once.
    AllAtOnce,
    /// `percent` first, then the rest after `interval`.
    Canary { percent: u8, interval: Duration },
    /// `percent` more every `interval` until 100%.
    Linear { percent: u8, interval: Duration },
}

/// One step of a schedule: `after` the start of the shift, green carries `green_percent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shift {
    pub after: Duration,
    pub green_percent: u8,
}

/// A named deployment configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeploymentConfig {
    pub name: String,
    pub routing: TrafficRouting,
    /// A shadow phase before the shift (cutover's own; CodeDeploy has none).
    pub mirror: Option<MirrorPhase>,
}

/// A deployment's shadow phase (cutover's own): when `AllowTraffic` begins, a copy of `percent`
/// of production's requests goes to green for `duration`, while every answer still comes from
/// blue; then the shift begins, its schedule `duration` later than without the phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MirrorPhase {
    /// 1 to 100.
    pub percent: u8,
    pub duration: Duration,
}

impl MirrorPhase {
    /// The longest shadow phase: CodeDeploy's limit on a whole shift.
    pub const DURATION_MAX: Duration = SCHEDULE_SPAN_MAX;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    PercentOutOfRange {
        percent: u32,
    },
    IntervalZero,
    /// AWS caps the span from first to last shift at 2880 minutes (two days).
    ScheduleTooLong {
        total: Duration,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::PercentOutOfRange { percent } => write!(
                f,
                "percentage {percent} is out of range; a canary or linear step must be 1 to 99 \
                 percent (use AllAtOnce for 100)"
            ),
            ConfigError::IntervalZero => {
                write!(f, "interval must be longer than zero; write it like `10s` or `5m`")
            }
            ConfigError::ScheduleTooLong { total } => write!(
                f,
                "the shift would take {}, longer than the 2880-minute limit; use a larger \
                 percentage or a shorter interval",
                crate::format_duration(*total)
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Longest span from first to last shift AWS allows.
const SCHEDULE_SPAN_MAX: Duration = Duration::from_secs(2880 * 60);

/// The predefined configs, by their AWS names. `ECSAllAtOnce` is the default of a group that
/// names none.
pub const PREDEFINED_CONFIGS: [(&str, TrafficRouting); 5] = [
    ("CodeDeployDefault.ECSAllAtOnce", TrafficRouting::AllAtOnce),
    (
        "CodeDeployDefault.ECSLinear10PercentEvery1Minutes",
        TrafficRouting::Linear { percent: 10, interval: Duration::from_secs(60) },
    ),
    (
        "CodeDeployDefault.ECSLinear10PercentEvery3Minutes",
        TrafficRouting::Linear { percent: 10, interval: Duration::from_secs(180) },
    ),
    (
        "CodeDeployDefault.ECSCanary10Percent5Minutes",
        TrafficRouting::Canary { percent: 10, interval: Duration::from_secs(300) },
    ),
    (
        "CodeDeployDefault.ECSCanary10Percent15Minutes",
        TrafficRouting::Canary { percent: 10, interval: Duration::from_secs(900) },
    ),
];

impl DeploymentConfig {
    /// The default config of a deployment group that names none.
    pub const DEFAULT_NAME: &'static str = "CodeDeployDefault.ECSAllAtOnce";

    /// A built-in config by its exact AWS name.
    pub fn predefined(name: &str) -> Option<DeploymentConfig> {
        PREDEFINED_CONFIGS.iter().find(|(n, _)| *n == name).map(|(n, routing)| DeploymentConfig {
            name: n.to_string(),
            routing: *routing,
            mirror: None,
        })
    }

    /// Whether a name is reserved for built-ins (custom configs may not start with it).
    pub fn is_reserved_name(name: &str) -> bool {
        name.starts_with("CodeDeployDefault.")
    }

    /// A custom config, validated.
    pub fn custom(name: &str, routing: TrafficRouting) -> Result<DeploymentConfig, ConfigError> {
        routing.validate()?;
        Ok(DeploymentConfig { name: name.to_string(), routing, mirror: None })
    }
}

impl TrafficRouting {
    pub fn validate(&self) -> Result<(), ConfigError> {
        match *self {
            TrafficRouting::AllAtOnce => Ok(()),
            TrafficRouting::Canary { percent, interval }
            | TrafficRouting::Linear { percent, interval } => {
                if !(1..=99).contains(&percent) {
                    return Err(ConfigError::PercentOutOfRange { percent: percent.into() });
                }
                if interval.is_zero() {
                    return Err(ConfigError::IntervalZero);
                }
                let total = self.total_duration();
                if total > SCHEDULE_SPAN_MAX {
                    return Err(ConfigError::ScheduleTooLong { total });
                }
                Ok(())
            }
        }
    }

    /// Every weight change of the shift, in order, starting at offset zero and ending at 100%.
    ///
    /// Linear: `n = ceil(100 / p)` shifts; shift `k` (1-based) happens at `(k - 1) * interval` and
    /// sets green to `min(100, k * p)`. No wait after reaching 100%.
    pub fn schedule(&self) -> Vec<Shift> {
        match *self {
            TrafficRouting::AllAtOnce => vec![Shift { after: Duration::ZERO, green_percent: 100 }],
            TrafficRouting::Canary { percent, interval } => vec![
                Shift { after: Duration::ZERO, green_percent: percent },
                Shift { after: interval, green_percent: 100 },
            ],
            TrafficRouting::Linear { percent, interval } => {
                let p = u32::from(percent.max(1));
                let n = 100_u32.div_ceil(p);
                (1..=n)
                    .map(|k| Shift {
                        after: interval.saturating_mul(k - 1),
                        green_percent: (k * p).min(100) as u8,
                    })
                    .collect()
            }
        }
    }

    /// Time from the first to the last shift.
    pub fn total_duration(&self) -> Duration {
        self.schedule().last().map_or(Duration::ZERO, |s| s.after)
    }
}

impl fmt::Display for TrafficRouting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrafficRouting::AllAtOnce => f.write_str("AllAtOnce"),
            TrafficRouting::Canary { percent, interval } => {
                write!(
                    f,
                    "TimeBasedCanary {percent}% then 100% after {}",
                    crate::format_duration(*interval)
                )
            }
            TrafficRouting::Linear { percent, interval } => {
                write!(f, "TimeBasedLinear {percent}% every {}", crate::format_duration(*interval))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(routing: TrafficRouting) -> String {
        routing
            .schedule()
            .iter()
            .map(|s| format!("{}={}", crate::format_duration(s.after), s.green_percent))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn predefined_schedules_match_aws() {
        let schedule = |name| render(DeploymentConfig::predefined(name).unwrap().routing);
        assert_eq!(schedule("CodeDeployDefault.ECSAllAtOnce"), "0s=100");
        assert_eq!(schedule("CodeDeployDefault.ECSCanary10Percent5Minutes"), "0s=10 5m=100");
        assert_eq!(schedule("CodeDeployDefault.ECSCanary10Percent15Minutes"), "0s=10 15m=100");
        assert_eq!(
            schedule("CodeDeployDefault.ECSLinear10PercentEvery1Minutes"),
            "0s=10 1m=20 2m=30 3m=40 4m=50 5m=60 6m=70 7m=80 8m=90 9m=100"
        );
        let linear3 =
            DeploymentConfig::predefined("CodeDeployDefault.ECSLinear10PercentEvery3Minutes");
        assert_eq!(linear3.unwrap().routing.total_duration(), Duration::from_secs(27 * 60));
        // The singular spelling is a well-known trap; it is not a built-in.
        assert!(
            DeploymentConfig::predefined("CodeDeployDefault.ECSLinear10PercentEvery1Minute")
                .is_none()
        );
    }

    #[test]
    fn linear_with_a_percentage_that_does_not_divide_100_ends_at_100() {
        let routing = TrafficRouting::Linear { percent: 30, interval: Duration::from_secs(60) };
        assert_eq!(render(routing), "0s=30 1m=60 2m=90 3m=100");
    }

    #[test]
    fn custom_configs_are_validated() {
        let canary =
            |percent| TrafficRouting::Canary { percent, interval: Duration::from_secs(10) };
        assert_eq!(canary(0).validate(), Err(ConfigError::PercentOutOfRange { percent: 0 }));
        assert_eq!(canary(100).validate(), Err(ConfigError::PercentOutOfRange { percent: 100 }));
        assert!(canary(20).validate().is_ok());
        let zero = TrafficRouting::Linear { percent: 10, interval: Duration::ZERO };
        assert_eq!(zero.validate(), Err(ConfigError::IntervalZero));
        let long = TrafficRouting::Linear { percent: 1, interval: Duration::from_secs(3600) };
        assert!(matches!(long.validate(), Err(ConfigError::ScheduleTooLong { .. })));
    }
}
