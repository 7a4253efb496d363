//! Pinning images against a real registry: Debian's `docker-registry` (the CNCF distribution
//! registry), started on a loopback port for each test (`common::registry`).

mod common;

use std::path::Path;

use common::registry::Registry;
use pipelines::registry::{self, PinError};

fn pin(reference: &str) -> Result<String, PinError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(registry::pin(reference, Path::new("/nonexistent-certs.d")))
}

#[test]
fn a_tag_is_pinned_to_the_digest_the_registry_names_and_a_later_push_of_the_tag_moves_no_pin() {
    let registry = Registry::start();
    let v1 = registry.push("team/web", "v1", "first");
    let reference = format!("{}/team/web:v1", registry.addr);
    let pinned = pin(&reference).unwrap();
    assert_eq!(pinned, format!("{reference}@{v1}"));

    // The tag is pushed again: a new pin names the new image, the old pin still the old one.
    let again = registry.push("team/web", "v1", "second");
    assert_ne!(again, v1);
    assert_eq!(pin(&reference).unwrap(), format!("{reference}@{again}"));
    assert!(registry.has_manifest("team/web", &v1), "the first pin still pulls what it named");
}

#[test]
fn references_without_a_registry_or_with_a_digest_are_left_as_written() {
    let digest = format!("sha256:{}", "ab".repeat(32));
    for reference in
        ["web:v2", "team/web", &format!("127.0.0.1:9/web:v2@{digest}"), "/srv/images/web"]
    {
        assert_eq!(pin(reference).unwrap(), reference, "{reference}");
    }
}

#[test]
fn a_tag_the_registry_does_not_have_is_refused_with_what_to_push() {
    let registry = Registry::start();
    registry.push("web", "v1", "first");
    let err = pin(&format!("{}/web:v9", registry.addr)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "registry {0} has no tag `v9` of web: push it before the deploy stage runs (`docker \
             push {0}/web:v9` in the buildspec)",
            registry.addr
        )
    );
}

#[test]
fn a_registry_that_does_not_answer_fails_the_pin_with_the_reason() {
    let addr = format!("127.0.0.1:{}", testkit::free_port());
    let err = pin(&format!("{addr}/web:v1")).unwrap_err().to_string();
    assert!(err.starts_with(&format!("cannot ask registry {addr} for {addr}/web:v1: ")), "{err}");
    assert!(err.to_lowercase().contains("connection refused"), "{err}");
    assert!(err.ends_with("or name it by digest (`name@sha256:…`)"), "{err}");
}
