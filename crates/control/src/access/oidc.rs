//! Single sign-on with OpenID Connect: the authorization code flow with PKCE.
//!
//! The CLI (`cutover login`) sends its user's browser to the provider with a PKCE challenge, a
//! state and a nonce, and receives the code on a loopback redirect (RFC 8252). It hands the
//! code and its verifier to cutover, which redeems them at the provider's token endpoint, checks
//! the ID token (signature against the provider's JWKS, issuer, audience, expiry, nonce), maps
//! the user's groups to bindings and issues a session: a credential like a named token (stored
//! only as a hash) that expires with the session.
//!
//! The decisions are pure ([`verify_id_token`], [`bindings_of`], [`parse_group_mapping`]); the
//! provider's documents are fetched in [`Oidc`].

use std::collections::BTreeSet;

use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::decision::{Binding, BindingError};

/// How far a provider's clock may be ahead of or behind ours, in seconds.
const CLOCK_SKEW_SECS: u64 = 60;

/// Single sign-on as `cutover up --oidc-*` configures it.
#[derive(Clone, Debug)]
pub struct OidcConfig {
    /// The provider's issuer URL; its discovery document is `ISSUER/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    /// For a confidential client; none is a public client (PKCE alone).
    pub client_secret: Option<String>,
    /// The ID token's claim that lists the user's groups.
    pub groups_claim: String,
    pub scopes: String,
    pub groups: Vec<GroupMapping>,
    /// How long a session lasts.
    pub session_ms: u64,
}

/// A provider's group and the binding its members get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMapping {
    pub group: String,
    pub binding: Binding,
}

/// A `--oidc-group` that cannot be one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GroupMappingError {
    #[error(
        "--oidc-group `{0}`: expected GROUP=ROLE or GROUP=ROLE:SCOPE,SCOPE (e.g. deployers=deployer:web/*,web)"
    )]
    Shape(String),
    #[error("--oidc-group `{text}`: {problem}")]
    Binding { text: String, problem: BindingError },
}

/// The mappings `access.oidc.groups` declares, as `apply` stored them: a grant whose role is
/// neither built in nor declared any more maps to a binding that grants nothing (the role is
/// looked up at each request, as for credentials).
pub fn declared_mappings(groups: &[model::access::DeclaredGroup]) -> Vec<GroupMapping> {
    groups
        .iter()
        .flat_map(|g| {
            g.grants.iter().map(|grant| GroupMapping {
                group: g.group.clone(),
                binding: Binding {
                    grants: super::decision::Grants::Role(grant.role.clone()),
                    scopes: if grant.scopes.is_empty() {
                        vec!["*".to_string()]
                    } else {
                        grant.scopes.clone()
                    },
                },
            })
        })
        .collect()
}

/// `deployers=deployer:web/*,web`: the group `deployers` gets role deployer on `web/*` and `web`.
pub fn parse_group_mapping(text: &str) -> Result<GroupMapping, GroupMappingError> {
    let shape = || GroupMappingError::Shape(text.to_string());
    let (group, grant) = text.split_once('=').ok_or_else(shape)?;
    let (role, scopes) = grant.split_once(':').unwrap_or((grant, ""));
    if group.trim().is_empty() || role.trim().is_empty() {
        return Err(shape());
    }
    let scopes: Vec<String> =
        scopes.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    let binding = Binding::new(Some(role.trim()), &[], &scopes)
        .map_err(|problem| GroupMappingError::Binding { text: text.to_string(), problem })?;
    Ok(GroupMapping { group: group.trim().to_string(), binding })
}

/// The bindings of a user in `groups`: those of every mapping of one of them.
pub fn bindings_of(groups: &[String], mappings: &[GroupMapping]) -> Vec<Binding> {
    mappings.iter().filter(|m| groups.contains(&m.group)).map(|m| m.binding.clone()).collect()
}

/// What an ID token must say to be one of this login's.
#[derive(Clone, Debug)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    pub groups_claim: &'a str,
    /// Seconds since the epoch.
    pub now: u64,
}

