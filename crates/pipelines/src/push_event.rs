//! What a GitHub- or Gitea-style webhook body says: a push to a branch at a commit, something to
//! ignore (another event, a tag, a deleted branch), or a body that is not a push event. Pure, so
//! that the webhook handler only decides what to do with it and the fuzz target
//! (`pipelines::fuzzing::webhook_payload`) can check it on any bytes.

use crate::git;

/// A push to a branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PushEvent {
    /// Without `refs/heads/`; a name git accepts for a branch (see [`is_branch_name`]).
    pub branch: String,
    /// The pushed commit (`after`), a full commit id.
    pub commit: String,
    /// `pusher.name`, `pusher.login` or `sender.login`; empty when none is given.
    pub pushed_by: String,
}

/// What a webhook asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Payload {
    Push(PushEvent),
    /// Nothing to start, and why.
    Ignored(String),
}

/// A body that claims to be a push event but cannot be one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PayloadError {
    #[error("the push event is not JSON")]
    NotJson,
    #[error("the push event has no `ref`")]
    NoRef,
    #[error("`after` is not a commit id")]
    NotACommit,
    #[error("the pushed branch `{0}` is not a branch name git accepts")]
    NotABranchName(String),
}

/// Reads a webhook body sent with event `event` (`X-GitHub-Event`, `X-Gitea-Event`; `push` when
/// the sender names none).
pub(crate) fn read_payload(event: &str, body: &[u8]) -> Result<Payload, PayloadError> {
    if event != "push" {
        return Ok(Payload::Ignored(format!("`{event}` events do not start pipelines")));
    }
    let payload: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| PayloadError::NotJson)?;
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
    let reference = text(&payload["ref"]).ok_or(PayloadError::NoRef)?;
    let Some(branch) = reference.strip_prefix("refs/heads/") else {
        return Ok(Payload::Ignored("not a branch push".to_string()));
    };
    let commit = text(&payload["after"]).unwrap_or_default();
    if commit.is_empty() || commit.bytes().all(|b| b == b'0') {
        return Ok(Payload::Ignored("branch deleted".to_string()));
    }
    if !git::is_commit_id(&commit) {
        return Err(PayloadError::NotACommit);
    }
    // The branch goes into a fetch refspec (`+refs/heads/{branch}:refs/heads/{branch}`): a `:`
    // or a leading `-` there would change what is fetched where.
    if !is_branch_name(branch) {
        return Err(PayloadError::NotABranchName(branch.to_string()));
    }
    let pushed_by = text(&payload["pusher"]["name"])
        .or_else(|| text(&payload["pusher"]["login"]))
        .or_else(|| text(&payload["sender"]["login"]))
        .unwrap_or_default();
    Ok(Payload::Push(PushEvent { branch: branch.to_string(), commit, pushed_by }))
}

/// git's rules for a branch name (`git check-ref-format --branch`): no empty or dot-led
/// component, no `..`, `@{`, `//`, control characters, space or any of `~^:?*[\`, no leading
/// `-`, and no trailing `/`, `.` or `.lock`. Stricter than git in one way: Unicode's C1 controls
/// (U+0080–U+009F, which git lets through as bytes above 0x7f) are refused too, because branch
/// names are printed on terminals, where U+009B starts an escape sequence.
pub(crate) fn is_branch_name(name: &str) -> bool {
    let bad_char = |c: char| c.is_control() || " ~^:?*[\\".contains(c);
    !name.is_empty()
        && name != "@"
        && !name.starts_with('-')
        && !name.contains("..")
        && !name.contains("@{")
        && !name.chars().any(bad_char)
        && !name.ends_with('.')
        && name.split('/').all(|part| !part.is_empty() && !part.starts_with('.'))
        && name.split('/').all(|part| !part.ends_with(".lock"))
}
