//! A real moto server (SQS-compatible) on a free loopback port: one per test, killed on drop,
//! or the test process's [`shared`] one, where each test makes queues of its own.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::OnceCell;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};

pub const REGION: &str = "ap-northeast-2";

/// A running moto server.
pub struct Moto {
    pub endpoint: String,
    pub client: Client,
    /// The `sh` wrapper that started moto.
    child: Child,
    /// moto's own pid (the wrapper's child).
    pid: String,
}

/// Where moto_server is: `MOTO_SERVER`, the workspace root's `.venv` (where `make test`
/// installs it, as a launcher for `scripts/moto_server.py`), or `PATH`.
pub fn server_command() -> String {
    if let Ok(p) = std::env::var("MOTO_SERVER") {
        return p;
    }
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/bin/moto_server");
    if std::path::Path::new(venv).exists() {
        return venv.to_string();
    }
    "moto_server".to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Moto {
    pub async fn start() -> Moto {
        for _ in 0..5 {
            let port = free_port();
            // The shell wrapper prints moto's pid, then kills moto when our stdin pipe closes:
            // a test process that dies without running destructors leaves no server behind.
            let script = format!(
                "\"$0\" -H 127.0.0.1 -p {port} >/dev/null 2>&1 & pid=$!; echo $pid; cat >/dev/null; kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null"
            );
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(&script)
                .arg(server_command())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("start moto_server (run `make test`, which installs it into .venv)");
            let mut pid = String::new();
            if let Some(out) = child.stdout.take() {
                let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut pid);
            }
            let endpoint = format!("http://127.0.0.1:{port}");
            let mut moto = Moto {
                client: client(&endpoint),
                endpoint,
                child,
                pid: pid.trim().to_string(),
            };
            if moto.wait_up().await {
                return moto;
            }
            drop(moto);
        }
        panic!("moto_server did not start (is it installed? `make test` installs it)");
    }

    async fn wait_up(&mut self) -> bool {
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if http
                .get(format!("{}/moto-api/", self.endpoint))
                .send()
                .await
                .is_ok()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// AWS settings pointing at this server, for building the worker's own `Queue` in a test.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config(&self.endpoint).await
    }

    /// The AWS variables that point the SDK (and the worker) at this server.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        aws_env(&self.endpoint)
    }

    /// Creates a queue; `redrive` = (DLQ, maxReceiveCount) sets a RedrivePolicy.
    pub async fn create_queue(&self, name: &str, redrive: Option<(&TestQueue, u32)>) -> TestQueue {
        create_queue(&self.client, name, redrive).await
    }
}

/// The test process's one shared moto server, started by the first caller. Starting moto is
/// a Python import; most scenarios need only queues and secrets of their own, which
/// [`unique_name`] keeps apart. Its wrapper kills it when the test process exits. Build a
/// client per test ([`client`]): a pooled connection must not outlive the runtime that
/// opened it.
pub async fn shared() -> &'static Moto {
    static SHARED: OnceCell<Moto> = OnceCell::const_new();
    SHARED.get_or_init(Moto::start).await
}

/// `name` with a number unique within the process (before any `.fifo`), for queues on a
/// shared server.
pub fn unique_name(name: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    match name.strip_suffix(".fifo") {
        Some(stem) => format!("{stem}-{n}.fifo"),
        None => format!("{name}-{n}"),
    }
}

/// The AWS variables that point the SDK (and the worker) at `endpoint` (moto or the fast
/// endpoint), with test credentials.
pub fn aws_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", REGION),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// AWS settings pointing at `endpoint` (moto or the fast endpoint).
pub(crate) async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .load()
        .await
}

/// Creates a queue on whatever endpoint `client` points at (moto or the fast endpoint). A
/// `.fifo` name makes a FIFO queue with content-based deduplication; `redrive` = (DLQ,
/// maxReceiveCount) sets a RedrivePolicy.
pub async fn create_queue(
    client: &Client,
    name: &str,
    redrive: Option<(&TestQueue, u32)>,
) -> TestQueue {
    create_queue_with(client, name, redrive, &[]).await
}

