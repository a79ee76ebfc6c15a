//! The bad-input corpus (`tests/corpus/`): malformed and hostile message bodies, each with the
//! DLQ reason it must get (`tests/corpus/expected.tsv`).
//!
//! A corpus entry is either a body file (`*.json`, sent byte for byte) or a recipe (`*.gen`, one
//! line `<type> <path> <kind> <n>`) for bodies too big to commit: a valid documented event of
//! `<type>` whose field `<path>` (dotted, e.g. `detail.seat_ids`) is replaced by generated JSON —
//! `string` (n × "x"), `seats` (n distinct seat ids), `nested` (objects n deep), `keys` (an
//! object of n junk keys) or `arrays` (with type `raw` and path `body`: the whole body is n
//! nested arrays). Generated text is spliced in as text, so nothing here recurses n deep.
//!
//! `expected.tsv` columns: file, ReasonClass, a substring of ErrorMessage, and optional flags:
//! `parser_only` (SQS and moto refuse the body, so it can only reach the parser), and
//! `binary_attr=<hex>` (sent with a Binary message attribute `Payload` holding those bytes, e.g.
//! invalid UTF-8: the worker ignores binary attributes, so the body decides the reason).

use crate::support;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::MessageAttributeValue;
use futures::StreamExt;
use reservation_worker::event::{self, MessageContext};
use serde_json::{Value, json};
use support::{Harness, bodies};

/// Placeholder replaced by generated text in a `.gen` body.
const SLOT: &str = "\"@@generated@@\"";

struct Case {
    file: String,
    body: String,
    class: String,
    substring: String,
    parser_only: bool,
    binary_attr: Option<Vec<u8>>,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// Every corpus file with its expectation; panics on a file without one or an expectation
/// without a file, so the two cannot drift apart.
fn load() -> Vec<Case> {
    let dir = corpus_dir();
    let tsv = std::fs::read_to_string(dir.join("expected.tsv")).expect("expected.tsv");
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in tsv.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let cols: Vec<String> = line.split('\t').map(str::to_owned).collect();
        assert!(
            cols.len() >= 3,
            "expected.tsv: need file, class, substring: {line:?}"
        );
        assert!(
            expected.insert(cols[0].clone(), cols).is_none(),
            "expected.tsv: {line:?} listed twice"
        );
    }
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/corpus")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|f| f.ends_with(".json") || f.ends_with(".gen"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for file in files {
        let cols = expected
            .remove(&file)
            .unwrap_or_else(|| panic!("{file} has no line in tests/corpus/expected.tsv"));
        let raw = std::fs::read(dir.join(&file)).expect("corpus file");
        let body = if file.ends_with(".gen") {
            generate(std::str::from_utf8(&raw).expect("utf-8 recipe").trim())
        } else {
            String::from_utf8(raw).unwrap_or_else(|_| panic!("{file}: SQS bodies are UTF-8"))
        };
        let mut case = Case {
            file,
            body,
            class: cols[1].clone(),
            substring: cols[2].clone(),
            parser_only: false,
            binary_attr: None,
        };
        for flag in &cols[3..] {
            if flag == "parser_only" {
                case.parser_only = true;
            } else if let Some(hex) = flag.strip_prefix("binary_attr=") {
                case.binary_attr = Some(from_hex(hex));
            } else {
                panic!("{}: unknown flag {flag:?}", case.file);
            }
        }
        cases.push(case);
    }
    assert!(
        expected.is_empty(),
        "expectations without a corpus file: {:?}",
        expected.keys().collect::<Vec<_>>()
    );
    cases
}

fn from_hex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex byte"))
        .collect()
}

