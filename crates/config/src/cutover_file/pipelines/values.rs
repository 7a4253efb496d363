//! Single values of a pipeline: durations, artifact names and lists, paths inside artifacts,
//! placeholders, environment variable names, branches and git URLs.

use std::time::Duration;

use model::format_duration;
use pipeline::definition::{ARTIFACTS_PER_ACTION_MAX, BRANCH_BYTES_MAX, NAME_CHARS_MAX};

use super::{ENV_NAME_LENGTH_MAX, PATH_LENGTH_MAX};
use crate::cutover_file::{Loc, Named};
use syntax::decode::{BareNumber, Cx, Field, quote};
use syntax::tree::{Node, child_index};

/// A duration of at least 1s and at most `max`; a bare integer counts minutes, as the
/// `timeoutInMinutes` fields of CodeBuild, CodePipeline and ECS.
pub(super) fn bounded_duration(
    cx: &mut Cx<'_>,
    field: &Field<'_>,
    max: Duration,
    limit: &str,
) -> Option<Duration> {
    let d = cx.duration(field.node, &field.path, BareNumber::Minutes)?;
    if d < Duration::from_secs(1) || d > max {
        cx.error(
            field.node.pos,
            &field.path,
            format!("{} is out of range: 1s to {limit}", format_duration(d)),
        );
        return None;
    }
    Some(d)
}

pub(super) fn artifact_list(cx: &mut Cx<'_>, field: &Field<'_>) -> Option<(Vec<Named>, Loc)> {
    let items = cx.list(field.node, &field.path)?;
    if items.len() > ARTIFACTS_PER_ACTION_MAX {
        cx.error(
            field.node.pos,
            &field.path,
            format!("{} artifacts; an action has at most {ARTIFACTS_PER_ACTION_MAX}", items.len()),
        );
        return None;
    }
    let mut out: Vec<Named> = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let path = child_index(&field.path, i);
        let Some(s) = artifact_name(cx, item, &path) else {
            ok = false;
            continue;
        };
        if out.iter().any(|(n, _)| *n == s) {
            cx.error(item.pos, &path, format!("artifact `{s}` is listed twice"));
            ok = false;
            continue;
        }
        out.push((s, Loc::node(item, &path)));
    }
    ok.then_some((out, Loc::of(field)))
}

pub(super) fn is_artifact_name(s: &str) -> bool {
    (1..=NAME_CHARS_MAX).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

pub(super) fn artifact_name(cx: &mut Cx<'_>, node: &Node, path: &str) -> Option<String> {
    let s = cx.str(node, path)?;
    if !is_artifact_name(s) {
        cx.error(
            node.pos,
            path,
            format!(
                "{} is not a valid artifact name: use 1 to {NAME_CHARS_MAX} letters, \
                 digits, `_` and `-`",
                quote(s)
            ),
        );
        return None;
    }
    Some(s.to_string())
}

/// A path inside an artifact: relative, and not leaving it.
pub(super) fn relative_path(cx: &mut Cx<'_>, field: &Field<'_>) -> Option<String> {
    let s = cx.nonempty(field.node, &field.path)?;
    let problem = if s.len() > PATH_LENGTH_MAX {
        Some(format!("is longer than {PATH_LENGTH_MAX} bytes"))
    } else if s.chars().any(char::is_control) {
        Some("contains a control character".to_string())
    } else if s.starts_with('/') || s.starts_with('\\') || s.get(1..2) == Some(":") {
        Some("is absolute; give a path inside the artifact, like `taskdef.json`".to_string())
    } else if s.split(['/', '\\']).any(|part| part == "..") {
        Some("leaves the artifact with `..`; give a path inside it".to_string())
    } else {
        None
    };
    if let Some(problem) = problem {
        cx.error(field.node.pos, &field.path, format!("path {} {problem}", quote(&s)));
        return None;
    }
    Some(s)
}

pub(super) fn check_placeholder(s: &str) -> Result<(), String> {
    if let Some(inner) = s.strip_prefix('<').and_then(|r| r.strip_suffix('>')) {
        return Err(format!(
            "write the placeholder without angle brackets: `{inner}` (the task definition has \
             `{s}`)"
        ));
    }
    let ok = (1..=100).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if !ok {
        return Err(format!(
            "{} is not a valid placeholder: use letters, digits, `_` and `-`, like IMAGE1_NAME",
            quote(s)
        ));
    }
    Ok(())
}

pub(super) fn check_env_name(s: &str) -> Result<(), String> {
    let ok = (1..=ENV_NAME_LENGTH_MAX).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not an environment variable name: use letters, digits and `_`, not starting \
             with a digit",
            quote(s)
        ))
    }
}

