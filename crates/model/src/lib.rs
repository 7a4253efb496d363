//! cutover's shared vocabulary.
//!
//! Everything here is plain data plus the arithmetic that belongs to it (the traffic-shift schedule
//! of a deployment config, how a duration prints, how text from outside is bounded). No IO, no
//! clock. Serde only for [`Timestamp`] (milliseconds, the one form every persisted document uses);
//! the crates at process boundaries (`routes`, `store`, the HTTP API) convert the rest by hand.

pub mod access;
mod config;
pub mod glob;
mod lifecycle;
mod status;
pub mod text;
mod time;

pub use config::{
    ConfigError, DeploymentConfig, MirrorPhase, PREDEFINED_CONFIGS, Shift, TrafficRouting,
};
pub use lifecycle::{DeploymentStatus, ErrorCode, LifecycleEvent, LifecycleEventStatus};
pub use status::{DesiredStatus, RuntimeKind, TaskHealth, TaskSetStatus, TaskStatus};
pub use time::{DurationError, Timestamp, format_duration, parse_duration};