/// Builds a body from a one-line `.gen` recipe (see the module docs).
fn generate(recipe: &str) -> String {
    let parts: Vec<&str> = recipe.split_whitespace().collect();
    let [event_type, path, kind, n] = parts[..] else {
        panic!("recipe {recipe:?}: expected `<type> <path> <kind> <n>`");
    };
    let n: usize = n.parse().expect("recipe count");
    let fragment = match kind {
        "string" => format!("\"{}\"", "x".repeat(n)),
        "seats" => format!(
            "[{}]",
            (0..n)
                .map(|i| format!("\"S{i}\""))
                .collect::<Vec<_>>()
                .join(",")
        ),
        "nested" => format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n)),
        "keys" => format!(
            "{{{}}}",
            (0..n)
                .map(|i| format!("\"k{i}\":{i}"))
                .collect::<Vec<_>>()
                .join(",")
        ),
        "arrays" => format!("{}{}", "[".repeat(n), "]".repeat(n)),
        other => panic!("recipe {recipe:?}: unknown kind {other:?}"),
    };
    if event_type == "raw" {
        return fragment;
    }
    let detail = match event_type {
        "reservation.expired" => {
            json!({"reservation_id": "r-gen", "event_id": "ev-1", "seat_ids": ["A1"], "qty": 1})
        }
        _ => {
            json!({"reservation_id": "r-gen", "payment_intent_id": "pi-1", "amount": 100, "currency": "KRW"})
        }
    };
    let mut body =
        json!({"id": "env-gen", "type": event_type, "source": "corpus", "detail": detail});
    let mut slot = &mut body;
    let keys: Vec<&str> = path.split('.').collect();
    for key in &keys[..keys.len() - 1] {
        slot = slot.get_mut(*key).expect("recipe path");
    }
    slot[keys[keys.len() - 1]] = Value::String("@@generated@@".into());
    body.to_string().replacen(SLOT, &fragment, 1)
}

/// What the parser says about a body: (class, error message), as the worker would dead-letter it.
fn outcome(body: &str) -> Result<(&'static str, String), Box<event::Event>> {
    let ctx = MessageContext {
        message_id: "sqs-corpus",
        ..MessageContext::default()
    };
    match event::parse(body, &ctx) {
        Ok(ev) => Err(Box::new(ev)),
        Err(e) => Ok((e.class().as_str(), e.to_string())),
    }
}

#[test]
fn corpus_is_big_enough_and_files_stay_small() {
    let cases = load();
    assert!(cases.len() >= 50, "only {} corpus entries", cases.len());
    for c in &cases {
        let len = std::fs::metadata(corpus_dir().join(&c.file))
            .expect("corpus file")
            .len();
        assert!(
            len <= 16 * 1024,
            "{}: {len} bytes; use a .gen recipe",
            c.file
        );
    }
}