/// [`create_queue`] with more attributes (a `RedriveAllowPolicy`, a `MaximumMessageSize`).
pub async fn create_queue_with(
    client: &Client,
    name: &str,
    redrive: Option<(&TestQueue, u32)>,
    attrs: &[(QueueAttributeName, &str)],
) -> TestQueue {
    let mut req = client.create_queue().queue_name(name);
    for (k, v) in attrs {
        req = req.attributes(k.clone(), *v);
    }
    if name.ends_with(".fifo") {
        req = req
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(QueueAttributeName::ContentBasedDeduplication, "true");
    }
    if let Some((dlq, max)) = redrive {
        let policy =
            serde_json::json!({"deadLetterTargetArn": dlq.arn, "maxReceiveCount": max.to_string()});
        req = req.attributes(QueueAttributeName::RedrivePolicy, policy.to_string());
    }
    let url = req
        .send()
        .await
        .expect("CreateQueue")
        .queue_url()
        .expect("queue url")
        .to_string();
    let attrs = client
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("GetQueueAttributes");
    let arn = attrs
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .expect("QueueArn");
    TestQueue {
        client: client.clone(),
        url,
        arn,
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // Kill moto itself, then let the wrapper see its stdin close and exit. Killing only
        // the wrapper would orphan moto.
        if !self.pid.is_empty() {
            let _ = Command::new("kill")
                .args(["-9", &self.pid])
                .stderr(Stdio::null())
                .status();
        }
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

pub fn client(endpoint: &str) -> Client {
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .build();
    Client::from_conf(conf)
}

/// A queue on the test server.
#[derive(Clone)]
pub struct TestQueue {
    pub client: Client,
    pub url: String,
    pub arn: String,
}

/// A message as a test sees it after receiving it.
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: String,
    pub receipt: String,
    pub body: String,
    pub attributes: HashMap<String, String>,
    pub receive_count: u32,
}

impl From<&aws_sdk_sqs::types::Message> for Received {
    fn from(m: &aws_sdk_sqs::types::Message) -> Self {
        Received {
            message_id: m.message_id().unwrap_or_default().to_string(),
            receipt: m.receipt_handle().unwrap_or_default().to_string(),
            body: m.body().unwrap_or_default().to_string(),
            attributes: m
                .message_attributes()
                .map(|a| {
                    a.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.string_value()?.to_string())))
                        .collect()
                })
                .unwrap_or_default(),
            receive_count: m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|c| c.parse().ok())
                .unwrap_or(0),
        }
    }
}

impl TestQueue {
    /// Sends a body; returns the SQS MessageId.
    pub async fn send(&self, body: &str) -> String {
        self.send_with(body, &[], None).await
    }

    /// Sends a body with string attributes and, on FIFO queues, a group.
    pub async fn send_with(
        &self,
        body: &str,
        attrs: &[(&str, &str)],
        group: Option<&str>,
    ) -> String {
        let mut req = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body);
        for (k, v) in attrs {
            req = req.message_attributes(
                *k,
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(*v)
                    .build()
                    .expect("attribute"),
            );
        }
        if let Some(g) = group {
            req = req.message_group_id(g);
        }
        req.send()
            .await
            .expect("SendMessage")
            .message_id()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until the queue holds nothing, visible or in flight.
    pub async fn wait_empty(&self) {
        let deadline = tokio::time::Instant::now() + crate::PATIENCE;
        loop {
            let (visible, in_flight) = self.depth().await;
            if visible + in_flight == 0 {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "{} not empty: {visible} visible, {in_flight} in flight",
                    self.url
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// (visible, in flight) from GetQueueAttributes.
    pub async fn depth(&self) -> (u64, u64) {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("GetQueueAttributes");
        let get = |k: QueueAttributeName| {
            out.attributes()
                .and_then(|a| a.get(&k))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (
            get(QueueAttributeName::ApproximateNumberOfMessages),
            get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    }

    /// Receives what is visible now (short poll, several rounds), leaving it in flight for
    /// `visibility` seconds.
    pub async fn receive(&self, visibility: i32) -> Vec<Received> {
        let mut all = Vec::new();
        for _ in 0..3 {
            let out = self
                .client
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .visibility_timeout(visibility)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .expect("ReceiveMessage");
            let got = out.messages();
            if got.is_empty() && !all.is_empty() {
                break;
            }
            all.extend(got.iter().map(Received::from));
        }
        all
    }

    /// Waits until `n` messages can be received (each left in flight for 60 s), returning them.
    pub async fn receive_n(&self, n: usize) -> Vec<Received> {
        self.try_receive_n(n).await.unwrap_or_else(|got| {
            panic!("expected {n} messages on {}, got {}", self.url, got.len())
        })
    }

    /// As [`TestQueue::receive_n`], but when `PATIENCE` runs out returns what did arrive as
    /// the error, so the caller can say which messages are missing.
    pub async fn try_receive_n(&self, n: usize) -> Result<Vec<Received>, Vec<Received>> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + crate::PATIENCE;
        while got.len() < n {
            got.extend(self.receive(60).await);
            if got.len() >= n {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(got);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(got)
    }
}
