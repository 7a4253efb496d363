//! Pins a deploy action's images to the digests their tags name when the action runs, as
//! CodePipeline's ECR source action hands `imageDetail.json` an `ImageURI` with a digest and ECS
//! resolves tags once per deployment: every task of the deployment, on every node and after every
//! replacement, runs the same bytes even if the tag is pushed again later.
//!
//! Only references that name a registry host (`registry.example.com/web:v2`,
//! `127.0.0.1:5000/web:v2`) are pinned; a local-only image (`web:v2`) has no registry to ask and
//! a reference with a digest is pinned already. The registry is asked as the Docker Engine asks
//! it: over HTTPS, trusting the system's roots and the CA files the engine is given for that host
//! in `/etc/docker/certs.d/HOST[:PORT]/*.crt`, and over plain HTTP only on loopback (the engine's
//! one implicit insecure registry range).

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

/// Where the Docker Engine reads a registry's CA files (`HOST[:PORT]/*.crt`).
pub const DOCKER_CERTS_D: &str = "/etc/docker/certs.d";

/// How long one registry may take to answer a manifest request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Manifest media types a registry may answer with, newest first (image indexes for
/// multi-platform images, then single manifests), so the digest is the one `docker pull` sees.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// An image reference with a registry host and a tag: the only kind there is to pin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaggedImage {
    /// `host[:port]`, as written.
    pub registry: String,
    /// The repository path inside the registry (`team/web`).
    pub repository: String,
    pub tag: String,
}

impl TaggedImage {
    /// Reads a Docker image reference. `None` when there is nothing to pin: no registry host
    /// (the first path component has no `.` or `:` and is not `localhost`, as Docker decides),
    /// or a digest already (`…@sha256:…`).
    pub fn parse(reference: &str) -> Option<TaggedImage> {
        if reference.contains('@') {
            return None;
        }
        let (registry, rest) = reference.split_once('/')?;
        let names_a_host =
            registry.contains('.') || registry.contains(':') || registry == "localhost";
        // A host name, an IPv4 address or a bracketed IPv6 one, with an optional port; not a path
        // (`/srv/images/web`, `./image`), which the process runtime takes as an image.
        let host_like = registry.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '[')
            && registry.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
        if !names_a_host || !host_like || rest.is_empty() {
            return None;
        }
        // A `:` after the last `/` separates the tag; the registry's port is before the first.
        let (repository, tag) = match rest.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => (repository, tag),
            _ => (rest, "latest"),
        };
        if repository.is_empty() || tag.is_empty() {
            return None;
        }
        Some(TaggedImage {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: tag.to_string(),
        })
    }

    /// Whether the registry is on loopback, where Docker talks plain HTTP.
    pub fn is_loopback(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
            _ => &self.registry,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// The registry API's URL of this tag's manifest.
    pub fn manifest_url(&self) -> String {
        let scheme = if self.is_loopback() { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}/manifests/{}", self.registry, self.repository, self.tag)
    }

    /// The reference pinned to `digest`, keeping the tag for people to read
    /// (`host/web:v2@sha256:…`; Docker and Swarm pull by the digest and ignore the tag).
    pub fn pinned(&self, digest: &str) -> String {
        format!("{}/{}:{}@{digest}", self.registry, self.repository, self.tag)
    }
}

/// Why an image could not be pinned. Each says what to do; the deploy action fails with it and
/// starts no deployment.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(
        "cannot ask registry {registry} for {image}: {reason}; push the image there before the \
         deploy stage runs (`docker push {image}` in the buildspec), or name it by digest \
         (`name@sha256:…`)"
    )]
    Unreachable { registry: String, image: String, reason: String },
    #[error(
        "registry {registry} has no tag `{tag}` of {repository}: push it before the deploy stage \
         runs (`docker push {registry}/{repository}:{tag}` in the buildspec)"
    )]
    NoSuchTag { registry: String, repository: String, tag: String },
    #[error(
        "registry {registry} wants credentials for {image}, and cutover pins only images it can \
         read anonymously; name the image by digest (`name@sha256:…`) to deploy it as it is"
    )]
    NeedsCredentials { registry: String, image: String },
    #[error("registry {registry} answered {status} for the manifest of {image}")]
    Refused { registry: String, image: String, status: u16 },
    #[error(
        "registry {registry} answered the manifest of {image} without a well-formed \
         Docker-Content-Digest header"
    )]
    NoDigest { registry: String, image: String },
}

