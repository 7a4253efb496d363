//! One long-lived shell per build, fed command by command, as CodeBuild 0.2 runs a buildspec:
//! `export`, `cd` and plain variables carry over from one command (and phase) to the next.
//!
//! Protocol: the shell reads its script from stdin. Each command is sent as
//! `eval '<command>' </dev/null 9>&-`, followed by a `printf` of a random marker and `$?` on fd 9
//! (a copy of stdout made at start). `eval` keeps a command's syntax errors to that command,
//! `</dev/null` keeps commands from eating the script, and closing fd 9 for the command means
//! only the runner writes markers. Stderr is merged into stdout so lines keep their order.
//! The shell leads its own process group, so a timeout or stop kills everything it started.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::buildspec::Shell as ShellKind;

/// Bytes of the end of a line kept while the rest of an overlong line is dropped: enough to find
/// the marker that ends it.
const TAIL_KEEP: usize = 128;

#[derive(Debug)]
pub(crate) enum Event {
    Line(String),
    Done(i32),
}

/// How one command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It ran to the end with this exit status.
    Exited(i32),
    /// The shell itself ended while running it (`exit`, `set -e`, a signal).
    ShellExited(i32),
    TimedOut,
    Stopped,
    /// The command could not be handed to the shell.
    Fault(String),
}

pub(crate) struct Shell {
    child: Child,
    pgid: i32,
    stdin: Option<ChildStdin>,
    events: mpsc::Receiver<Event>,
    readers: Vec<JoinHandle<()>>,
    marker: String,
    exited: Option<ExitStatus>,
    killed: bool,
}

/// Finds the shell's program without relying on the build's own PATH.
pub(crate) fn find_program(kind: ShellKind) -> Option<PathBuf> {
    let name = kind.program();
    let mut dirs: Vec<PathBuf> =
        ["/bin", "/usr/bin", "/usr/local/bin"].iter().map(PathBuf::from).collect();
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

impl Shell {
    pub async fn spawn(
        program: &Path,
        kind: ShellKind,
        cwd: &Path,
        env: &[(String, String)],
        line_max: usize,
    ) -> io::Result<Shell> {
        let mut cmd = Command::new(program);
        if kind == ShellKind::Bash {
            cmd.args(["--noprofile", "--norc"]);
        }
        cmd.arg("-s")
            .current_dir(cwd)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let pgid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| io::Error::other("the shell exited as it started"))?;
        let marker = format!("__cutover_done_{:032x}:", rand::random::<u128>());
        let (tx, events) = mpsc::channel(256);
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(read_lines(out, marker.clone(), tx.clone(), line_max)));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(read_lines(err, marker.clone(), tx, line_max)));
        }
        let mut stdin = child.stdin.take();
        if let Some(s) = stdin.as_mut() {
            s.write_all(b"exec 2>&1 9>&1\n").await?;
            s.flush().await?;
        }
        Ok(Shell { child, pgid, stdin, events, readers, marker, exited: None, killed: false })
    }

    /// Runs one command to its end, handing each output line to `on_line`.
    pub async fn run(
        &mut self,
        command: &str,
        deadline: Instant,
        stop: &mut Option<watch::Receiver<bool>>,
        mut on_line: impl FnMut(String),
    ) -> Outcome {
        if Instant::now() >= deadline {
            self.kill();
            return Outcome::TimedOut;
        }
        if self.exited.is_some() || self.killed {
            return Outcome::Fault("the build's shell is no longer running".to_string());
        }
        let script = format!(
            "eval {} </dev/null 9>&-; __cutover_status=$?; printf '%s%d\\n' '{}' \"$__cutover_status\" >&9\n",
            single_quote(command),
            self.marker
        );
        let written = match self.stdin.as_mut() {
            Some(stdin) => match stdin.write_all(script.as_bytes()).await {
                Ok(()) => stdin.flush().await,
                Err(e) => Err(e),
            },
            None => Err(io::Error::other("stdin closed")),
        };
        if let Err(e) = written {
            // A shell that died between commands shows up here as a broken pipe.
            return match tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await {
                Ok(Ok(status)) => {
                    self.exited = Some(status);
                    Outcome::ShellExited(exit_code(status))
                }
                _ => Outcome::Fault(format!("could not send the command to the shell: {e}")),
            };
        }
        loop {
            tokio::select! {
                biased;
                event = self.events.recv() => match event {
                    Some(Event::Line(line)) => on_line(line),
                    Some(Event::Done(status)) => return Outcome::Exited(status),
                    None => {
                        // Every output pipe closed: the shell is gone or going.
                        let status = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
                        return match status {
                            Ok(Ok(status)) => {
                                self.exited = Some(status);
                                Outcome::ShellExited(exit_code(status))
                            }
                            _ => {
                                self.kill();
                                Outcome::ShellExited(-1)
                            }
                        };
                    }
                },
                status = self.child.wait(), if self.exited.is_none() => {
                    let status = match status {
                        Ok(s) => s,
                        Err(e) => return Outcome::Fault(format!("lost the shell: {e}")),
                    };
                    self.exited = Some(status);
                    // Output written just before the exit is still in the pipe.
                    let drain_until = Instant::now() + Duration::from_millis(250);
                    while let Ok(Some(event)) = tokio::time::timeout_at(drain_until, self.events.recv()).await {
                        match event {
                            Event::Line(line) => on_line(line),
                            Event::Done(code) => return Outcome::Exited(code),
                        }
                    }
                    // Leftover background processes would keep pipes open; they go with the shell.
                    self.kill();
                    return Outcome::ShellExited(exit_code(status));
                }
                () = tokio::time::sleep_until(deadline) => {
                    self.kill();
                    return Outcome::TimedOut;
                }
                () = stopped(stop) => {
                    self.kill();
                    return Outcome::Stopped;
                }
            }
        }
    }

    /// SIGKILL to the shell's whole process group: the shell, its commands and whatever they
    /// started in the background.
    pub fn kill(&mut self) {
        self.killed = true;
        // ESRCH (nothing left in the group) is the expected case after a clean exit.
        let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
    }

    /// Ends the shell: EOF on its script, a moment to exit, then the group is killed so nothing
    /// it started outlives the build.
    pub async fn close(mut self) {
        drop(self.stdin.take());
        if self.exited.is_none() && !self.killed {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
        }
        self.kill();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
        for reader in &self.readers {
            reader.abort();
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        // A build future dropped mid-command (its caller gave up) must not leave processes.
        if !self.killed {
            self.kill();
        }
        for reader in &self.readers {
            reader.abort();
        }
    }
}

