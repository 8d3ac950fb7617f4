//! `ringup token`: create, list and revoke API tokens, and make a root
//! token for the routers' `--admin-token-file`. Also where every command
//! finds the token it sends ([`from_env`]) and its HTTP client ([`http`]).

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::{Value, json};

use super::{DEFAULT_ROUTER, table};
use ringup_router::api::tokens::{generate, token_string};

/// Where `ringup local` keeps its admin token, under its directory.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Arguments of `ringup token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The router's URL.
    #[arg(long, env = "RINGUP_ROUTER", default_value = DEFAULT_ROUTER)]
    pub router: String,
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// The token subcommands.
#[derive(Debug, Subcommand)]
pub enum Action {
    /// Create a token and print it; its secret is shown only once.
    Create {
        /// shop, analyst or admin.
        #[arg(long)]
        role: String,
        /// The shop of a shop token.
        #[arg(long)]
        shop: Option<String>,
        /// A label to recognise it by in `ringup token list`.
        #[arg(long)]
        name: Option<String>,
    },
    /// List the tokens (without their secrets).
    List,
    /// Revoke a token by its id.
    Revoke {
        /// The token's id, as `ringup token list` shows it.
        id: String,
    },
    /// Print a new root token for a router's --admin-token-file (no router
    /// is asked).
    Root,
}

/// The root token in `path`, made and written there (readable by its
/// owner only) if the file does not exist.
pub fn ensure_root_token(path: &std::path::Path) -> anyhow::Result<String> {
    if let Ok(text) = std::fs::read_to_string(path) {
        return Ok(text.trim().to_string());
    }
    let (_, secret) = generate(16);
    let token = token_string(ringup_proto::auth::ROOT_ID, &secret);
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    let mut file = file.open(path).with_context(|| format!("cannot create {}", path.display()))?;
    std::io::Write::write_all(&mut file, format!("{token}\n").as_bytes())?;
    Ok(token)
}

/// The token the CLI sends: see [`ringup_bench::token_from_env`].
pub fn from_env() -> anyhow::Result<Option<String>> {
    ringup_bench::token_from_env()
}

/// An HTTP client that sends `token` with every request, and trusts the
/// CA certificate in the file `RINGUP_CA_FILE` names, if any, for an
/// HTTPS router.
pub fn client_with(token: Option<&str>, timeout: Option<Duration>) -> anyhow::Result<reqwest::Client> {
    let ca = std::env::var_os("RINGUP_CA_FILE").map(std::path::PathBuf::from);
    client_trusting(token, timeout, ca.as_deref())
}

/// [`client_with`], trusting the CA certificate in `ca`.
pub fn client_trusting(
    token: Option<&str>,
    timeout: Option<Duration>,
    ca: Option<&std::path::Path>,
) -> anyhow::Result<reqwest::Client> {
    let mut headers = HeaderMap::new();
    if let Some(token) = token {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).context("the token is not a valid header")?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    let mut builder = reqwest::Client::builder().default_headers(headers);
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).with_context(|| format!("cannot read the CA certificate {}", ca.display()))?;
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    Ok(builder.build()?)
}

/// The CLI's HTTP client, with the token from [`from_env`].
pub fn http(timeout: Option<Duration>) -> anyhow::Result<reqwest::Client> {
    client_with(from_env()?.as_deref(), timeout)
}

/// Reads an answer: its JSON body on success, the router's message as the
/// error otherwise (with a hint when the token was missing or refused).
pub async fn answer(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let text = response.text().await.context("cannot read the router's answer")?;
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    let message = body["error"]["message"].as_str().unwrap_or(&text).to_string();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        bail!("the router answered {status}: {message}\nset RINGUP_TOKEN (or RINGUP_TOKEN_FILE) to a token");
    }
    bail!("the router answered {status}: {message}")
}

/// Runs `ringup token`.
pub async fn run(args: TokenArgs) -> anyhow::Result<()> {
    if let Action::Root = args.action {
        let (_, secret) = generate(16);
        println!("{}", token_string(ringup_proto::auth::ROOT_ID, &secret));
        return Ok(());
    }
    let base = args.router.trim_end_matches('/');
    let http = http(Some(Duration::from_secs(30)))?;
    let reach = || format!("cannot reach the router at {base}");
    match args.action {
        Action::Create { role, shop, name } => {
            let body = json!({ "role": role, "shop": shop, "name": name });
            let created =
                answer(http.post(format!("{base}/v1/tokens")).json(&body).send().await.with_context(reach)?).await?;
            println!("{}", created["token"].as_str().unwrap_or_default());
            eprintln!(
                "created token {} (role {}{}); its secret is shown only this once",
                created["id"].as_str().unwrap_or("?"),
                created["role"].as_str().unwrap_or("?"),
                created["shop"].as_str().map(|s| format!(", shop {s}")).unwrap_or_default()
            );
        }
        Action::List => {
            let listed = answer(http.get(format!("{base}/v1/tokens")).send().await.with_context(reach)?).await?;
            let mut tokens = table::plain(&["ID", "ROLE", "SHOP", "CREATED", "NAME"], &[]);
            for t in listed["tokens"].as_array().into_iter().flatten() {
                let text = |k: &str| t[k].as_str().unwrap_or("-").to_string();
                tokens.add_row(vec![text("id"), text("role"), text("shop"), text("created"), text("name")]);
            }
            print!("{}", table::render(&tokens));
        }
        Action::Revoke { id } => {
            let response = http.delete(format!("{base}/v1/tokens/{id}")).send().await.with_context(reach)?;
            answer(response).await?;
            println!("revoked token {id}");
        }
        Action::Root => unreachable!("handled above"),
    }
    Ok(())
}