/// Who an ID token says signed in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub subject: String,
    /// What people call them: `preferred_username`, else `email`, else the subject.
    pub user: String,
    pub groups: Vec<String>,
}

/// Why an ID token is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdTokenError {
    #[error("the ID token is not a JWS: {0}")]
    Malformed(String),
    #[error("the ID token is signed with {0:?}; only the provider's asymmetric keys are accepted")]
    Algorithm(Algorithm),
    #[error("the ID token's key `{0}` is not in the provider's JWKS")]
    UnknownKey(String),
    #[error("the ID token does not verify: {0}")]
    Invalid(String),
    #[error("the ID token expired at {0} (seconds since the epoch)")]
    Expired(u64),
    #[error("the ID token's nonce is not this login's")]
    Nonce,
}

/// Checks `raw` as an ID token of this login: signed by a key of `jwks` with an asymmetric
/// algorithm, issued by `issuer` for `client_id`, not expired at `now`, carrying `nonce`.
pub fn verify_id_token(
    raw: &str,
    jwks: &JwkSet,
    expected: &Expected,
) -> Result<Identity, IdTokenError> {
    let header =
        jsonwebtoken::decode_header(raw).map_err(|e| IdTokenError::Malformed(e.to_string()))?;
    use Algorithm::*;
    if !matches!(header.alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512 | ES256 | ES384 | EdDSA)
    {
        return Err(IdTokenError::Algorithm(header.alg));
    }
    let jwk = match &header.kid {
        Some(kid) => jwks.find(kid).ok_or_else(|| IdTokenError::UnknownKey(kid.clone()))?,
        None if jwks.keys.len() == 1 => &jwks.keys[0],
        None => return Err(IdTokenError::UnknownKey("(none named)".into())),
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| IdTokenError::Invalid(e.to_string()))?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[expected.issuer]);
    validation.set_audience(&[expected.client_id]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    // Expiry is checked below against the caller's clock, so that it is a pure decision.
    validation.validate_exp = false;
    let claims = jsonwebtoken::decode::<serde_json::Value>(raw, &key, &validation)
        .map_err(|e| IdTokenError::Invalid(e.to_string()))?
        .claims;
    let exp = claims["exp"].as_u64().ok_or_else(|| IdTokenError::Invalid("no exp".into()))?;
    if expected.now >= exp + CLOCK_SKEW_SECS {
        return Err(IdTokenError::Expired(exp));
    }
    if claims["nonce"].as_str() != Some(expected.nonce) {
        return Err(IdTokenError::Nonce);
    }
    let text = |name: &str| claims[name].as_str().filter(|s| !s.is_empty()).map(String::from);
    let subject = text("sub").ok_or_else(|| IdTokenError::Invalid("no sub".into()))?;
    let groups = match &claims[expected.groups_claim] {
        serde_json::Value::Array(items) => {
            items.iter().filter_map(|g| g.as_str().map(String::from)).collect()
        }
        serde_json::Value::String(one) => vec![one.clone()],
        _ => Vec::new(),
    };
    let user = text("preferred_username").or_else(|| text("email")).unwrap_or(subject.clone());
    Ok(Identity { subject, user, groups })
}

/// A login's secrets the CLI keeps until the redirect comes back: PKCE's verifier (RFC 7636),
/// the state that ties the redirect to this login, the nonce that ties the ID token to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginSecrets {
    pub verifier: String,
    pub state: String,
    pub nonce: String,
}

impl LoginSecrets {
    pub fn generate() -> LoginSecrets {
        let random = || {
            let bytes: [u8; 32] = rand::random();
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        };
        LoginSecrets { verifier: random(), state: random(), nonce: random() }
    }

    /// PKCE's S256 challenge of the verifier.
    pub fn challenge(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(self.verifier.as_bytes()))
    }
}

/// `GET /v1/login/oidc`: where the CLI sends its user.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginStart {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub client_id: String,
    pub scopes: String,
}

