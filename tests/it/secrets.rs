//! Settings from AWS Secrets Manager (moto's, on the same port as SQS) override the
//! environment, go through the same validation, and any failure to read them stops start-up
//! with exit 78. AWS credentials come from the SDK's default chain: static keys with a session
//! token, a named profile from shared files, and web identity (STS AssumeRoleWithWebIdentity),
//! each observed on the wire by a recording proxy in front of moto.

use crate::support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;
use support::{Harness, WorkerProcess, bodies, moto::REGION};

const TOKEN: &str = "tok-from-the-secret-7f3a9c";

fn secrets_client(endpoint: &str) -> aws_sdk_secretsmanager::Client {
    let conf = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .build();
    aws_sdk_secretsmanager::Client::from_conf(conf)
}

async fn create_secret(h: &Harness, name: &str, text: &str) {
    secrets_client(h.sqs.endpoint())
        .create_secret()
        .name(name)
        .secret_string(text)
        .send()
        .await
        .expect("CreateSecret");
}

/// The harness's environment without `drop`, plus `add` (later entries win).
fn env_with(h: &Harness, drop: &[&str], add: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = h
        .env()
        .into_iter()
        .filter(|(k, _)| !drop.contains(&k.as_str()))
        .collect();
    env.extend(add.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// Starts the worker and waits for it to exit; returns the exit code and stderr.
async fn start_expecting_exit(env: &[(String, String)]) -> (Option<i32>, String) {
    let mut w = WorkerProcess::spawn(env);
    let status = w.wait_exit(Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stderr = w.stderr.lock().expect("stderr").join("\n");
    (status.code(), stderr)
}

/// Everything the worker wrote, stdout and stderr.
fn all_output(w: &WorkerProcess) -> String {
    let mut out = w.logs.raw().join("\n");
    out.push('\n');
    out.push_str(&w.stderr.lock().expect("stderr").join("\n"));
    out
}

#[tokio::test]
async fn the_secret_supplies_queue_peers_and_token_and_the_token_is_never_logged() {
    let h = Harness::on_moto().await;
    h.peers.reservations.set_token(Some(TOKEN.into()));
    h.peers.hold("r-secret");
    let secret = json!({
        "sqs_queue_url": h.queue.url,
        "inventory_grpc_addr": h.peers.inventory_addr,
        "reservation_api_base": h.peers.reservation_base,
        "reservation_api_token": TOKEN,
        "otel_endpoint": "",
        "owner": "team-tickets",
    });
    create_secret(&h, "reservation-worker/test", &secret.to_string()).await;
    // No queue URL and no token in the environment; the peers' addresses point nowhere.
    let env = env_with(
        &h,
        &["SQS_QUEUE_URL", "RESERVATION_API_TOKEN"],
        &[
            ("USE_SECRET_MANAGER", "true"),
            ("SECRET_NAME", "reservation-worker/test"),
            ("INVENTORY_GRPC_ADDR", "127.0.0.1:1"),
            ("RESERVATION_API_BASE", "http://127.0.0.1:1"),
        ],
    );
    let w = WorkerProcess::spawn(&env);
    w.wait_ready().await;

    h.queue
        .send(&bodies::expired("env-secret-1", "r-secret"))
        .await;
    h.wait_queue_empty().await;

    let patches: Vec<_> = h
        .peers
        .reservations
        .calls_for("r-secret")
        .into_iter()
        .filter(|c| c.method == "PATCH")
        .collect();
    assert!(!patches.is_empty(), "the reservation API was not called");
    for c in &patches {
        assert_eq!(
            c.headers.get("authorization").map(String::as_str),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert_eq!(c.status, 200);
    }
    assert!(
        !h.peers.inventory.calls().is_empty(),
        "inventory not called"
    );

    let overlaid = w.logs_with_message("settings overlaid from Secrets Manager");
    let keys = overlaid
        .first()
        .and_then(|l| l.get("keys"))
        .map(|k| k.to_string())
        .unwrap_or_default();
    for key in [
        "sqs_queue_url",
        "inventory_grpc_addr",
        "reservation_api_base",
        "reservation_api_token",
    ] {
        assert!(keys.contains(key), "{key} not reported as applied: {keys}");
    }
    assert!(
        !keys.contains("otel_endpoint"),
        "empty value applied: {keys}"
    );
    let unknown = w.logs_with_message("unknown keys in the secret ignored");
    assert!(
        unknown
            .first()
            .is_some_and(|l| l.to_string().contains("owner")),
        "unknown key not warned about: {unknown:?}"
    );
    let output = all_output(&w);
    assert!(!output.contains(TOKEN), "the token reached the logs");
    assert!(
        !output.contains("team-tickets"),
        "a secret value was logged"
    );
}

#[tokio::test]
async fn a_missing_secret_stops_start_up_naming_it() {
    let h = Harness::on_moto().await;
    let env = env_with(
        &h,
        &[],
        &[
            ("USE_SECRET_MANAGER", "true"),
            ("SECRET_NAME", "reservation-worker/absent"),
        ],
    );
    let (code, stderr) = start_expecting_exit(&env).await;
    assert_eq!(code, Some(78), "{stderr}");
    assert_eq!(
        stderr,
        "configuration error: cannot use secret reservation-worker/absent: not found in region ap-northeast-2 (ResourceNotFoundException)"
    );
}

#[tokio::test]
async fn a_secret_that_is_not_a_json_object_of_strings_stops_start_up() {
    let h = Harness::on_moto().await;
    for (name, text, want) in [
        (
            "bad/not-json",
            "sqs_queue_url=http://h/q reservation_api_token=tok-plain-text",
            "it is not JSON",
        ),
        (
            "bad/array",
            r#"["tok-plain-text"]"#,
            "it is JSON an array, not an object",
        ),
        (
            "bad/type",
            r#"{"sqs_queue_url": "http://127.0.0.1:1/1/q", "reservation_api_token": 12345678}"#,
            "key reservation_api_token is a number: expected a string",
        ),
    ] {
        create_secret(&h, name, text).await;
        let env = env_with(
            &h,
            &[],
            &[("USE_SECRET_MANAGER", "true"), ("SECRET_NAME", name)],
        );
        let (code, stderr) = start_expecting_exit(&env).await;
        assert_eq!(code, Some(78), "{name}: {stderr}");
        assert!(
            stderr.starts_with(&format!(
                "configuration error: cannot use secret {name}: {want}"
            )),
            "{name}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(!stderr.contains("tok-plain-text"), "{stderr}");
        assert!(!stderr.contains("12345678"), "{stderr}");
    }
}

#[tokio::test]
async fn an_invalid_value_in_the_secret_names_the_key_and_never_the_token() {
    let h = Harness::on_moto().await;
    create_secret(
        &h,
        "bad/url",
        &json!({"sqs_queue_url": "reservation-events"}).to_string(),
    )
    .await;
    let env = env_with(
        &h,
        &["SQS_QUEUE_URL"],
        &[("USE_SECRET_MANAGER", "true"), ("SECRET_NAME", "bad/url")],
    );
    let (code, stderr) = start_expecting_exit(&env).await;
    assert_eq!(code, Some(78), "{stderr}");
    assert_eq!(
        stderr,
        "configuration error: secret bad/url key sqs_queue_url=\"reservation-events\" is invalid: expected an absolute http:// or https:// URL"
    );

    create_secret(
        &h,
        "bad/token",
        &json!({"reservation_api_token": "two words-tokvalue"}).to_string(),
    )
    .await;
    let env = env_with(
        &h,
        &[],
        &[("USE_SECRET_MANAGER", "true"), ("SECRET_NAME", "bad/token")],
    );
    let (code, stderr) = start_expecting_exit(&env).await;
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.starts_with(
            "configuration error: secret bad/token key reservation_api_token=\"***\" is invalid"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("tokvalue"), "{stderr}");
}

#[tokio::test]
async fn the_switch_without_a_secret_name_stops_start_up() {
    let h = Harness::on_moto().await;
    let env = env_with(&h, &[], &[("USE_SECRET_MANAGER", "true")]);
    let (code, stderr) = start_expecting_exit(&env).await;
    assert_eq!(code, Some(78), "{stderr}");
    assert_eq!(
        stderr,
        "configuration error: SECRET_NAME is not set: expected the name or ARN of the secret to read (USE_SECRET_MANAGER is true)"
    );
}

#[tokio::test]
async fn no_queue_url_anywhere_says_where_it_could_come_from() {
    let h = Harness::on_moto().await;
    create_secret(
        &h,
        "partial",
        &json!({"reservation_api_token": "t"}).to_string(),
    )
    .await;
    let env = env_with(
        &h,
        &["SQS_QUEUE_URL"],
        &[("USE_SECRET_MANAGER", "true"), ("SECRET_NAME", "partial")],
    );
    let (code, stderr) = start_expecting_exit(&env).await;
    assert_eq!(code, Some(78), "{stderr}");
    assert_eq!(
        stderr,
        "configuration error: SQS_QUEUE_URL is not set: expected the URL of the SQS queue to consume (in the environment, or as sqs_queue_url in secret partial)"
    );
}

// ---- a recording proxy in front of moto --------------------------------------------------

/// One request as it reached moto, and moto's answer.
#[derive(Debug, Clone)]
struct Seen {
    /// The access key id from the SigV4 `Authorization` header, if signed.
    access_key: Option<String>,
    /// The signing service from the credential scope (`sqs`, `secretsmanager`, …).
    service: Option<String>,
    security_token: Option<String>,
    target: Option<String>,
    body: String,
    response: String,
}

#[derive(Clone, Default)]
struct ProxyState {
    upstream: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    deny_secrets: Arc<AtomicBool>,
}

/// Forwards every request to moto and records what credentials signed it.
struct Proxy {
    endpoint: String,
    state: ProxyState,
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let state = ProxyState {
            upstream: upstream.to_string(),
            ..Default::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Proxy { endpoint, state }
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("seen").clone()
    }

    fn seen_for(&self, service: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.service.as_deref() == Some(service))
            .collect()
    }
}

async fn forward(State(state): State<ProxyState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    let header =
        |h: &HeaderMap, k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
    let auth = header(&parts.headers, "authorization");
    let scope = auth.as_deref().and_then(|a| {
        let cred = a.split("Credential=").nth(1)?.split(',').next()?;
        let mut it = cred.split('/');
        Some((it.next()?.to_string(), it.nth(2)?.to_string()))
    });
    let mut seen = Seen {
        access_key: scope.as_ref().map(|s| s.0.clone()),
        service: scope.map(|s| s.1),
        security_token: header(&parts.headers, "x-amz-security-token"),
        target: header(&parts.headers, "x-amz-target"),
        body: String::from_utf8_lossy(&body).into_owned(),
        response: String::new(),
    };
    if state.deny_secrets.load(Ordering::SeqCst)
        && seen.target.as_deref() == Some("secretsmanager.GetSecretValue")
    {
        state.seen.lock().expect("seen").push(seen);
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .header("content-type", "application/x-amz-json-1.1")
            .body(Body::from(
                json!({"__type": "AccessDeniedException", "message": "User: arn:aws:sts::123456789012:assumed-role/worker is not authorized to perform: secretsmanager:GetSecretValue"}).to_string(),
            ))
            .expect("response");
    }
    let uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut out = reqwest::Client::new().request(parts.method, format!("{}{uri}", state.upstream));
    for (k, v) in &parts.headers {
        if k != "host" && k != "content-length" {
            out = out.header(k, v);
        }
    }
    let resp = out.body(body).send().await.expect("moto answers");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap_or_default();
    seen.response = String::from_utf8_lossy(&bytes).into_owned();
    state.seen.lock().expect("seen").push(seen);
    let mut builder = Response::builder().status(status);
    for (k, v) in &headers {
        if k != "content-length" && k != "transfer-encoding" {
            builder = builder.header(k, v);
        }
    }
    builder.body(Body::from(bytes)).expect("response")
}

/// The harness's environment with AWS pointed at the proxy and no static credentials, plus a
/// secret overlay for the queue URL (so both services' calls are observed).
async fn proxied_env(
    h: &Harness,
    proxy: &Proxy,
    secret: &str,
    add: &[(&str, &str)],
) -> Vec<(String, String)> {
    create_secret(
        h,
        secret,
        &json!({"sqs_queue_url": h.queue.url}).to_string(),
    )
    .await;
    let mut env = env_with(
        h,
        &[
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "SQS_QUEUE_URL",
        ],
        &[
            ("AWS_ENDPOINT_URL", proxy.endpoint.as_str()),
            ("USE_SECRET_MANAGER", "true"),
            ("SECRET_NAME", secret),
        ],
    );
    env.extend(add.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// Asserts every call to both services was signed with `key` (and `token`, when given).
fn assert_signed_with(proxy: &Proxy, key: &str, token: Option<&str>) {
    for service in ["secretsmanager", "sqs"] {
        let calls = proxy.seen_for(service);
        assert!(
            !calls.is_empty(),
            "no {service} call seen: {:?}",
            proxy.seen()
        );
        for c in calls {
            assert_eq!(c.access_key.as_deref(), Some(key), "{service}: {c:?}");
            assert_eq!(c.security_token.as_deref(), token, "{service}: {c:?}");
        }
    }
}

#[tokio::test]
async fn static_keys_with_a_session_token_sign_every_call() {
    let h = Harness::on_moto().await;
    let proxy = Proxy::start(h.sqs.endpoint()).await;
    let env = proxied_env(
        &h,
        &proxy,
        "creds/static",
        &[
            ("AWS_ACCESS_KEY_ID", "ASIASTATICKEY1"),
            ("AWS_SECRET_ACCESS_KEY", "static-secret-key-value"),
            ("AWS_SESSION_TOKEN", "static-session-token-value"),
        ],
    )
    .await;
    let w = WorkerProcess::spawn(&env);
    w.wait_ready().await;
    assert_signed_with(&proxy, "ASIASTATICKEY1", Some("static-session-token-value"));
    let output = all_output(&w);
    assert!(
        !output.contains("static-secret-key-value"),
        "secret key logged"
    );
    assert!(
        !output.contains("static-session-token-value"),
        "session token logged"
    );
}

#[tokio::test]
async fn a_named_profile_from_shared_files_signs_every_call() {
    let h = Harness::on_moto().await;
    let proxy = Proxy::start(h.sqs.endpoint()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config");
    let credentials = dir.path().join("credentials");
    std::fs::write(&config, "[profile tickets-dev]\nregion = ap-northeast-2\n").expect("config");
    std::fs::write(
        &credentials,
        "[default]\naws_access_key_id = AKIADEFAULTPROFILE\naws_secret_access_key = d\n\n[tickets-dev]\naws_access_key_id = AKIATICKETSDEV\naws_secret_access_key = profile-secret-value\n",
    )
    .expect("credentials");
    let env = proxied_env(
        &h,
        &proxy,
        "creds/profile",
        &[
            ("AWS_PROFILE", "tickets-dev"),
            ("AWS_CONFIG_FILE", config.to_str().expect("utf-8")),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                credentials.to_str().expect("utf-8"),
            ),
        ],
    )
    .await;
    let w = WorkerProcess::spawn(&env);
    w.wait_ready().await;
    assert_signed_with(&proxy, "AKIATICKETSDEV", None);
    assert!(!all_output(&w).contains("profile-secret-value"));
}

#[tokio::test]
async fn web_identity_assumes_the_role_through_sts_and_signs_with_its_credentials() {
    let h = Harness::on_moto().await;
    let proxy = Proxy::start(h.sqs.endpoint()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(
        &token_file,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ3b3JrZXIifQ.c2ln",
    )
    .expect("token file");
    let env = proxied_env(
        &h,
        &proxy,
        "creds/irsa",
        &[
            (
                "AWS_ROLE_ARN",
                "arn:aws:iam::123456789012:role/reservation-worker",
            ),
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                token_file.to_str().expect("utf-8"),
            ),
            ("AWS_ROLE_SESSION_NAME", "worker-pod"),
        ],
    )
    .await;
    let w = WorkerProcess::spawn(&env);
    w.wait_ready().await;

    let sts: Vec<Seen> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.body.contains("Action=AssumeRoleWithWebIdentity"))
        .collect();
    assert!(
        !sts.is_empty(),
        "no AssumeRoleWithWebIdentity call: {:?}",
        proxy.seen()
    );
    // Each SDK client (Secrets Manager at start-up, then SQS) assumes the role once.
    let mut issued = Vec::new();
    for call in &sts {
        assert!(call.access_key.is_none(), "web identity calls are unsigned");
        assert!(
            call.body.contains("WebIdentityToken=eyJhbGciOiJSUzI1NiJ9"),
            "{}",
            call.body
        );
        assert!(
            call.body.contains("role%2Freservation-worker"),
            "{}",
            call.body
        );
        let field = |tag: &str| {
            call.response
                .split(&format!("<{tag}>"))
                .nth(1)
                .and_then(|r| r.split(&format!("</{tag}>")).next())
                .map(str::to_string)
                .expect("credentials in STS's answer")
        };
        issued.push((field("AccessKeyId"), field("SessionToken")));
    }
    for service in ["secretsmanager", "sqs"] {
        let calls = proxy.seen_for(service);
        assert!(!calls.is_empty(), "no {service} call seen");
        for c in calls {
            let used = (
                c.access_key.clone().unwrap_or_default(),
                c.security_token.clone().unwrap_or_default(),
            );
            assert!(
                issued.contains(&used),
                "{service} call not signed with STS's credentials: {c:?}"
            );
        }
    }
    let output = all_output(&w);
    for (_, token) in &issued {
        assert!(!output.contains(token.as_str()), "session token logged");
    }
}

#[tokio::test]
async fn access_denied_on_the_secret_stops_start_up() {
    let h = Harness::on_moto().await;
    let proxy = Proxy::start(h.sqs.endpoint()).await;
    let env = proxied_env(
        &h,
        &proxy,
        "creds/denied",
        &[
            ("AWS_ACCESS_KEY_ID", "AKIADENIED"),
            ("AWS_SECRET_ACCESS_KEY", "x"),
        ],
    )
    .await;
    proxy.state.deny_secrets.store(true, Ordering::SeqCst);
    let (code, stderr) = start_expecting_exit(&env).await;
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.starts_with(
            "configuration error: cannot use secret creds/denied: AccessDeniedException: User: arn:aws:sts::123456789012:assumed-role/worker is not authorized"
        ),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // Never a silent fallback: nothing was read from SQS.
    assert!(proxy.seen_for("sqs").is_empty(), "{:?}", proxy.seen());
}
