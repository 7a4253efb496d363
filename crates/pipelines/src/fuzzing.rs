//! The property the `webhook_payload` fuzz target checks (`fuzz/fuzz_targets/webhook_payload.rs`),
//! here so that this crate's tests replay the committed corpus (`fuzz/corpus/webhook_payload/`)
//! without cargo-fuzz.
//!
//! An input is an event name (its first line) and a webhook body (the rest). Reading it never
//! panics and gives the same answer twice; a push it accepts is exactly what the body says (the
//! `ref` is `refs/heads/<branch>`, `after` is the commit, a full non-zero commit id) with a branch
//! that cannot be read as more than one ref or as an option when it reaches `git fetch`; an ignored
//! body or a refused one says why. The body's signature under a secret verifies, and a body one
//! byte longer does not.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::git::is_commit_id;
use crate::push_event::{Payload, read_payload};
use crate::webhook::signature_ok;

/// Panics when a property does not hold.
pub fn webhook_payload(data: &[u8]) {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let event = String::from_utf8_lossy(&data[..split]);
    let body = data.get(split + 1..).unwrap_or_default();
    let read = read_payload(&event, body);
    assert_eq!(read_payload(&event, body), read, "not deterministic");
    match read {
        Ok(Payload::Push(push)) => {
            assert_eq!(event, "push");
            let json: serde_json::Value = serde_json::from_slice(body).expect("a push is JSON");
            assert_eq!(json["ref"].as_str(), Some(format!("refs/heads/{}", push.branch).as_str()));
            assert_eq!(json["after"].as_str(), Some(push.commit.as_str()));
            assert!(is_commit_id(&push.commit) && push.commit.bytes().any(|b| b != b'0'));
            let branch = &push.branch;
            assert!(!branch.is_empty() && !branch.starts_with('-'), "branch {branch:?}");
            assert!(!branch.contains(':') && !branch.contains(".."), "branch {branch:?}");
            assert!(!branch.chars().any(|c| c.is_control() || c == ' '), "branch {branch:?}");
        }
        Ok(Payload::Ignored(why)) => assert!(!why.is_empty()),
        Err(err) => assert!(!err.to_string().is_empty()),
    }
    let secret = b"fuzz-secret";
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(body);
    let header = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert!(signature_ok(secret, body, Some(&header)), "a correct signature is refused");
    let longer = [body, b" "].concat();
    assert!(!signature_ok(secret, &longer, Some(&header)), "a wrong signature is accepted");
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::push_event::{PayloadError, PushEvent};

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn webhook_payload_corpus_holds_its_properties() {
        testkit::fuzz_corpus::replay("webhook_payload", webhook_payload);
    }

    fn push_of(reference: &str) -> Result<Payload, PayloadError> {
        let body =
            serde_json::json!({ "ref": reference, "after": COMMIT, "pusher": {"name": "a"} });
        read_payload("push", body.to_string().as_bytes())
    }

    #[test]
    fn a_push_to_a_branch_is_read() {
        assert_eq!(
            push_of("refs/heads/release/1.2"),
            Ok(Payload::Push(PushEvent {
                branch: "release/1.2".into(),
                commit: COMMIT.into(),
                pushed_by: "a".into()
            }))
        );
    }

    #[test]
    fn a_branch_that_would_change_the_fetch_refspec_is_refused() {
        for branch in ["main:refs/heads/other", "-upload-pack=x", "a..b", "a b", "", "x/", "x.lock"]
        {
            assert_eq!(
                push_of(&format!("refs/heads/{branch}")),
                Err(PayloadError::NotABranchName(branch.to_string())),
                "{branch:?}"
            );
        }
    }

    /// Found by the fuzzer: a C1 control character (U+0089 here) passed git's byte rule.
    #[test]
    fn a_branch_with_a_unicode_control_character_is_refused() {
        for branch in ["ma\u{89}in", "\u{9b}31mred", "feature/\u{85}x"] {
            assert_eq!(
                push_of(&format!("refs/heads/{branch}")),
                Err(PayloadError::NotABranchName(branch.to_string())),
                "{branch:?}"
            );
        }
        assert!(matches!(push_of("refs/heads/café/ünïcode"), Ok(Payload::Push(_))));
    }
}