impl LoginStart {
    /// Where the browser is sent to sign in: the authorization endpoint asking for a code for
    /// `redirect_uri`, with this login's state, nonce and PKCE challenge (S256).
    pub fn authorization_url(
        &self,
        redirect_uri: &str,
        secrets: &LoginSecrets,
    ) -> Result<reqwest::Url, LoginError> {
        reqwest::Url::parse_with_params(
            &self.authorization_endpoint,
            [
                ("response_type", "code"),
                ("client_id", self.client_id.as_str()),
                ("redirect_uri", redirect_uri),
                ("scope", self.scopes.as_str()),
                ("state", secrets.state.as_str()),
                ("nonce", secrets.nonce.as_str()),
                ("code_challenge", secrets.challenge().as_str()),
                ("code_challenge_method", "S256"),
            ],
        )
        .map_err(|e| LoginError::Provider {
            issuer: self.issuer.clone(),
            problem: format!(
                "its authorization endpoint {} is not a URL: {e}",
                self.authorization_endpoint
            ),
        })
    }
}

/// `POST /v1/login/oidc`: what came back to the CLI's redirect.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginFinish {
    pub code: String,
    pub code_verifier: String,
    pub redirect_uri: String,
    pub nonce: String,
}

/// The session a login opened: its secret is shown to the CLI once.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Session {
    pub secret: String,
    pub user: String,
    pub provider: String,
    pub bindings: Vec<String>,
    pub expires_at: u64,
}

/// Why a login did not open a session.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("the OpenID provider {issuer} could not be reached or answered badly: {problem}")]
    Provider { issuer: String, problem: String },
    #[error("the provider refused the code: {0} (log in again: `cutover login`)")]
    Code(String),
    #[error(transparent)]
    IdToken(#[from] IdTokenError),
    #[error(
        "{user} signed in, but none of their groups ({groups}) is given a role here; an admin \
         maps groups to roles in cutover.yaml's access.oidc.groups (or with `cutover up \
         --oidc-group GROUP=ROLE[:SCOPES]`)"
    )]
    NoRole { user: String, groups: String },
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
}

/// The provider as configured, with its discovery document and keys fetched when first needed.
pub struct Oidc {
    pub config: OidcConfig,
    http: reqwest::Client,
}

