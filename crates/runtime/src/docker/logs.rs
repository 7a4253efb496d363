//! Copies a container's stdout and stderr from the engine into its task log file, the same file
//! layout the process runtime uses, so `cutover logs` works alike on both.
//!
//! The engine's log stream is read with timestamps; each entry's timestamp is stripped and the
//! last one written is kept in `<container>.log.cursor`, so a control plane that adopts the
//! container after a restart resumes where the previous one stopped. The cursor is saved when
//! the stream goes quiet (and at least every second), after the entries are written: an entry
//! is never lost, and after a crash at most the last fraction of a second may be repeated.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{InspectContainerOptions, LogsOptions};
use futures_util::StreamExt;

use crate::process::store;

const SAVE_WHEN_QUIET: Duration = Duration::from_millis(200);
const SAVE_AT_LEAST_EVERY: Duration = Duration::from_secs(1);

/// A point in time as (seconds since the epoch, nanoseconds).
pub type Stamp = (i64, u32);

pub fn cursor_file(dir: &Path, container: &str) -> PathBuf {
    dir.join(format!("{container}.log.cursor"))
}

fn read_cursor(path: &Path) -> Option<Stamp> {
    let text = std::fs::read_to_string(path).ok()?;
    let (s, n) = text.trim().split_once('.')?;
    Some((s.parse().ok()?, n.parse().ok()?))
}

fn save_cursor(path: &Path, stamp: Stamp) {
    let tmp = path.with_extension("cursor.tmp");
    let ok = std::fs::write(&tmp, format!("{}.{:09}\n", stamp.0, stamp.1))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = ok {
        tracing::warn!(path = %path.display(), %e, "cannot save the log cursor");
    }
}

/// Copies until the container stopped or was removed, reconnecting when the stream breaks
/// while it still runs (the engine restarted, say).
pub async fn follow(docker: Docker, dir: PathBuf, container: String, id: String) {
    loop {
        copy(&docker, &dir, &container, &id).await;
        let running = docker
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
            .ok()
            .and_then(|r| r.state?.running)
            .unwrap_or(false);
        if !running {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Copies from the cursor to the end of one log stream.
async fn copy(docker: &Docker, dir: &Path, container: &str, id: &str) {
    let log_path = store::log_file(dir, container);
    let cursor_path = cursor_file(dir, container);
    let mut file = match std::fs::OpenOptions::new().create(true).append(true).open(&log_path) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(path = %log_path.display(), %e, "cannot open the container log");
            return;
        }
    };
    let mut cursor = read_cursor(&cursor_path);
    let mut saved = cursor;
    let options = LogsOptions {
        follow: true,
        stdout: true,
        stderr: true,
        since: cursor.map_or(0, |c| i32::try_from(c.0).unwrap_or(0)),
        until: 0,
        timestamps: true,
        tail: "all".into(),
    };
    let mut stream = docker.logs(id, Some(options));
    let mut last_save = tokio::time::Instant::now();
    loop {
        let next = tokio::time::timeout(SAVE_WHEN_QUIET, stream.next()).await;
        let quiet = next.is_err();
        match next {
            Err(_) => {}
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::debug!(%container, %e, "log stream ended");
                break;
            }
            Ok(Some(Ok(out))) => {
                let bytes = out.into_bytes();
                let (stamp, text) = split_timestamp(&bytes);
                if let (Some(s), Some(c)) = (stamp, cursor)
                    && s <= c
                {
                    continue;
                }
                if let Err(e) = file.write_all(text) {
                    tracing::warn!(path = %log_path.display(), %e, "cannot write the container log");
                }
                if stamp.is_some() {
                    cursor = stamp;
                }
            }
        }
        if cursor != saved && (quiet || last_save.elapsed() >= SAVE_AT_LEAST_EVERY) {
            if let Some(c) = cursor {
                save_cursor(&cursor_path, c);
            }
            saved = cursor;
            last_save = tokio::time::Instant::now();
        }
    }
    if cursor != saved
        && let Some(c) = cursor
    {
        save_cursor(&cursor_path, c);
    }
}

/// Splits `2024-05-01T12:00:00.123456789Z rest` into the parsed stamp and `rest`.
fn split_timestamp(entry: &[u8]) -> (Option<Stamp>, &[u8]) {
    let Some(space) = entry.iter().position(|&b| b == b' ') else {
        return (None, entry);
    };
    match std::str::from_utf8(&entry[..space]).ok().and_then(parse_rfc3339) {
        Some(stamp) => (Some(stamp), &entry[space + 1..]),
        None => (None, entry),
    }
}

/// Parses an RFC 3339 timestamp as the engine writes it (UTC, 0 to 9 fraction digits) into
/// seconds since the epoch and nanoseconds (always positive, also before the epoch).
pub fn parse_rfc3339(s: &str) -> Option<Stamp> {
    let at: jiff::Timestamp = s.parse().ok()?;
    let (secs, nanos) = (at.as_second(), at.subsec_nanosecond());
    Some(if nanos < 0 { (secs - 1, (nanos + 1_000_000_000) as u32) } else { (secs, nanos as u32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_engine_timestamps() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(parse_rfc3339("2024-05-01T12:00:00.1234Z"), Some((1_714_564_800, 123_400_000)));
        assert_eq!(
            parse_rfc3339("2000-02-29T23:59:59.999999999Z"),
            Some((951_868_799, 999_999_999))
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
        // The engine's zero time, which a container that never finished reports.
        assert_eq!(parse_rfc3339("0001-01-01T00:00:00Z"), Some((-62_135_596_800, 0)));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59.25Z"), Some((-1, 250_000_000)));
    }

    #[test]
    fn splits_the_timestamp_off_an_entry() {
        let (stamp, rest) = split_timestamp(b"2024-05-01T12:00:00.5Z hello world\n");
        assert_eq!(stamp, Some((1_714_564_800, 500_000_000)));
        assert_eq!(rest, b"hello world\n");
        let (stamp, rest) = split_timestamp(b"no stamp here\n");
        assert_eq!(stamp, None);
        assert_eq!(rest, b"no stamp here\n");
    }
}
