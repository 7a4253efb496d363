//! The CLI's HTTP client for the control plane's API.

use std::time::Duration;

use anyhow::{Context, bail};
use control::api::ErrorBody;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub struct Client {
    http: reqwest::blocking::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(base: String, token: Option<String>) -> Client {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .no_proxy()
            .build()
            .expect("invariant: a plain HTTP client always builds");
        Client { http, base: base.trim_end_matches('/').to_string(), token }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request
    }

    fn finish<T: DeserializeOwned>(
        &self,
        response: reqwest::Result<reqwest::blocking::Response>,
    ) -> anyhow::Result<T> {
        let response = response.map_err(|err| {
            if err.is_connect() {
                anyhow::anyhow!(
                    "cannot reach cutover at {} ({err}); is `cutover up` running? (set --api or CUTOVER_API)",
                    self.base
                )
            } else {
                anyhow::anyhow!("talking to {}: {err}", self.base)
            }
        })?;
        let status = response.status();
        let text = response.text().context("reading the answer")?;
        if !status.is_success() {
            match serde_json::from_str::<ErrorBody>(&text) {
                Ok(body) => {
                    let mut message = body.error;
                    for diagnostic in body.diagnostics {
                        message.push_str("\n  ");
                        message.push_str(&diagnostic);
                    }
                    bail!("{message}")
                }
                Err(_) => bail!("{status}: {text}"),
            }
        }
        serde_json::from_str(&text)
            .with_context(|| format!("unexpected answer from {}: {text}", self.base))
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.finish(self.request(reqwest::Method::GET, path).send())
    }

    pub fn get_text(&self, path: &str) -> anyhow::Result<reqwest::blocking::Response> {
        let response = self
            .request(reqwest::Method::GET, path)
            .timeout(Duration::from_secs(24 * 3600))
            .send()?;
        if !response.status().is_success() {
            let text = response.text().unwrap_or_default();
            match serde_json::from_str::<ErrorBody>(&text) {
                Ok(body) => bail!("{}", body.error),
                Err(_) => bail!("{text}"),
            }
        }
        Ok(response)
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.finish(self.request(reqwest::Method::POST, path).json(body).send())
    }

    pub fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.finish(self.request(reqwest::Method::PUT, path).json(body).send())
    }

    pub fn delete<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.finish(self.request(reqwest::Method::DELETE, path).json(body).send())
    }
}