impl Oidc {
    /// Fails only when no HTTP client can be built (no TLS roots on this machine, say).
    pub fn new(config: OidcConfig) -> Result<Oidc, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Oidc { config, http })
    }

    fn provider_error(&self, problem: impl ToString) -> LoginError {
        LoginError::Provider { issuer: self.config.issuer.clone(), problem: problem.to_string() }
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(&self, url: &str) -> Result<T, LoginError> {
        let answer = self.http.get(url).send().await.map_err(|e| self.provider_error(e))?;
        let answer = answer.error_for_status().map_err(|e| self.provider_error(e))?;
        answer.json().await.map_err(|e| self.provider_error(format!("{url}: {e}")))
    }

    async fn discovery(&self) -> Result<Discovery, LoginError> {
        let issuer = self.config.issuer.trim_end_matches('/');
        let url = format!("{issuer}/.well-known/openid-configuration");
        let discovery: Discovery = self.get_json(&url).await?;
        if discovery.issuer.trim_end_matches('/') != issuer {
            return Err(self.provider_error(format!(
                "its discovery document names issuer {}, not {issuer}",
                discovery.issuer
            )));
        }
        Ok(discovery)
    }

    pub async fn start(&self) -> Result<LoginStart, LoginError> {
        let discovery = self.discovery().await?;
        Ok(LoginStart {
            issuer: discovery.issuer,
            authorization_endpoint: discovery.authorization_endpoint,
            client_id: self.config.client_id.clone(),
            scopes: self.config.scopes.clone(),
        })
    }

    /// Redeems the code and checks its ID token; the identity and the bindings `mappings` give
    /// its groups.
    pub async fn finish(
        &self,
        login: &LoginFinish,
        now_ms: u64,
        mappings: &[GroupMapping],
    ) -> Result<(Identity, Vec<Binding>), LoginError> {
        let discovery = self.discovery().await?;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", login.code.as_str()),
            ("redirect_uri", login.redirect_uri.as_str()),
            ("code_verifier", login.code_verifier.as_str()),
            ("client_id", self.config.client_id.as_str()),
        ];
        let mut request = self.http.post(&discovery.token_endpoint).form(&form);
        if let Some(secret) = &self.config.client_secret {
            request = request.basic_auth(&self.config.client_id, Some(secret));
        }
        let answer = request.send().await.map_err(|e| self.provider_error(e))?;
        if !answer.status().is_success() {
            let status = answer.status();
            let body = answer.text().await.unwrap_or_default();
            return Err(LoginError::Code(format!("{status}: {}", body.trim())));
        }
        let tokens: TokenAnswer = answer.json().await.map_err(|e| self.provider_error(e))?;
        let raw =
            tokens.id_token.ok_or_else(|| self.provider_error("no id_token in its answer"))?;
        let jwks: JwkSet = self.get_json(&discovery.jwks_uri).await?;
        let identity = verify_id_token(
            &raw,
            &jwks,
            &Expected {
                issuer: &discovery.issuer,
                client_id: &self.config.client_id,
                nonce: &login.nonce,
                groups_claim: &self.config.groups_claim,
                now: now_ms / 1000,
            },
        )?;
        let bindings = bindings_of(&identity.groups, mappings);
        if bindings.is_empty() {
            let groups: BTreeSet<&str> = identity.groups.iter().map(String::as_str).collect();
            let groups = if groups.is_empty() {
                "none".to_string()
            } else {
                groups.into_iter().collect::<Vec<_>>().join(", ")
            };
            return Err(LoginError::NoRole { user: identity.user, groups });
        }
        Ok((identity, bindings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    const ISSUER: &str = "https://id.example.test";

    /// A provider's P-256 key: what signs, and the JWKS that publishes it.
    fn provider_key() -> (EncodingKey, JwkSet) {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let point = pair.public_key().as_ref();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks = serde_json::json!({ "keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
            "x": b64(&point[1..33]), "y": b64(&point[33..65]),
        }]});
        (EncodingKey::from_ec_der(pkcs8.as_ref()), serde_json::from_value(jwks).unwrap())
    }

    fn sign(key: &EncodingKey, claims: serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    }

    fn claims(exp: u64) -> serde_json::Value {
        serde_json::json!({
            "iss": ISSUER, "aud": "cutover", "sub": "u-1", "exp": exp, "iat": exp - 300,
            "nonce": "n-1", "preferred_username": "alice", "groups": ["deployers", "staff"],
        })
    }

    fn expected(now: u64) -> Expected<'static> {
        Expected { issuer: ISSUER, client_id: "cutover", nonce: "n-1", groups_claim: "groups", now }
    }

    #[test]
    fn an_id_token_signed_by_the_providers_key_names_the_user_and_groups() {
        let (key, jwks) = provider_key();
        let identity = verify_id_token(&sign(&key, claims(2_000)), &jwks, &expected(1_000));
        assert_eq!(
            identity,
            Ok(Identity {
                subject: "u-1".into(),
                user: "alice".into(),
                groups: vec!["deployers".into(), "staff".into()],
            })
        );
    }

    #[test]
    fn a_tampered_id_token_is_refused() {
        let (key, jwks) = provider_key();
        let token = sign(&key, claims(2_000));
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged = claims(2_000);
        forged["groups"] = serde_json::json!(["admins"]);
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged.to_string());
        let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
        let err = verify_id_token(&tampered, &jwks, &expected(1_000)).unwrap_err();
        assert_eq!(err, IdTokenError::Invalid("InvalidSignature".into()));
        // Signed by a key the provider does not publish.
        let (other, _) = provider_key();
        let err = verify_id_token(&sign(&other, claims(2_000)), &jwks, &expected(1_000));
        assert_eq!(err.unwrap_err(), IdTokenError::Invalid("InvalidSignature".into()));
        // A symmetric algorithm, whose "key" anyone reading the JWKS could use.
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(2_000),
            &EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        let err = verify_id_token(&hs, &jwks, &expected(1_000)).unwrap_err();
        assert_eq!(err, IdTokenError::Algorithm(Algorithm::HS256));
    }

    #[test]
    fn an_expired_id_token_or_one_of_another_login_issuer_or_client_is_refused() {
        let (key, jwks) = provider_key();
        let token = sign(&key, claims(2_000));
        assert!(verify_id_token(&token, &jwks, &expected(2_000 + CLOCK_SKEW_SECS - 1)).is_ok());
        let err = verify_id_token(&token, &jwks, &expected(2_000 + CLOCK_SKEW_SECS));
        assert_eq!(err.unwrap_err(), IdTokenError::Expired(2_000));
        let other_nonce = Expected { nonce: "n-2", ..expected(1_000) };
        assert_eq!(verify_id_token(&token, &jwks, &other_nonce), Err(IdTokenError::Nonce));
        let other_issuer = Expected { issuer: "https://evil.test", ..expected(1_000) };
        let err = verify_id_token(&token, &jwks, &other_issuer).unwrap_err();
        assert_eq!(err, IdTokenError::Invalid("InvalidIssuer".into()));
        let other_client = Expected { client_id: "other", ..expected(1_000) };
        let err = verify_id_token(&token, &jwks, &other_client).unwrap_err();
        assert_eq!(err, IdTokenError::Invalid("InvalidAudience".into()));
    }

    #[test]
    fn groups_map_to_the_bindings_configured_for_them() {
        let deployers = parse_group_mapping("deployers=deployer:web/*,web").unwrap();
        assert_eq!(deployers.group, "deployers");
        assert_eq!(deployers.binding.scopes, vec!["web/*".to_string(), "web".to_string()]);
        let admins = parse_group_mapping("platform=admin").unwrap();
        assert_eq!(admins.binding, Binding::admin());
        let mappings = [deployers.clone(), admins];
        assert_eq!(bindings_of(&["deployers".into()], &mappings), vec![deployers.binding]);
        assert!(bindings_of(&["staff".into()], &mappings).is_empty());
        assert_eq!(
            parse_group_mapping("deployers").unwrap_err().to_string(),
            "--oidc-group `deployers`: expected GROUP=ROLE or GROUP=ROLE:SCOPE,SCOPE (e.g. \
             deployers=deployer:web/*,web)"
        );
        assert_eq!(
            parse_group_mapping("ops=root").unwrap_err().to_string(),
            "--oidc-group `ops=root`: no role `root`; the roles are viewer, deployer and admin \
             (`docs/access.md`)"
        );
    }

    #[test]
    fn groups_declared_in_the_file_map_to_bindings_on_their_scopes_or_everything() {
        use model::access::{DeclaredGroup, GroupGrant};
        let declared = [DeclaredGroup {
            group: "release".into(),
            grants: vec![
                GroupGrant { role: "release-manager".into(), scopes: vec!["web/*".into()] },
                GroupGrant { role: "viewer".into(), scopes: vec![] },
            ],
        }];
        let mappings = declared_mappings(&declared);
        let bindings = bindings_of(&["release".into()], &mappings);
        let shown: Vec<String> = bindings.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["role release-manager on web/*", "role viewer on *"]);
        assert!(bindings_of(&["deployers".into()], &mappings).is_empty());
    }

    #[test]
    fn pkce_challenges_are_the_s256_of_their_verifier() {
        let secrets = LoginSecrets {
            verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(),
            state: String::new(),
            nonce: String::new(),
        };
        // RFC 7636, appendix B.
        assert_eq!(secrets.challenge(), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        let (a, b) = (LoginSecrets::generate(), LoginSecrets::generate());
        assert_ne!(a.verifier, b.verifier);
        assert_ne!(a.state, a.nonce);
        assert_eq!(a.verifier.len(), 43);
    }
}
