//! Certificates that renew themselves: HTTPS listeners with `acme:` get a certificate for each
//! of their host names from an ACME server (RFC 8555), validated by HTTP-01 or TLS-ALPN-01
//! (RFC 8737) answered by cutover's own data plane, renewed at two thirds of their lifetime with
//! exponential backoff on failure.
//!
//! Decisions are pure ([`decide`]: when a certificate is due, the backoff, what to do next;
//! [`der`]: a certificate's validity); [`manager`] is the shell that reads the disk, orders
//! ([`order`], on `instant-acme`) and writes the certificate beside its key in one private file
//! that the data plane's SNI list reloads. Nothing here logs or returns a key.

pub mod decide;
pub mod der;
mod files;
pub mod manager;
pub mod order;

pub use manager::{CertificateStatus, Manager, status};
