//! `reservation-worker send` puts parseable events on the queue: from flags, a JSONL file, or
//! N generated ones.

mod support;

use std::process::Command;

use reservation_worker::event::{self, EventKind, MessageContext};
use support::{Moto, worker::BIN};

fn send(moto: &Moto, queue_url: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("send")
        .args(args)
        .env_clear()
        .envs(moto.aws_env())
        .env("SQS_QUEUE_URL", queue_url)
        .output()
        .expect("run send")
}

#[tokio::test]
async fn send_from_flags_file_and_count() {
    let moto = Moto::start().await;
    let q = moto.create_queue("send-test", None).await;

    let out = send(
        &moto,
        &q.url,
        &[
            "--type",
            "payment.approved",
            "--reservation-id",
            "r-1",
            "--payment-intent-id",
            "pi-1",
            "--amount",
            "100",
            "--id",
            "env-1",
            "--form",
            "sns",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = q.receive_n(1).await;
    let ev = event::parse(&got[0].body, &MessageContext::default()).expect("a valid event");
    assert_eq!(ev.envelope_id, "env-1");
    match ev.kind {
        EventKind::PaymentApproved(p) => {
            assert_eq!(p.reservation_id, "r-1");
            assert_eq!(p.payment_intent_id, "pi-1");
        }
        other => panic!("wrong kind {other:?}"),
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, "{\"a\":1}\n\n{\"b\":2}\nnot json\n").expect("write");
    let out = send(&moto, &q.url, &["--file", file.to_str().expect("path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bodies: Vec<String> = q.receive_n(3).await.into_iter().map(|m| m.body).collect();
    for line in ["{\"a\":1}", "{\"b\":2}", "not json"] {
        assert!(bodies.contains(&line.to_string()), "{bodies:?}");
    }

    // --queue-url stands in for SQS_QUEUE_URL.
    let out = Command::new(BIN)
        .args(["send", "--count", "25", "--queue-url", q.url.as_str()])
        .env_clear()
        .envs(moto.aws_env())
        .output()
        .expect("run send");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("sent 25 message(s)"));
    let got = q.receive_n(25).await;
    let mut kinds = [0usize; 3];
    for m in &got {
        match event::parse(&m.body, &MessageContext::default())
            .expect("generated events are valid")
            .kind
        {
            EventKind::ReservationExpired(_) => kinds[0] += 1,
            EventKind::PaymentApproved(_) => kinds[1] += 1,
            EventKind::PaymentFailed(_) => kinds[2] += 1,
        }
    }
    assert_eq!(kinds, [9, 8, 8]);
}
