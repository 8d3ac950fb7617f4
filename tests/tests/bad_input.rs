//! Bad input gets the documented 4xx JSON error and leaves the store as it
//! was.

use reqwest::Method;
use ringup_tests::{TestCluster, send};
use serde_json::{Value, json};

/// One bad request and the answer it must get.
struct Case {
    name: &'static str,
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

fn case(
    name: &'static str,
    method: Method,
    path: &str,
    content_type: Option<&'static str>,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: &'static str,
) -> Case {
    Case { name, method, path: path.to_string(), content_type, body: body.into(), status, code }
}

/// What is wrong with the answer to `c`, if anything: its status, its
/// error code, or a missing message.
fn mismatch(c: &Case, status: reqwest::StatusCode, body: &Value) -> Option<String> {
    let code = body["error"]["code"].as_str().unwrap_or("<no JSON error>");
    let message = body["error"]["message"].as_str().unwrap_or("");
    (status.as_u16() != c.status || code != c.code || message.is_empty())
        .then(|| format!("{}: expected {} {}, got {status} {body}", c.name, c.status, c.code))
}

const JSON: Option<&str> = Some("application/json");
const NDJSON: Option<&str> = Some("application/x-ndjson");
const BATCH: &str = "/v1/shops/victim/sales";

/// Ten records of which the one at index 7 has an invalid id.
fn batch_with_bad_record_7() -> Vec<u8> {
    let records: Vec<Value> =
        (0..10).map(|i| json!({"id": if i == 7 { "_bad".to_string() } else { format!("b{i}") }, "n": i})).collect();
    Value::Array(records).to_string().into_bytes()
}

fn cases() -> Vec<Case> {
    let huge_field = "x".repeat((1 << 20) + 10);
    let long_field_name = json!([{"id": "a", "f".repeat(70_000): 1}]).to_string();
    let big_record = json!([{"id": "big", "blob": huge_field}]).to_string();
    let big_body =
        format!("[{}]", vec![json!({"id": "p", "pad": "y".repeat((1 << 20) - 64)}).to_string(); 17].join(","));
    vec![
        case("malformed JSON", Method::POST, BATCH, JSON, r#"[{"id": "a","#, 400, "invalid_json"),
        case("JSON that is not an array", Method::POST, BATCH, JSON, r#"{"id": "a"}"#, 400, "invalid_json"),
        case("malformed NDJSON line", Method::POST, BATCH, NDJSON, "{\"id\":\"a\"}\n{oops}\n", 400, "invalid_json"),
        case("record 7 of 10 is bad", Method::POST, BATCH, JSON, batch_with_bad_record_7(), 400, "invalid_id"),
        case("a record that is not an object", Method::POST, BATCH, JSON, r#"[{"id":"a"}, 5]"#, 400, "invalid_record"),
        case("a record without id", Method::POST, BATCH, JSON, r#"[{"n": 1}]"#, 400, "invalid_id"),
        case("a bad ts", Method::POST, BATCH, JSON, r#"[{"id": "a", "ts": "noon"}]"#, 400, "invalid_ts"),
        case("a field name over 1 KiB", Method::POST, BATCH, JSON, long_field_name, 400, "invalid_field"),
        case("a record over 1 MiB", Method::POST, BATCH, JSON, big_record, 413, "record_too_large"),
        case("a body over 16 MiB", Method::POST, BATCH, JSON, big_body, 413, "body_too_large"),
        case("invalid shop", Method::POST, "/v1/shops/bad%20shop!/sales", JSON, "[]", 400, "invalid_shop"),
        case("invalid collection", Method::POST, "/v1/shops/victim/Sales", JSON, "[]", 400, "invalid_collection"),
        case("invalid id on GET", Method::GET, "/v1/shops/victim/sales/_secret", None, "", 400, "invalid_id"),
        case("invalid id on PUT", Method::PUT, "/v1/shops/victim/sales/_x", JSON, "{}", 400, "invalid_id"),
        case(
            "PUT body id differs from the path",
            Method::PUT,
            "/v1/shops/victim/sales/a",
            JSON,
            r#"{"id": "b"}"#,
            400,
            "id_mismatch",
        ),
        case(
            "PATCH that is not an object",
            Method::PATCH,
            "/v1/shops/victim/sales/a",
            JSON,
            "[1]",
            400,
            "invalid_patch",
        ),
        case("wrong content type", Method::POST, BATCH, Some("text/csv"), "id\na\n", 415, "unsupported_media_type"),
        case(
            "wrong content type on PUT",
            Method::PUT,
            "/v1/shops/victim/sales/a",
            Some("text/plain"),
            "{}",
            415,
            "unsupported_media_type",
        ),
        case("wrong method on a collection", Method::PATCH, BATCH, JSON, "{}", 405, "method_not_allowed"),
        case(
            "wrong method on _count",
            Method::DELETE,
            "/v1/shops/victim/sales/_count",
            None,
            "",
            405,
            "method_not_allowed",
        ),
        case("wrong method on the cluster", Method::DELETE, "/v1/cluster", None, "", 405, "method_not_allowed"),
        case(
            "unknown consistency level",
            Method::POST,
            "/v1/shops/victim/sales?consistency=two",
            JSON,
            r#"[{"id":"a"}]"#,
            400,
            "invalid_consistency",
        ),
        case(
            "unknown consistency on GET",
            Method::GET,
            "/v1/shops/victim/sales/a?consistency=most",
            None,
            "",
            400,
            "invalid_consistency",
        ),
        case(
            "list limit out of range",
            Method::GET,
            "/v1/shops/victim/sales?limit=5000",
            None,
            "",
            400,
            "invalid_limit",
        ),
        case(
            "list cursor not base64url",
            Method::GET,
            "/v1/shops/victim/sales?cursor=not*base64",
            None,
            "",
            400,
            "invalid_cursor",
        ),
        case("unknown path", Method::GET, "/v2/anything", None, "", 404, "not_found"),
    ]
}

/// Everything a shop's collection holds, at ALL.
async fn snapshot(cluster: &TestCluster, shop: &str) -> Value {
    let (status, page) = cluster.get(&format!("/v1/shops/{shop}/sales?limit=1000&consistency=all")).await;
    assert_eq!(status, 200, "{page}");
    page["records"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_a_4xx_json_error_and_changes_nothing() {
    let cluster = TestCluster::start(3).await;
    let seed: Vec<Value> =
        (0..5).map(|i| json!({"id": format!("a{i}"), "n": i, "ts": 1_700_000_000_000i64 + i})).collect();
    let (status, _) = cluster.post_json("/v1/shops/victim/sales", &Value::Array(seed)).await;
    assert_eq!(status, 200);
    let before = snapshot(&cluster, "victim").await;

    let mut failures = Vec::new();
    for c in cases() {
        // Each case on a connection of its own: the router answers an oversized
        // body before reading all of it, then closes the connection.
        let alone = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("http client");
        let request = alone.request(c.method.clone(), cluster.url(&c.path)).bearer_auth(cluster.admin_token());
        let (status, body) = send(request, c.content_type, c.body.clone()).await;
        failures.extend(mismatch(&c, status, &body));
    }
    let (_, bad7) = cluster.call(Method::POST, BATCH, JSON, batch_with_bad_record_7()).await;
    assert_eq!(bad7["error"]["index"], json!(7), "the error names the bad record: {bad7}");

    assert!(
        failures.is_empty(),
        "{} of {} cases answered wrongly:\n{}",
        failures.len(),
        cases().len(),
        failures.join("\n")
    );
    assert_eq!(snapshot(&cluster, "victim").await, before, "bad input changed the store");
    let (_, count) = cluster.get("/v1/shops/victim/sales/_count").await;
    assert_eq!(count["count"], json!(5));
    eprintln!("{} bad requests answered with the documented error; the store is unchanged", cases().len());
    assert!(cluster.stop_all().await.is_empty());
}

/// Sends `body` as a chunked POST over a raw connection while reading the
/// answer; returns whether every byte went out, and the answer's head and body.
async fn post_chunked(cluster: &TestCluster, body: Vec<u8>) -> (bool, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(cluster.layout.router).await.expect("connect to the router");
    let (mut read, mut write) = stream.into_split();
    let head = format!(
        "POST {BATCH} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        cluster.layout.router,
        cluster.admin_token()
    );
    let sender = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await?;
        for chunk in body.chunks(1 << 20) {
            write.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await?;
            write.write_all(chunk).await?;
            write.write_all(b"\r\n").await?;
        }
        write.write_all(b"0\r\n\r\n").await?;
        write.flush().await?;
        // Kept open: a half-closed connection is one the router may drop.
        Ok::<_, std::io::Error>(write)
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // The answer is small; read until the JSON body has closed.
    while !answer.ends_with(b"}}") {
        match read.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading the answer failed after {} bytes: {e}", answer.len()),
        }
    }
    let sent_all = sender.await.expect("the sender task").is_ok();
    (sent_all, String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_over_the_limit_is_read_to_its_end_and_answered_413() {
    let cluster = TestCluster::start(3).await;
    // 24 MiB without Content-Length: the router learns it is too large only
    // after 16 MiB, with 8 MiB, more than the socket buffers hold, still to come.
    let record = json!({"id": "p", "pad": "y".repeat((1 << 20) - 64)}).to_string();
    let body = format!("[{}]", vec![record; 24].join(",")).into_bytes();
    let (sent_all, answer) = post_chunked(&cluster, body).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "the answer: {answer}");
    assert!(answer.contains(r#""code":"body_too_large""#), "the answer: {answer}");
    assert!(sent_all, "the router read the rest of the body instead of resetting the connection");
    let (_, count) = cluster.get("/v1/shops/victim/sales/_count").await;
    assert_eq!(count["count"], json!(0), "nothing of it was stored");
    eprintln!("a 24 MiB chunked batch: 413 body_too_large, the whole body sent, nothing stored");
    assert!(cluster.stop_all().await.is_empty());
}

/// The cluster as admins see it, without what changes by itself (liveness).
async fn membership(cluster: &TestCluster) -> Value {
    let (status, map) = cluster.get("/v1/cluster").await;
    assert_eq!(status, 200, "{map}");
    let nodes: Vec<Value> = map["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| json!([n["id"], n["addr"], n["state"], n["partition_replicas"]]))
        .collect();
    json!({"epoch": map["epoch"], "nodes": nodes, "migrations": map["migrations"]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_membership_requests_get_a_4xx_json_error_and_change_nothing() {
    let cluster = TestCluster::start(3).await;
    let member = cluster.node_addr(1).await.to_string();
    let nobody = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        listener.local_addr().expect("bound").to_string()
    };
    let add =
        |name, body: String, status, code| case(name, Method::POST, "/v1/cluster/nodes", JSON, body, status, code);
    let cases = vec![
        add("malformed body", "{\"addr\":".into(), 400, "invalid_json"),
        add("a body without addr", r#"{"id": 5}"#.into(), 400, "invalid_json"),
        add("an unknown field", r#"{"addr": "127.0.0.1:1", "role": "x"}"#.into(), 400, "invalid_json"),
        add("an address without a port", r#"{"addr": "localhost"}"#.into(), 400, "invalid_addr"),
        add("a port out of range", r#"{"addr": "127.0.0.1:70000"}"#.into(), 400, "invalid_addr"),
        add("no node at the address", json!({"addr": nobody}).to_string(), 400, "no_node"),
        add("the address of a member", json!({"addr": member}).to_string(), 409, "already_member"),
        case("an id that is no number", Method::DELETE, "/v1/cluster/nodes/abc", None, "", 400, "invalid_id"),
        case("an unknown id", Method::DELETE, "/v1/cluster/nodes/99", None, "", 404, "not_found"),
        case("below the replication factor", Method::DELETE, "/v1/cluster/nodes/1", None, "", 409, "too_few_nodes"),
        case("remove a live node", Method::POST, "/v1/cluster/nodes/2/remove", None, "", 409, "node_alive"),
        case("remove an unknown node", Method::POST, "/v1/cluster/nodes/99/remove", None, "", 404, "not_found"),
        case(
            "abort with nothing in flight",
            Method::POST,
            "/v1/cluster/migrations/abort",
            None,
            "",
            409,
            "change_conflict",
        ),
        case("list the nodes", Method::GET, "/v1/cluster/nodes", None, "", 405, "method_not_allowed"),
    ];
    let before = membership(&cluster).await;
    let mut failures = Vec::new();
    for c in &cases {
        let (status, body) = cluster.call(c.method.clone(), &c.path, c.content_type, c.body.clone()).await;
        failures.extend(mismatch(c, status, &body));
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases answered wrongly:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(membership(&cluster).await, before, "a refused change changed the cluster");
    eprintln!("{} bad membership requests answered with the documented error; the map is unchanged", cases.len());
    assert!(cluster.stop_all().await.is_empty());
}