/// `reference` pinned to the digest its tag names now; unchanged when there is nothing to pin
/// (see [`TaggedImage::parse`]). `certs_d` is where the registry's CA files are looked for
/// ([`DOCKER_CERTS_D`] outside tests).
pub async fn pin(reference: &str, certs_d: &Path) -> Result<String, PinError> {
    let Some(image) = TaggedImage::parse(reference) else { return Ok(reference.to_string()) };
    let unreachable = |reason: String| PinError::Unreachable {
        registry: image.registry.clone(),
        image: reference.to_string(),
        reason,
    };
    let client = client(&image.registry, certs_d).map_err(unreachable)?;
    // HEAD answers with the digest without the manifest (distribution's API, and what the Docker
    // Engine itself does before a pull).
    let answer = client
        .head(image.manifest_url())
        .header(reqwest::header::ACCEPT, MANIFEST_TYPES)
        .send()
        .await
        .map_err(|err| unreachable(error_chain(&err)))?;
    let status = answer.status();
    let (registry, repository, tag) =
        (image.registry.clone(), image.repository.clone(), image.tag.clone());
    match status.as_u16() {
        200 => {}
        404 => return Err(PinError::NoSuchTag { registry, repository, tag }),
        401 | 403 => {
            return Err(PinError::NeedsCredentials { registry, image: reference.to_string() });
        }
        status => {
            return Err(PinError::Refused { registry, image: reference.to_string(), status });
        }
    }
    let digest = answer
        .headers()
        .get("docker-content-digest")
        .and_then(|value| value.to_str().ok())
        .filter(|digest| is_sha256_digest(digest))
        .ok_or_else(|| PinError::NoDigest { registry, image: reference.to_string() })?;
    Ok(image.pinned(digest))
}

/// `sha256:` and 64 lowercase hex digits: what a content digest must be before it goes into a
/// task definition.
pub fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A client trusting the system's roots and the registry's CA files in `certs_d`.
fn client(registry: &str, certs_d: &Path) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(3));
    let dir = certs_d.join(registry);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        for file in files.iter().filter(|f| f.extension().is_some_and(|ext| ext == "crt")) {
            let pem = std::fs::read(file)
                .map_err(|err| format!("cannot read CA file {}: {err}", file.display()))?;
            let certificate = reqwest::Certificate::from_pem(&pem).map_err(|err| {
                format!("CA file {} is not a PEM certificate: {err}", file.display())
            })?;
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder.build().map_err(|err| format!("cannot build an HTTP client: {err}"))
}

/// An error with its causes, which say what actually failed (refused, TLS, DNS).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tagged_references_to_a_registry_host_are_pinned() {
        let tagged = |registry: &str, repository: &str, tag: &str| {
            Some(TaggedImage {
                registry: registry.into(),
                repository: repository.into(),
                tag: tag.into(),
            })
        };
        let cases = [
            ("127.0.0.1:5000/web:v2", tagged("127.0.0.1:5000", "web", "v2")),
            (
                "registry.example.com/team/web:1.4",
                tagged("registry.example.com", "team/web", "1.4"),
            ),
            ("localhost/web", tagged("localhost", "web", "latest")),
            ("localhost:5000/team/web", tagged("localhost:5000", "team/web", "latest")),
            ("[::1]:5000/web:v1", tagged("[::1]:5000", "web", "v1")),
            // No registry host: Docker Hub's namespace or a local-only image.
            ("web:v2", None),
            ("team/web:v2", None),
            ("web", None),
            // Pinned already.
            ("127.0.0.1:5000/web:v2@sha256:abc", None),
            ("127.0.0.1:5000/", None),
            // Paths, which the process runtime runs as images.
            ("/srv/images/web", None),
            ("./build/image", None),
            ("../image:v1", None),
        ];
        for (reference, expected) in cases {
            assert_eq!(TaggedImage::parse(reference), expected, "{reference}");
        }
    }

    #[test]
    fn loopback_registries_are_asked_over_http_and_every_other_over_https() {
        let url = |reference: &str| TaggedImage::parse(reference).unwrap().manifest_url();
        assert_eq!(url("127.0.0.1:5000/web:v2"), "http://127.0.0.1:5000/v2/web/manifests/v2");
        assert_eq!(url("localhost/web:v2"), "http://localhost/v2/web/manifests/v2");
        assert_eq!(url("[::1]:5000/web:v2"), "http://[::1]:5000/v2/web/manifests/v2");
        assert_eq!(
            url("10.99.0.1:5000/team/web:v2"),
            "https://10.99.0.1:5000/v2/team/web/manifests/v2"
        );
        assert_eq!(
            url("registry.example.com/web:v2"),
            "https://registry.example.com/v2/web/manifests/v2"
        );
    }

    #[test]
    fn a_digest_is_sha256_and_64_lowercase_hex_digits() {
        let hex = "0123456789abcdef".repeat(4);
        assert!(is_sha256_digest(&format!("sha256:{hex}")));
        assert!(!is_sha256_digest(&format!("sha256:{}", hex.to_uppercase())));
        assert!(!is_sha256_digest(&format!("sha512:{hex}")));
        assert!(!is_sha256_digest(&format!("sha256:{}", &hex[1..])));
        assert!(!is_sha256_digest(&format!("sha256:{hex}\"}}")));
    }
}
