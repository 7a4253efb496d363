//! cutover's shared vocabulary.
//!
//! Everything here is plain data plus the arithmetic that belongs to it (the traffic-shift schedule
//! of a deployment config, how a duration prints, how text from outside is bounded). No IO, no
//! clock, no serde: the crates at process boundaries (`routes`, `store`, the HTTP API) convert by
//! hand.

mod config;
pub mod glob;
mod lifecycle;
pub mod text;
mod time;

pub use config::{ConfigError, DeploymentConfig, PREDEFINED_CONFIGS, Shift, TrafficRouting};
pub use lifecycle::{DeploymentStatus, ErrorCode, LifecycleEvent, LifecycleEventStatus};
pub use time::{Timestamp, format_duration, parse_duration};
