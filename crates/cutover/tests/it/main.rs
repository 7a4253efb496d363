//! End-to-end tests: the real `cutover` binary, real processes, real sockets.
//!
//! Each test starts its own `cutover up` on free loopback ports with its own data directory, so
//! tests run in parallel without sharing anything.

mod access;
mod access_oidc;
mod acme;
mod alarm_window;
mod alarms;
mod apply;
mod apply_disk_full;
mod bad_input;
mod cli;
mod clock;
mod connection_limits;
mod console;
mod console_pipelines;
mod console_sso;
mod disk_full;
mod docker;
mod docs_examples;
mod down_up;
mod git_env;
mod harness;
mod hook_token;
mod hung_data_plane;
mod install_timeout;
mod judge;
mod lb_died;
mod listener_rules;
mod orphan_down;
mod pipeline;
mod pipeline_restart;
mod referenced_files;
mod release;
mod restart;
mod restart_records;
mod retry_on_blue;
mod scheduler;
mod secrets;
mod shadow_traffic;
mod swarm;
mod swarm_image;
mod swarm_lb;
mod swarm_lb_fixture;
mod swarm_metrics;
mod swarm_pipeline;
mod watch_stream;