/// Resolves when a stop is requested; never when there is no stop signal or its sender is gone.
pub(crate) async fn stopped(stop: &mut Option<watch::Receiver<bool>>) {
    let Some(rx) = stop.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// `'…'` with embedded single quotes closed, escaped and reopened.
pub(crate) fn single_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Splits a stream into lines (each at most `line_max` bytes, the rest of a longer line dropped
/// and counted), recognising the completion marker even at the end of an unterminated line.
async fn read_lines(
    mut reader: impl AsyncRead + Unpin,
    marker: String,
    tx: mpsc::Sender<Event>,
    line_max: usize,
) {
    let marker = marker.into_bytes();
    let mut chunk = vec![0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    let mut tail: Vec<u8> = Vec::new();
    let mut dropped: usize = 0;
    loop {
        let n = match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut rest = &chunk[..n];
        while !rest.is_empty() {
            let (piece, newline) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            rest = if newline { &rest[piece.len() + 1..] } else { &[] };
            if dropped == 0 && line.len() + piece.len() <= line_max {
                line.extend_from_slice(piece);
            } else {
                let room = line_max.saturating_sub(line.len()).min(piece.len());
                line.extend_from_slice(&piece[..room]);
                if dropped == 0 {
                    tail.clear();
                    tail.extend_from_slice(&line[line.len().saturating_sub(TAIL_KEEP)..]);
                }
                dropped += piece.len() - room;
                tail.extend_from_slice(&piece[piece.len().saturating_sub(TAIL_KEEP)..]);
                if tail.len() > TAIL_KEEP {
                    tail.drain(..tail.len() - TAIL_KEEP);
                }
            }
            if newline {
                let events = finish_line(&mut line, &tail, dropped, &marker);
                dropped = 0;
                tail.clear();
                for event in events {
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
    if !line.is_empty() || dropped > 0 {
        for event in finish_line(&mut line, &tail, dropped, &marker) {
            if tx.send(event).await.is_err() {
                return;
            }
        }
    }
}

fn finish_line(line: &mut Vec<u8>, tail: &[u8], dropped: usize, marker: &[u8]) -> Vec<Event> {
    let mut events = Vec::new();
    let whole = std::mem::take(line);
    let searched: &[u8] = if dropped > 0 { tail } else { &whole };
    let found = find(searched, marker).map(|i| {
        let digits = &searched[i + marker.len()..];
        let code = std::str::from_utf8(digits).ok().and_then(|s| s.trim().parse::<i32>().ok());
        (i, code)
    });
    let text_part: &[u8] = match found {
        Some((i, _)) if dropped == 0 => &whole[..i],
        _ => &whole,
    };
    let mut text = String::from_utf8_lossy(text_part).into_owned();
    if text.ends_with('\r') {
        text.pop();
    }
    if dropped > 0 {
        // The marker itself was counted among the dropped bytes; it is not output.
        let not_output = found.map(|(i, _)| searched.len() - i).unwrap_or(0);
        let dropped = dropped.saturating_sub(not_output);
        text.push_str(&format!(" … [line truncated: {dropped} more bytes not shown]"));
    }
    if !(text.is_empty() && found.is_some()) {
        events.push(Event::Line(text));
    }
    if let Some((_, code)) = found {
        events.push(Event::Done(code.unwrap_or(-1)));
    }
    events
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: &[u8], line_max: usize) -> Vec<String> {
        let (tx, mut rx) = mpsc::channel(64);
        read_lines(input, "@@M:".to_string(), tx, line_max).await;
        let mut out = Vec::new();
        while let Some(e) = rx.recv().await {
            out.push(match e {
                Event::Line(l) => format!("line {l}"),
                Event::Done(c) => format!("done {c}"),
            });
        }
        out
    }

    #[tokio::test]
    async fn markers_end_commands_even_after_unterminated_output() {
        let got = lines_of(b"a\nb@@M:0\n@@M:3\nc\r\n", 100).await;
        assert_eq!(got, ["line a", "line b", "done 0", "done 3", "line c"]);
    }

    #[tokio::test]
    async fn overlong_lines_are_cut_and_still_end_with_their_marker() {
        let mut input = vec![b'x'; 1000];
        input.extend_from_slice(b"@@M:1\nnext\n");
        let got = lines_of(&input, 10).await;
        assert_eq!(
            got,
            ["line xxxxxxxxxx … [line truncated: 990 more bytes not shown]", "done 1", "line next"]
        );
    }

    #[test]
    fn single_quoting_survives_quotes() {
        assert_eq!(single_quote("echo 'a' b"), "'echo '\\''a'\\'' b'");
    }
}