/// Every corpus body, through the parser alone: the class and message the DLQ will carry.
#[test]
fn corpus_parses_to_expected_reasons() {
    let mut wrong = Vec::new();
    for c in load() {
        match outcome(&c.body) {
            Err(ev) => wrong.push(format!("{}: parsed as a valid event: {ev:?}", c.file)),
            Ok((class, message)) => {
                if class != c.class || !message.contains(&c.substring) {
                    wrong.push(format!(
                        "{}: got {class} {message:.300}; expected {} containing {:?}",
                        c.file, c.class, c.substring
                    ));
                }
                // What the worker writes as ErrorMessage must stay short whatever the input.
                if message.len() > 1024 {
                    wrong.push(format!("{}: message of {} bytes", c.file, message.len()));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Duplicate keys: serde_json keeps the last value (as JavaScript and EventBridge do), so the
/// last occurrence is the one validated. The corpus has the invalid-last cases; this is the
/// other order, which is accepted.
#[test]
fn duplicate_keys_last_one_wins() {
    let body = r#"{"id":"env-dup","type":"bogus.type","type":"reservation.expired",
        "detail":{"reservation_id":"r-1","event_id":"ev-1","qty":-1,"qty":2}}"#;
    let ev = event::parse(body, &MessageContext::default()).expect("last values are valid");
    assert_eq!(ev.event_type(), event::EventType::ReservationExpired);
    let event::EventKind::ReservationExpired(h) = ev.kind else {
        panic!("expired")
    };
    assert_eq!(h.qty, 2);
}

/// The whole corpus through the real worker: every body ends in the DLQ with its reason, the
/// source queue empties, no peer is called, and the worker still serves and processes.
#[tokio::test(flavor = "multi_thread")]
async fn corpus_goes_to_the_dlq_and_the_worker_survives() {
    let cases: Vec<Case> = load().into_iter().filter(|c| !c.parser_only).collect();
    // moto: it accepts the empty body the corpus holds, which SQS (and the fast endpoint)
    // refuse at SendMessage.
    let h = Harness::on_moto().await;
    let worker = h.worker(&[]).await;

    let sent: Vec<(String, String)> = futures::stream::iter(cases.iter())
        .map(|c| {
            let q = &h.queue;
            async move {
                let mut req = q
                    .client
                    .send_message()
                    .queue_url(&q.url)
                    .message_body(&c.body);
                if let Some(bytes) = &c.binary_attr {
                    req = req.message_attributes(
                        "Payload",
                        MessageAttributeValue::builder()
                            .data_type("Binary")
                            .binary_value(Blob::new(bytes.clone()))
                            .build()
                            .expect("attribute"),
                    );
                }
                let out = req
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{}: SendMessage: {e:?}", c.file));
                (
                    out.message_id().unwrap_or_default().to_owned(),
                    c.file.clone(),
                )
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let by_id: HashMap<String, &Case> = sent
        .iter()
        .map(|(id, file)| {
            (
                id.clone(),
                cases.iter().find(|c| &c.file == file).expect("case"),
            )
        })
        .collect();

    let dead = h
        .dlq
        .try_receive_n(cases.len())
        .await
        .unwrap_or_else(|got| {
            let arrived: Vec<String> = got
                .iter()
                .filter_map(|m| m.attributes.get("OriginalMessageId").cloned())
                .collect();
            let logs = worker.raw_logs();
            let missing: Vec<String> = sent
                .iter()
                .filter(|(id, _)| !arrived.contains(id))
                .map(|(id, file)| {
                    let said: Vec<&String> =
                        logs.iter().filter(|l| l.contains(id.as_str())).collect();
                    format!("{file} (message {id}); the worker logged: {said:#?}")
                })
                .collect();
            panic!(
                "{} of {} bodies reached the DLQ in {:?}; missing:\n{}",
                got.len(),
                cases.len(),
                support::PATIENCE,
                missing.join("\n")
            )
        });
    let mut wrong = Vec::new();
    let mut seen = HashMap::new();
    for m in &dead {
        let attr = |k: &str| m.attributes.get(k).cloned().unwrap_or_default();
        let Some(case) = by_id.get(&attr("OriginalMessageId")) else {
            wrong.push(format!("unexpected DLQ message {:?}", m.attributes));
            continue;
        };
        *seen.entry(case.file.clone()).or_insert(0) += 1;
        let (class, message) = (attr("ReasonClass"), attr("ErrorMessage"));
        if class != case.class || !message.contains(&case.substring) {
            wrong.push(format!(
                "{}: DLQ says {class} {message:.300}; expected {} containing {:?}",
                case.file, case.class, case.substring
            ));
        }
        if m.body != case.body {
            wrong.push(format!("{}: DLQ body differs from the original", case.file));
        }
    }
    for c in &cases {
        match seen.get(&c.file) {
            Some(1) => {}
            n => wrong.push(format!("{}: in the DLQ {n:?} times", c.file)),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    h.wait_queue_empty().await;
    assert_eq!(h.peers.total_calls(), 0, "a bad body reached a peer");

    for path in ["/health", "/ready"] {
        let status = worker.get(path).await.map(|(s, _)| s);
        assert_eq!(status, Some(200), "GET {path} after the corpus");
    }
    h.peers.hold("r-after");
    h.queue.send(&bodies::expired("env-after", "r-after")).await;
    let deadline = tokio::time::Instant::now() + support::PATIENCE;
    loop {
        let status = h.peers.reservations.get("r-after").map(|r| r.status);
        if status.as_deref() == Some("EXPIRED") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "valid event after the corpus not processed: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