/// A branch name as git accepts it (`git check-ref-format --branch`); with `glob`, `*` and `?`
/// are wildcards.
pub(super) fn check_branch(s: &str, glob: bool) -> Result<(), String> {
    if s.is_empty() {
        return Err("a branch name must not be empty".to_string());
    }
    if s.len() > BRANCH_BYTES_MAX {
        return Err(format!("a branch name is at most {BRANCH_BYTES_MAX} bytes"));
    }
    if let Some(short) = s.strip_prefix("refs/heads/") {
        return Err(format!("write the branch name without `refs/heads/`: `{short}`"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || matches!(c, '~' | '^' | ':' | '\\' | '['))
    {
        return Err(format!(
            "{} contains {c:?}, which git does not allow in branch names",
            quote(s)
        ));
    }
    if !glob && s.contains(['*', '?']) {
        return Err(format!(
            "{} is a pattern; `branch` is one branch (the one a manual start builds): put \
             patterns in `branches: {{ includes: [...] }}`",
            quote(s)
        ));
    }
    // One glob matcher serves branches and file paths (`model::glob`): there `**` spans parts only
    // as a part of its own, and inside a part it means `*`, which is not what it looks like.
    if let Some(part) = s.split('/').find(|part| part.contains("**") && *part != "**") {
        return Err(format!(
            "{} has `**` inside `{part}`; `**` matches across `/` only as a part of its own \
             (`release/**`), and `*` matches within a part (`release-*`)",
            quote(s)
        ));
    }
    let bad = s.starts_with('-')
        || s.starts_with('/')
        || s.ends_with('/')
        || s.ends_with('.')
        || s.ends_with(".lock")
        || s.contains("..")
        || s.contains("//")
        || s.contains("@{")
        || s == "@"
        || s.split('/').any(|part| part.starts_with('.'));
    if bad {
        return Err(format!(
            "{} is not a valid branch name (see `git check-ref-format`)",
            quote(s)
        ));
    }
    Ok(())
}

/// The longest `review_url`, CodePipeline's limit on an approval's `ExternalEntityLink`.
const REVIEW_URL_LENGTH_MAX: usize = 2048;

/// An approval's `review_url`: a page people open from the console before they decide, so an
/// absolute http(s) URL with a host (a `javascript:` or relative link would run or land on the
/// console itself).
pub(super) fn check_review_url(s: &str) -> Result<(), String> {
    if s.chars().count() > REVIEW_URL_LENGTH_MAX {
        return Err(format!("the URL is longer than {REVIEW_URL_LENGTH_MAX} characters"));
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("{} contains spaces or control characters", quote(s)));
    }
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(format!(
            "{} is not an absolute URL; give the page to review as https://host/…",
            quote(s)
        ));
    };
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        return Err(format!("{} is not an http:// or https:// URL", quote(s)));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(format!(
            "{} carries credentials, which everyone who reads the pipeline would see; remove them",
            quote(s)
        ));
    }
    if authority.is_empty() || authority.starts_with(':') {
        return Err(format!("{} has no host", quote(s)));
    }
    Ok(())
}

/// A URL or path `git fetch` takes, without the transports that run commands and without
/// credentials, which would then be in the file.
pub(super) fn check_git_url(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("the URL is empty; give a repository URL or path".to_string());
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("{} contains spaces or control characters", quote(s)));
    }
    if s.starts_with('-') {
        return Err(format!("{} starts with `-`, which git would read as an option", quote(s)));
    }
    if let Some((scheme, rest)) = s.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        let authority = rest.split('/').next().unwrap_or("");
        match scheme.as_str() {
            "file" => {}
            "http" | "https" | "ssh" | "git" | "git+ssh" | "ssh+git" => {
                let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                if host.is_empty() {
                    return Err(format!("{} has no host", quote(s)));
                }
                if let Some((user, _)) = authority.rsplit_once('@')
                    && (scheme.starts_with("http") || user.contains(':'))
                {
                    return Err(format!(
                        "{} carries credentials, which would then be in cutover.yaml; remove \
                         them and let git supply them (a credential helper, or an SSH key with \
                         an ssh:// URL)",
                        quote(s)
                    ));
                }
            }
            _ => {
                return Err(format!(
                    "{} uses `{scheme}://`; use https://, http://, ssh://, git://, file:// or a \
                     path",
                    quote(s)
                ));
            }
        }
        return Ok(());
    }
    if s.contains("::") {
        return Err(format!(
            "{} uses a remote helper (`transport::address`), which cutover does not accept (`ext::` \
             runs commands); use https://, ssh://, file:// or a path",
            quote(s)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_review_url_is_an_absolute_http_url_with_a_host_and_no_credentials() {
        for ok in [
            "https://review.example.com/change/42?tab=diff#top",
            "http://127.0.0.1:8080/",
            "HTTPS://Example.com",
        ] {
            assert_eq!(check_review_url(ok), Ok(()), "{ok}");
        }
        for (bad, says) in [
            ("javascript:alert(1)", "is not an absolute URL"),
            ("/changes/42", "is not an absolute URL"),
            ("ftp://example.com/x", "is not an http:// or https:// URL"),
            ("https://me:secret@example.com/", "carries credentials"),
            ("https:///path", "has no host"),
            ("https://:443/", "has no host"),
            ("https://example.com/a b", "contains spaces or control characters"),
        ] {
            let err = check_review_url(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let long = format!("https://example.com/{}", "a".repeat(2048));
        assert!(check_review_url(&long).unwrap_err().contains("longer than 2048"));
    }

    #[test]
    fn git_urls() {
        for ok in [
            "https://github.com/me/app.git",
            "ssh://git@github.com/me/app.git",
            "git@github.com:me/app.git",
            "file:///srv/git/app",
            "/srv/git/app",
            "../app",
            "app",
        ] {
            assert_eq!(check_git_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "https://me:secret@github.com/me/app.git",
            "https://TOKEN@github.com/me/app.git",
            "ssh://me:pw@host/app",
            "ext::sh",
            "ftp://host/app",
            "-uhost",
            "https:///app",
            "a b",
        ] {
            assert!(check_git_url(bad).is_err(), "{bad}");
        }
    }
}
