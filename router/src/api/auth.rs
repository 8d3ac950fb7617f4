//! Authentication and authorization of every API request.
//!
//! [`check`] runs on each matched route before its handler: it decides
//! from the method and the route alone what the request needs
//! ([`action`]), authenticates the bearer token against the tokens of the
//! cluster map (or the router's configured root token) and asks
//! [`ringup_proto::auth::permits`]. A refusal is `401` or `403` before any
//! record is read, so it never tells whether a record exists.

use std::path::Path;

use anyhow::{Context, bail};
use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ring::digest::{SHA256, digest};
use ringup_proto::auth::{Action, Denied, Presented, ROOT_ID, Role, TokenEntry, authenticate, permits};

use super::State;
use super::error::ApiError;

/// How the router checks requests.
pub struct Auth {
    /// False only when turned off explicitly, for development.
    enabled: bool,
    /// The administrator token the router was configured with.
    root: Option<TokenEntry>,
}

impl Auth {
    /// Every request is let through: `--insecure-no-auth`.
    pub fn off() -> Self {
        Self { enabled: false, root: None }
    }

    /// Tokens are checked; `root_file` holds the root administrator token.
    pub fn on(root_file: Option<&Path>) -> anyhow::Result<Self> {
        let root = match root_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the admin token {}", path.display()))?;
                Some(root_entry(text.trim()).with_context(|| format!("in {}", path.display()))?)
            }
            None => None,
        };
        Ok(Self { enabled: true, root })
    }

    /// Whether requests are checked.
    pub fn enabled(&self) -> bool {
        self.enabled
    }
}

/// The map entry standing for the configured root token.
fn root_entry(token: &str) -> anyhow::Result<TokenEntry> {
    match Presented::parse(token) {
        Some(p) if p.id == ROOT_ID => Ok(TokenEntry {
            id: ROOT_ID.into(),
            role: Role::Admin,
            shop: None,
            digest: secret_digest(p.secret),
            created_ms: 0,
            name: Some("configured on the router".into()),
        }),
        _ => bail!(
            "the admin token must read rgu_root_ followed by at least 32 of [A-Za-z0-9_-] (`ringup token root` makes one)"
        ),
    }
}

/// The SHA-256 of a token's secret, as the map keeps it.
pub fn secret_digest(secret: &str) -> [u8; 32] {
    digest(&SHA256, secret.as_bytes()).as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// What a request to `route` with `method` needs; `shop` is the shop in
/// its path, if the route has one.
pub fn action(method: &Method, route: &str, shop: Option<&str>) -> Action {
    match (route, shop) {
        (r, Some(shop)) if r.starts_with("/v1/shops/") => {
            let shop = shop.to_string();
            if method == Method::GET || method == Method::HEAD {
                Action::ReadRecords { shop }
            } else {
                Action::WriteRecords { shop }
            }
        }
        ("/v1/query", _) => Action::Report,
        ("/v1/cluster", _) if method == Method::GET => Action::ClusterRead,
        (r, _) if r.starts_with("/v1/cluster") => Action::ClusterChange,
        (r, _) if r.starts_with("/v1/tokens") => Action::Tokens,
        (r, _) if r.starts_with("/v1/") => Action::ClusterChange,
        _ => Action::Open,
    }
}

/// The middleware: lets the request through or answers 401/403.
pub async fn check(state: State, request: Request, next: Next) -> Response {
    if !state.auth.enabled {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let route = parts.extensions.get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_default();
    let shop = match RawPathParams::from_request_parts(&mut parts, &state).await {
        Ok(params) => params.iter().find(|(k, _)| *k == "shop").map(|(_, v)| v.to_string()),
        Err(_) => None,
    };
    let needed = action(&parts.method, &route, shop.as_deref());
    if needed != Action::Open {
        let header = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let presented = header.and_then(Presented::from_header);
        let digest = presented.map_or([0; 32], |p| secret_digest(p.secret));
        let map = state.view.map();
        let lookup = |id: &str| match &state.auth.root {
            Some(root) if id == ROOT_ID => Some(root),
            _ => map.as_ref().and_then(|m| m.tokens.get(id)),
        };
        let decided = authenticate(presented, &digest, lookup).and_then(|who| permits(&who, &needed));
        if let Err(denied) = decided {
            super::body::discard(body).await;
            return match denied {
                Denied::Unauthenticated(why) => ApiError::unauthorized(why),
                Denied::Forbidden(why) => ApiError::forbidden(why),
            }
            .into_response();
        }
    }
    next.run(Request::from_parts(parts, body)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route the API serves, with each of its methods, maps to the
    /// action the role table expects.
    #[test]
    fn every_route_maps_to_its_action() {
        let shop = Some("s1");
        let cases = [
            (Method::GET, "/v1/shops/{shop}/{collection}", shop, "read s1"),
            (Method::POST, "/v1/shops/{shop}/{collection}", shop, "write s1"),
            (Method::GET, "/v1/shops/{shop}/{collection}/_count", shop, "read s1"),
            (Method::GET, "/v1/shops/{shop}/{collection}/{id}", shop, "read s1"),
            (Method::PUT, "/v1/shops/{shop}/{collection}/{id}", shop, "write s1"),
            (Method::PATCH, "/v1/shops/{shop}/{collection}/{id}", shop, "write s1"),
            (Method::DELETE, "/v1/shops/{shop}/{collection}/{id}", shop, "write s1"),
            (Method::POST, "/v1/query", None, "report"),
            (Method::GET, "/v1/cluster", None, "cluster read"),
            (Method::POST, "/v1/cluster/nodes", None, "cluster change"),
            (Method::DELETE, "/v1/cluster/nodes/{id}", None, "cluster change"),
            (Method::POST, "/v1/cluster/nodes/{id}/remove", None, "cluster change"),
            (Method::POST, "/v1/cluster/migrations/abort", None, "cluster change"),
            (Method::POST, "/v1/tokens", None, "tokens"),
            (Method::GET, "/v1/tokens", None, "tokens"),
            (Method::DELETE, "/v1/tokens/{id}", None, "tokens"),
            (Method::GET, "/healthz", None, "open"),
            (Method::GET, "/readyz", None, "open"),
            (Method::GET, "/metrics", None, "open"),
            (Method::GET, "/v1/something-new", None, "cluster change"),
        ];
        for (method, route, shop, expected) in cases {
            let got = match action(&method, route, shop) {
                Action::Open => "open".to_string(),
                Action::ReadRecords { shop } => format!("read {shop}"),
                Action::WriteRecords { shop } => format!("write {shop}"),
                Action::Report => "report".into(),
                Action::ClusterRead => "cluster read".into(),
                Action::ClusterChange => "cluster change".into(),
                Action::Tokens => "tokens".into(),
            };
            assert_eq!(got, expected, "{method} {route}");
        }
    }

    #[test]
    fn the_root_token_must_have_the_root_id_and_a_long_secret() {
        let secret = "x".repeat(40);
        let root = root_entry(&format!("rgu_root_{secret}")).unwrap();
        assert_eq!((root.id.as_str(), root.role), (ROOT_ID, Role::Admin));
        assert_eq!(root.digest, secret_digest(&secret));
        assert!(root_entry(&format!("rgu_0123456789abcdef_{secret}")).is_err());
        assert!(root_entry("rgu_root_short").is_err());
    }
}
