//! `cutover login`: single sign-on through the API's OpenID provider, as `gh auth login --web`
//! and `argocd login --sso` do it: the browser signs in at the provider, which redirects to a
//! one-shot listener of the CLI on loopback (RFC 8252) with the code; cutover redeems the code
//! (PKCE's verifier proves this CLI asked for it) and answers with a session credential, which
//! the CLI keeps privately (mode 0600) and presents like a token until it expires.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use control::access::oidc::{LoginFinish, LoginSecrets, LoginStart, Session};
use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::client::Client;

/// The API's single sign-on endpoint.
pub const LOGIN_PATH: &str = "/v1/login/oidc";

/// How long `login` waits for the browser to come back.
const BROWSER_WAIT: Duration = Duration::from_secs(300);

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// Only print the URL to open (on a machine without a browser, open it elsewhere and
    /// forward the callback port).
    #[arg(long)]
    no_browser: bool,
    /// The loopback port of the redirect; any free one by default.
    #[arg(long, default_value_t = 0)]
    callback_port: u16,
}

/// The sessions the CLI keeps, by API URL (`$XDG_CONFIG_HOME/cutover/sessions.json`, or
/// `~/.config/cutover/sessions.json`), readable only by their owner.
#[derive(Default, Serialize, Deserialize)]
struct Sessions {
    #[serde(flatten)]
    by_api: BTreeMap<String, Session>,
}

fn sessions_path() -> Option<PathBuf> {
    let config =
        std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(config.join("cutover").join("sessions.json"))
}

fn read_sessions(path: &Path) -> Sessions {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// The secret of this user's session with `api`. One that has expired is presented all the
/// same: the API's refusal says whose session expired and to run `cutover login`.
pub fn session_secret(api: &str) -> Option<String> {
    let sessions = read_sessions(&sessions_path()?);
    Some(sessions.by_api.get(api.trim_end_matches('/'))?.secret.clone())
}

/// Writes `sessions` so that only its owner can read it: the directory 0700, the file 0600,
/// written to a temporary file and renamed into place.
fn write_sessions(path: &Path, sessions: &Sessions) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().context("the sessions file has no directory")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let temporary = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("writing {}", temporary.display()))?;
    file.write_all(serde_json::to_string_pretty(sessions)?.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub fn login(client: &Client, args: LoginArgs) -> anyhow::Result<ExitCode> {
    let start: LoginStart = client.get(LOGIN_PATH)?;
    let listener = TcpListener::bind(("127.0.0.1", args.callback_port))
        .context("listening on loopback for the browser's redirect")?;
    let redirect_uri = format!("http://127.0.0.1:{}/callback", listener.local_addr()?.port());
    let secrets = LoginSecrets::generate();
    let url = start.authorization_url(&redirect_uri, &secrets)?;
    eprintln!("Sign in at {} in your browser:\n\n  {url}\n", start.issuer);
    if !args.no_browser {
        open_browser(url.as_str());
    }
    let code = wait_for_code(&listener, &secrets.state)?;
    let session: Session = client.post(
        LOGIN_PATH,
        &LoginFinish {
            code,
            code_verifier: secrets.verifier.clone(),
            redirect_uri,
            nonce: secrets.nonce.clone(),
        },
    )?;
    let path = sessions_path().context("neither XDG_CONFIG_HOME nor HOME is set")?;
    let mut sessions = read_sessions(&path);
    let (user, expires_at) = (session.user.clone(), session.expires_at);
    let bindings = session.bindings.join(", ");
    sessions.by_api.insert(client.base().trim_end_matches('/').to_string(), session);
    write_sessions(&path, &sessions)?;
    println!(
        "logged in to {} as {user} ({bindings}) until {}",
        client.base(),
        control::access::utc_text(expires_at)
    );
    Ok(ExitCode::SUCCESS)
}

/// Best effort: where no browser opens, the user opens the printed URL.
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
    let _ = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

/// Answers the browser's redirect; the code, once it comes back with this login's state.
fn wait_for_code(listener: &TcpListener, state: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + BROWSER_WAIT;
    listener.set_nonblocking(true)?;
    loop {
        let (stream, _) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    bail!(
                        "the browser did not come back within 5 minutes; run `cutover login` again"
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut request_line = String::new();
        BufReader::new(&stream).read_line(&mut request_line)?;
        let target = request_line.split_whitespace().nth(1).unwrap_or("/");
        let url = Url::parse(&format!("http://127.0.0.1{target}"))?;
        if url.path() != "/callback" {
            respond(&stream, "404 Not Found", "Not the sign-in callback.")?;
            continue;
        }
        let param =
            |name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
        if let Some(error) = param("error") {
            respond(&stream, "400 Bad Request", "Sign-in failed; see the terminal.")?;
            let description = param("error_description").unwrap_or_default();
            bail!("the provider refused the sign-in: {error} {description}");
        }
        if param("state").as_deref() != Some(state) {
            // Not this login's redirect (a stale tab, or a forged one): keep waiting.
            respond(&stream, "400 Bad Request", "This is not the sign-in this terminal started.")?;
            continue;
        }
        let Some(code) = param("code") else {
            respond(&stream, "400 Bad Request", "The redirect has no code.")?;
            bail!("the provider's redirect has no code");
        };
        respond(&stream, "200 OK", "Signed in to cutover; you can close this window.")?;
        return Ok(code);
    }
}

fn respond(mut stream: &std::net::TcpStream, status: &str, text: &str) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{text}",
        text.len()
    )
}
