//! The `reservation-sim` binary as `make dev` runs it: it says where it listens, serves both
//! peers, refuses a bad flag with the reason, and stops on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_reservation-sim");

#[test]
fn a_bad_failure_rate_is_refused_with_the_reason() {
    let out = Command::new(BIN)
        .args(["--failure-rate", "1.5"])
        .output()
        .expect("run reservation-sim");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("between 0 and 1"), "{stderr}");
}

#[tokio::test]
async fn it_serves_both_peers_and_stops_on_sigterm() {
    let mut child = Command::new(BIN)
        .args([
            "--inventory-addr",
            "127.0.0.1:0",
            "--reservation-addr",
            "127.0.0.1:0",
        ])
        .env("LOG_FORMAT", "json")
        .env_remove("RESERVATION_API_TOKEN")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn reservation-sim");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut grpc, mut rest) = (None, None);
    while grpc.is_none() || rest.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the listening lines");
        let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
        let addr = v["addr"].as_str().map(str::to_owned);
        match v["message"].as_str() {
            Some(m) if m.starts_with("inventory simulator") => grpc = addr,
            Some(m) if m.starts_with("reservation API simulator") => rest = addr,
            _ => {}
        }
    }
    let rest = rest.expect("REST address");
    let answer = reqwest::get(format!("http://{rest}/internal/reservations/r-1"))
        .await
        .expect("GET a reservation");
    assert_eq!(answer.status(), 200, "reservations are auto-created");
    let body: serde_json::Value = answer.json().await.expect("JSON");
    assert_eq!(body["reservation_id"], "r-1", "{body}");
    let grpc = grpc.expect("gRPC address");
    assert!(
        tokio::net::TcpStream::connect(&grpc).await.is_ok(),
        "the inventory simulator accepts connections on {grpc}"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    for _ in 0..100 {
        if let Some(status) = child.try_wait().expect("try_wait") {
            assert!(status.success(), "{status:?}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("reservation-sim did not stop within 5 s of SIGTERM");
}
