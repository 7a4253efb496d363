//! Certificates an HTTPS listener obtains by itself over ACME (RFC 8555), and where they and the
//! challenge answers live on disk. The control plane obtains and renews them; the data plane
//! serves what is on disk: the certificates by SNI beside the listener's own (one model for
//! certificates), the HTTP-01 answers on its plain HTTP listeners and the TLS-ALPN-01 (RFC 8737)
//! certificates to a validator that asks for `acme-tls/1`. Both sides derive the paths here, so
//! they cannot disagree about them.

use serde::{Deserialize, Serialize};

use crate::CertificateFiles;

/// The path HTTP-01 answers are asked at (RFC 8555 §8.3).
pub const HTTP_01_PREFIX: &str = "/.well-known/acme-challenge/";

/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// An HTTPS listener's `acme:` settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acme {
    /// The ACME server's directory URL (`https://acme-v02.api.letsencrypt.org/directory`).
    pub directory: String,
    /// The account's contact address, for the CA's expiry notices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub challenge: Challenge,
    /// PEM roots to trust for the directory's HTTPS (a private ACME CA); the system's otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// The host names, one certificate each: the listener's rules' host-header values.
    pub names: Vec<String>,
    /// Where cutover keeps what it obtains (`<data dir>/acme`), set by `apply`.
    #[serde(default)]
    pub dir: String,
}

/// How the ACME server checks that cutover answers for a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Challenge {
    /// A token fetched over plain HTTP (port 80) from a plain HTTP listener of cutover's.
    #[serde(rename = "http-01")]
    Http01,
    /// A TLS handshake (port 443) with the ALPN `acme-tls/1` on the HTTPS listener itself.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

impl Challenge {
    pub const NAMES: [&str; 2] = ["http-01", "tls-alpn-01"];

    pub fn name(self) -> &'static str {
        match self {
            Challenge::Http01 => "http-01",
            Challenge::TlsAlpn01 => "tls-alpn-01",
        }
    }

    pub fn parse(s: &str) -> Option<Challenge> {
        match s {
            "http-01" => Some(Challenge::Http01),
            "tls-alpn-01" => Some(Challenge::TlsAlpn01),
            _ => None,
        }
    }
}

impl Acme {
    /// The certificate obtained for each of the listener's names, where it is or will be.
    pub fn certificate_files(&self) -> Vec<CertificateFiles> {
        self.names.iter().map(|name| certificate_files(&self.dir, name)).collect()
    }
}

/// Where the certificate chain and key for `name` live under an ACME directory `dir`: one PEM
/// file holding both (0600), so that a renewal replaces them together in one rename and the data
/// plane never pairs a new certificate with an old key.
pub fn certificate_files(dir: &str, name: &str) -> CertificateFiles {
    let file = format!("{dir}/certificates/{name}.pem");
    CertificateFiles { certificate_file: file.clone(), key_file: file }
}

/// What the manager remembers of `name`'s attempts (JSON beside the certificate).
pub fn attempts_file(dir: &str, name: &str) -> String {
    format!("{dir}/certificates/{name}.attempts.json")
}

/// The file holding the HTTP-01 key authorization for `token`, or `None` for a token that is not
/// one (tokens are base64url, RFC 8555 §8.1): a request can never name a path outside the
/// directory.
pub fn http_01_file(dir: &str, token: &str) -> Option<String> {
    let valid = !token.is_empty()
        && token.len() <= 128
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    valid.then(|| format!("{dir}/challenges/http-01/{token}"))
}

/// The file holding the TLS-ALPN-01 certificate and key (PEM) for `name`, or `None` for a name
/// that is not a plain DNS name (so that it cannot name a path outside the directory).
pub fn tls_alpn_01_file(dir: &str, name: &str) -> Option<String> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && !name.starts_with('.')
        && !name.contains("..")
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    valid.then(|| format!("{dir}/challenges/tls-alpn-01/{}", name.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_files_never_leave_their_directory() {
        assert_eq!(http_01_file("/d", "aB-_9").as_deref(), Some("/d/challenges/http-01/aB-_9"));
        for bad in ["", "../state.db", "a/b", "a.b", "%2e%2e"] {
            assert_eq!(http_01_file("/d", bad), None, "{bad}");
        }
        assert_eq!(
            tls_alpn_01_file("/d", "Api.Example.com").as_deref(),
            Some("/d/challenges/tls-alpn-01/api.example.com")
        );
        for bad in ["", "..", "../x", "a/b", ".hidden", "*.example.com"] {
            assert_eq!(tls_alpn_01_file("/d", bad), None, "{bad}");
        }
    }

    #[test]
    fn settings_round_trip_with_challenge_names_as_written() {
        let acme = Acme {
            directory: "https://ca/dir".into(),
            email: None,
            challenge: Challenge::TlsAlpn01,
            ca_bundle: None,
            names: vec!["a.example.com".into()],
            dir: "/data/acme".into(),
        };
        let json = serde_json::to_string(&acme).unwrap();
        assert!(json.contains(r#""challenge":"tls-alpn-01""#), "{json}");
        assert_eq!(serde_json::from_str::<Acme>(&json).unwrap(), acme);
        assert_eq!(
            acme.certificate_files()[0].certificate_file,
            "/data/acme/certificates/a.example.com.pem"
        );
    }
}
