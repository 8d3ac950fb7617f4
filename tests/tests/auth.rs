//! Tokens and roles end to end: every route of the API against every kind
//! of caller, with the status each must get, and the store unchanged by
//! every refused request.
//!
//! The callers: no token, a well-formed token with a wrong secret, a
//! revoked token, a shop token of another shop, an analyst, a shop token of
//! the shop in the paths, and the root admin. The expected statuses are
//! written out here from the role table of the API contract, not derived
//! from the router's code.

use reqwest::{Method, StatusCode};
use ringup_tests::{TestCluster, send};
use serde_json::{Value, json};

const SHOP: &str = "/v1/shops/s1/sales";

/// Who sends a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    None,
    Bad,
    Revoked,
    OtherShop,
    Analyst,
    OwnShop,
    Admin,
}

const CALLERS: [Caller; 7] =
    [Caller::None, Caller::Bad, Caller::Revoked, Caller::OtherShop, Caller::Analyst, Caller::OwnShop, Caller::Admin];

/// One route with a request that would succeed for a caller allowed it.
struct Route {
    method: Method,
    path: &'static str,
    body: Option<Value>,
    /// What each of the allowed callers gets.
    allowed: u16,
    /// Which callers are allowed (those with a valid token may still be
    /// refused by role or shop).
    who: &'static [Caller],
}

const READERS: &[Caller] = &[Caller::Analyst, Caller::OwnShop, Caller::Admin];
const WRITERS: &[Caller] = &[Caller::OwnShop, Caller::Admin];
const ADMIN: &[Caller] = &[Caller::Admin];
const ANALYSTS: &[Caller] = &[Caller::Analyst, Caller::Admin];
const EVERYONE: &[Caller] = &CALLERS;

fn routes() -> Vec<Route> {
    let r = |method: Method, path, body, allowed, who| Route { method, path, body, allowed, who };
    vec![
        r(Method::POST, SHOP, Some(json!([{"id": "w1", "n": 1}])), 200, WRITERS),
        r(Method::GET, SHOP, None, 200, READERS),
        r(Method::GET, "/v1/shops/s1/sales/_count", None, 200, READERS),
        r(Method::GET, "/v1/shops/s1/sales/r1", None, 200, READERS),
        // A record that does not exist: refused callers cannot tell.
        r(Method::GET, "/v1/shops/s1/sales/missing", None, 404, READERS),
        r(Method::PUT, "/v1/shops/s1/sales/w2", Some(json!({"n": 2})), 200, WRITERS),
        r(Method::PATCH, "/v1/shops/s1/sales/r1", Some(json!({"patched": true})), 200, WRITERS),
        r(Method::DELETE, "/v1/shops/s1/sales/r2", None, 204, WRITERS),
        r(Method::POST, "/v1/query", Some(json!({"sql": "SELECT count(*) FROM sales"})), 200, ANALYSTS),
        r(Method::GET, "/v1/cluster", None, 200, ADMIN),
        // Bodies an admin gets a 4xx for, so that the cluster stays as it is.
        r(Method::POST, "/v1/cluster/nodes", Some(json!({"addr": "not an address"})), 400, ADMIN),
        r(Method::DELETE, "/v1/cluster/nodes/99", None, 404, ADMIN),
        r(Method::POST, "/v1/cluster/nodes/99/remove", None, 404, ADMIN),
        r(Method::POST, "/v1/cluster/migrations/abort", None, 409, ADMIN),
        r(Method::POST, "/v1/tokens", Some(json!({"role": "analyst", "name": "from the table"})), 201, ADMIN),
        r(Method::GET, "/v1/tokens", None, 200, ADMIN),
        r(Method::DELETE, "/v1/tokens/ffffffffffffffff", None, 404, ADMIN),
        r(Method::GET, "/healthz", None, 200, EVERYONE),
        r(Method::GET, "/readyz", None, 200, EVERYONE),
        r(Method::GET, "/metrics", None, 200, EVERYONE),
    ]
}

/// The status `caller` must get on `route`.
fn expected(route: &Route, caller: Caller) -> u16 {
    if route.who.contains(&caller) {
        route.allowed
    } else if matches!(caller, Caller::None | Caller::Bad | Caller::Revoked) {
        401
    } else {
        403
    }
}

/// Creates a token through the API as the admin; returns (id, token).
async fn create(cluster: &TestCluster, body: Value) -> (String, String) {
    let (status, made) = cluster.post_json("/v1/tokens", &body).await;
    assert_eq!(status, 201, "{made}");
    assert!(made["token"].as_str().unwrap().starts_with("rgu_"), "{made}");
    (made["id"].as_str().unwrap().to_string(), made["token"].as_str().unwrap().to_string())
}

