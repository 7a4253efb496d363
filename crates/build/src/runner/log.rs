//! Build logs: the sink a caller plugs in, secret masking, and the size cap that keeps a chatty
//! build from filling the disk.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use model::Timestamp;

use crate::buildspec::PhaseType;

/// Where a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogStream {
    /// Output of the build's commands (stdout and stderr, merged in the order written).
    Output,
    /// The runner's own lines: `Running command …`, `Phase complete: …`.
    System,
}

/// One line of a build's log, already masked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub at: Timestamp,
    /// The phase running when the line was written; `None` before the first and after the last.
    pub phase: Option<PhaseType>,
    pub stream: LogStream,
    pub text: String,
}

impl LogLine {
    /// The line as CodeBuild prints it: runner lines carry a `[Container]` prefix.
    pub fn render(&self) -> String {
        match self.stream {
            LogStream::Output => self.text.clone(),
            LogStream::System => format!("[Container] {}", self.text),
        }
    }
}

/// Receives a build's log line by line, as it is written. Called from the task running the
/// build: a slow sink slows the build's output, it never loses lines below the cap.
pub trait LogSink: Send {
    fn line(&mut self, line: &LogLine);
}

impl<F: FnMut(&LogLine) + Send> LogSink for F {
    fn line(&mut self, line: &LogLine) {
        self(line)
    }
}

impl LogSink for tokio::sync::mpsc::UnboundedSender<LogLine> {
    fn line(&mut self, line: &LogLine) {
        // A receiver that went away no longer wants the log; the build goes on.
        let _ = self.send(line.clone());
    }
}

/// Keeps every line in memory; clones share the lines (hand one to `run`, read the other).
#[derive(Clone, Debug, Default)]
pub struct MemorySink(Arc<Mutex<Vec<LogLine>>>);

impl MemorySink {
    pub fn new() -> MemorySink {
        MemorySink::default()
    }

    pub fn lines(&self) -> Vec<LogLine> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The whole log rendered, one line per line.
    pub fn text(&self) -> String {
        self.lines().iter().map(|l| l.render() + "\n").collect()
    }

    /// The command output only, one line per line.
    pub fn output(&self) -> String {
        self.lines()
            .iter()
            .filter(|l| l.stream == LogStream::Output)
            .map(|l| l.text.clone() + "\n")
            .collect()
    }
}

impl LogSink for MemorySink {
    fn line(&mut self, line: &LogLine) {
        if let Ok(mut lines) = self.0.lock() {
            lines.push(line.clone());
        }
    }
}

/// What the log cost, reported in the result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Bytes of text delivered to the sink.
    pub bytes: u64,
    pub lines: u64,
    /// True when output was dropped because the log reached its cap.
    pub truncated: bool,
    pub dropped_bytes: u64,
}

/// Secret values shorter than this are not masked: replacing every `1` or `ab` in a log would
/// garble it without protecting anything.
pub const SECRET_LEN_MIN: usize = 4;

/// Replaces secret values with `***`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Masker {
    /// Longest first, so a secret that contains another is masked whole.
    values: Vec<String>,
}

impl Masker {
    /// `secrets` are (name, value); multi-line values are masked line by line, because the log
    /// is. Returns the masker and the names of secrets too short to mask.
    pub fn new<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a str)>) -> (Masker, Vec<String>) {
        let mut values: Vec<String> = Vec::new();
        let mut short = Vec::new();
        for (name, value) in secrets {
            if value.is_empty() {
                continue;
            }
            let mut any = false;
            for part in value.lines() {
                let part = part.trim_end_matches('\r');
                if part.chars().count() >= SECRET_LEN_MIN {
                    values.push(part.to_string());
                    any = true;
                }
            }
            if !any {
                short.push(name.to_string());
            }
        }
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        short.sort();
        short.dedup();
        (Masker { values }, short)
    }

    pub fn mask<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut out = Cow::Borrowed(text);
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = Cow::Owned(out.replace(v.as_str(), "***"));
            }
        }
        out
    }

    pub fn is_secret(&self, value: &str) -> bool {
        self.values.iter().any(|v| value.contains(v.as_str()))
    }
}

/// The runner's writer: masks, counts and caps what reaches the sink.
pub(crate) struct Logger<S> {
    sink: S,
    masker: Masker,
    cap: u64,
    stats: LogStats,
}

impl<S: LogSink> Logger<S> {
    pub fn new(sink: S, masker: Masker, cap: usize) -> Logger<S> {
        Logger { sink, masker, cap: cap as u64, stats: LogStats::default() }
    }

    pub fn masker(&self) -> &Masker {
        &self.masker
    }

    pub fn stats(&self) -> LogStats {
        self.stats
    }

    pub fn output(&mut self, phase: Option<PhaseType>, text: &str) {
        self.write(phase, LogStream::Output, text, false);
    }

    pub fn system(&mut self, phase: Option<PhaseType>, text: &str) {
        self.write(phase, LogStream::System, text, false);
    }

    /// A line that is delivered even past the cap (phase results, the build's end): there are a
    /// handful per build, and without them a truncated log would not say how the build ended.
    pub fn essential(&mut self, phase: Option<PhaseType>, text: &str) {
        self.write(phase, LogStream::System, text, true);
    }

    fn write(&mut self, phase: Option<PhaseType>, stream: LogStream, text: &str, essential: bool) {
        let text = self.masker.mask(text);
        let len = text.len() as u64 + 1;
        if !essential && self.stats.bytes + len > self.cap {
            if !self.stats.truncated {
                self.stats.truncated = true;
                let note = format!(
                    "log truncated: the build's log reached its limit of {} bytes; later output \
                     is not kept (the build goes on)",
                    self.cap
                );
                self.deliver(phase, LogStream::System, note);
            }
            self.stats.dropped_bytes += len;
            return;
        }
        self.deliver(phase, stream, text.into_owned());
    }

    fn deliver(&mut self, phase: Option<PhaseType>, stream: LogStream, text: String) {
        self.stats.bytes += text.len() as u64 + 1;
        self.stats.lines += 1;
        let line = LogLine { at: now(), phase, stream, text };
        self.sink.line(&line);
    }
}

/// The time from the one clock of the process ([`store::clock`]), so a build's times agree
/// with its pipeline's and a step of the wall clock moves neither.
pub(crate) fn now() -> Timestamp {
    Timestamp::from_millis(store::clock::now_ms())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_covers_multiline_values_and_skips_short_ones() {
        let (m, short) = Masker::new([("KEY", "line-one\nline-two"), ("PIN", "12"), ("T", "abcd")]);
        assert_eq!(m.mask("x line-one y line-two abcd"), "x *** y *** ***");
        assert_eq!(short, ["PIN"]);
        assert_eq!(m.mask("12"), "12");
    }

    #[test]
    fn the_cap_drops_output_once_with_one_marker() {
        let sink = MemorySink::new();
        let mut log = Logger::new(sink.clone(), Masker::default(), 20);
        for _ in 0..10 {
            log.output(None, "0123456789");
        }
        log.essential(None, "Phase complete");
        let lines = sink.lines();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[1].text.starts_with("log truncated"));
        assert_eq!(lines[2].text, "Phase complete");
        assert!(log.stats().truncated);
        assert_eq!(log.stats().dropped_bytes, 9 * 11);
    }
}
