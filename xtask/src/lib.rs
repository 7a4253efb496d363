//! What `cargo xtask` runs that tests also run: `tidy`, the workspace's mechanical checks.

pub mod tidy;