/// What the store holds that a request could change: shop s1's records,
/// another shop's, the tokens and the cluster's members.
async fn state(cluster: &TestCluster) -> Value {
    let (_, s1) = cluster.get(&format!("{SHOP}?limit=1000&consistency=all")).await;
    let (_, s2) = cluster.get("/v1/shops/s2/sales?limit=1000&consistency=all").await;
    let (_, tokens) = cluster.get("/v1/tokens").await;
    let (_, map) = cluster.get("/v1/cluster").await;
    json!({"s1": s1["records"], "s2": s2["records"], "tokens": tokens["tokens"], "nodes": map["nodes"].as_array().map(|n| n.len())})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_answers_every_caller_as_the_role_table_says() {
    let cluster = TestCluster::start(3).await;
    let seed = json!([{"id": "r1", "n": 1}, {"id": "r2", "n": 2}]);
    assert_eq!(cluster.post_json(SHOP, &seed).await.0, 200);
    assert_eq!(cluster.post_json("/v1/shops/s2/sales", &json!([{"id": "x", "n": 9}])).await.0, 200);

    let (_, own) = create(&cluster, json!({"role": "shop", "shop": "s1", "name": "own"})).await;
    let (_, other) = create(&cluster, json!({"role": "shop", "shop": "s2"})).await;
    let (_, analyst) = create(&cluster, json!({"role": "analyst"})).await;
    let (revoked_id, revoked) = create(&cluster, json!({"role": "shop", "shop": "s1"})).await;
    let (status, _) = cluster.call(Method::DELETE, &format!("/v1/tokens/{revoked_id}"), None, vec![]).await;
    assert_eq!(status, 204);
    let (status, again) = cluster.call(Method::DELETE, &format!("/v1/tokens/{revoked_id}"), None, vec![]).await;
    assert_eq!(status, 404, "a token is revoked once: {again}");
    // The own token with its secret's last character changed.
    let mut bad = own.clone();
    let last = bad.pop().unwrap();
    bad.push(if last == 'A' { 'B' } else { 'A' });
    let admin = cluster.admin_token();
    let token_of = |caller: Caller| -> Option<&str> {
        match caller {
            Caller::None => None,
            Caller::Bad => Some(&bad),
            Caller::Revoked => Some(&revoked),
            Caller::OtherShop => Some(&other),
            Caller::Analyst => Some(&analyst),
            Caller::OwnShop => Some(&own),
            Caller::Admin => Some(&admin),
        }
    };

    // Without the default header: each request carries its own token, if any.
    let plain = reqwest::Client::builder().build().unwrap();
    let routes = routes();
    let mut failures = Vec::new();
    let mut cases = 0;
    let before = state(&cluster).await;
    // The refused cases first, then the store must be as it was.
    for refused in [true, false] {
        for route in &routes {
            for caller in CALLERS {
                let want = expected(route, caller);
                if (want == 401 || want == 403) != refused {
                    continue;
                }
                cases += 1;
                let mut request = plain.request(route.method.clone(), cluster.url(route.path));
                if let Some(token) = token_of(caller) {
                    request = request.bearer_auth(token);
                }
                let body = route.body.as_ref().map(|b| b.to_string().into_bytes()).unwrap_or_default();
                let content_type = route.body.as_ref().map(|_| "application/json");
                let (status, answer) = send(request, content_type, body).await;
                let code = answer["error"]["code"].as_str().unwrap_or_default();
                let right_code = match want {
                    401 => code == "unauthorized",
                    403 => code == "forbidden",
                    _ => true,
                };
                if status != StatusCode::from_u16(want).unwrap() || !right_code {
                    failures.push(format!(
                        "{} {} as {caller:?}: want {want}, got {status} {answer}",
                        route.method, route.path
                    ));
                }
            }
        }
        if refused {
            assert_eq!(state(&cluster).await, before, "a refused request changed the store");
        }
    }
    assert!(failures.is_empty(), "{} of {cases} cases failed:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(cases, routes.len() * CALLERS.len());
    println!("auth cases: {cases} ({} routes x {} callers), all as expected", routes.len(), CALLERS.len());

    // A 401 tells the client how to authenticate.
    let response = plain.get(cluster.url(SHOP)).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().get("www-authenticate").is_some_and(|v| v.to_str().unwrap().starts_with("Bearer")));

    // The shop token's writes landed in its own shop; the list shows no secrets.
    let (_, w1) = cluster.get("/v1/shops/s1/sales/w1").await;
    assert_eq!(w1["n"], 1, "{w1}");
    let (_, tokens) = cluster.get("/v1/tokens").await;
    let listed = tokens["tokens"].as_array().unwrap();
    assert!(listed.iter().all(|t| t.get("token").is_none() && t.get("digest").is_none()), "{tokens}");
    assert!(listed.iter().all(|t| t["id"] != revoked_id.as_str()), "a revoked token is not listed");
    assert!(!tokens.to_string().contains(own.rsplit('_').next().unwrap()), "no secret is listed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_token_requests_are_refused_clearly() {
    let cluster = TestCluster::start(3).await;
    for (body, code) in [
        (json!({"role": "shop"}), "invalid_token"),
        (json!({"role": "shop", "shop": "has space"}), "invalid_token"),
        (json!({"role": "analyst", "shop": "s1"}), "invalid_token"),
        (json!({"role": "owner"}), "invalid_role"),
        (json!({"role": "admin", "extra": 1}), "invalid_json"),
    ] {
        let (status, answer) = cluster.post_json("/v1/tokens", &body).await;
        assert_eq!((status.as_u16(), answer["error"]["code"].as_str()), (400, Some(code)), "{body}: {answer}");
    }
    let (status, answer) = cluster.call(Method::DELETE, "/v1/tokens/root", None, vec![]).await;
    assert_eq!(status, 409, "the configured root token cannot be revoked through the API: {answer}");
    let (_, tokens) = cluster.get("/v1/tokens").await;
    assert_eq!(tokens["tokens"], json!([]), "no refused request made a token");
}
