//! The shipped dashboard and alerts against a real Prometheus (Debian's `prometheus`, which
//! `make test` installs with promtool): it scrapes a real worker on loopback while that worker
//! processes successes, a retry, dead letters and a half-applied event, and evaluates the
//! shipped rule file. Then every dashboard query and every alert expression runs through
//! Prometheus's HTTP API: each must return without error, the panels with data where the run
//! made some, with the labels their legends name. A renamed metric or label fails here.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};

use reservation_sim::proto::reservation::v1::CommitStatus;
use reservation_sim::{GrpcFault, HttpFault, HttpRoute, InventoryMethod};
use serde_json::Value;
use support::{Harness, bodies};

use crate::support;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const DASHBOARD: &str = "charts/reservation-worker/files/grafana-dashboard.json";
/// The target labels a ServiceMonitor (or a pod scrape) gives the worker's series.
const NAMESPACE: &str = "shop";
const POD: &str = "worker-0";

/// A Prometheus server on a free loopback port, killed on drop.
struct Prometheus {
    child: Child,
    url: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `target` every second and evaluates the shipped rules every second.
    async fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {ROOT}/{}\nscrape_configs:\n  - job_name: reservation-worker\n    static_configs:\n      - targets: ['{target}']\n        labels:\n          namespace: {NAMESPACE}\n          pod: {POD}\n",
            super::alerts::RULES
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run prometheus ({e}): run `make test`, or apt-get install -y prometheus"
                )
            });
        let p = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            _dir: dir,
        };
        support::eventually_async("prometheus ready", async || {
            p.http
                .get(format!("{}/-/ready", p.url))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        p
    }

    /// `GET /api/v1/<path>`; panics unless Prometheus answers `"status": "success"`.
    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let mut url = reqwest::Url::parse(&format!("{}/api/v1/{path}", self.url)).expect("a URL");
        url.query_pairs_mut().extend_pairs(params);
        let resp = self.http.get(url).send().await.expect("prometheus answers");
        let body: Value = resp.json().await.expect("JSON");
        assert_eq!(body["status"], "success", "{path} {params:?}: {body}");
        body["data"].clone()
    }

    /// The instant vector `query` evaluates to now.
    async fn query(&self, query: &str) -> Vec<Value> {
        let data = self.api("query", &[("query", query)]).await;
        match data["resultType"].as_str() {
            Some("vector") => data["result"].as_array().cloned().unwrap_or_default(),
            // A scalar (`time() - …` folded to one number) is one unlabelled sample.
            Some("scalar") => vec![serde_json::json!({"metric": {}, "value": data["result"]})],
            other => panic!("{query}: unexpected result type {other:?}"),
        }
    }
}

fn value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// A panel query as Grafana sends it, for this run: the variables set to the scraped worker,
/// the interval macros to windows that cover the whole run.
fn expand(expr: &str) -> String {
    expr.replace("$namespace", NAMESPACE)
        .replace("$pod", POD)
        .replace("$__rate_interval", "2m")
        .replace("$__range", "10m")
}

/// The vector selectors of a PromQL expression (`name` or `name{matchers}`): the identifiers
/// outside braces that are not functions, keywords or grouping labels.
fn selectors(query: &str) -> Vec<String> {
    // Operators, and the aggregations (their grouping may come before the parenthesis).
    const KEYWORDS: [&str; 19] = [
        "and", "or", "unless", "bool", "offset", "by", "on", "without", "sum", "min", "max", "avg",
        "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile",
    ];
    let chars: Vec<char> = query.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '{' {
            // A matcher list on its own (no metric name before it) is not used here.
            while i < chars.len() && chars[i] != '}' {
                i += 1;
            }
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += 1;
            }
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j] == ' ' {
                j += 1;
            }
            let next = chars.get(j).copied();
            if matches!(
                word.as_str(),
                "by" | "on" | "without" | "ignoring" | "group_left" | "group_right"
            ) && next == Some('(')
            {
                // The grouping labels: skip them.
                while j < chars.len() && chars[j] != ')' {
                    j += 1;
                }
                i = j + 1;
                continue;
            }
            if next == Some('(') || KEYWORDS.contains(&word.as_str()) {
                continue;
            }
            let mut selector = word;
            if next == Some('{') {
                let end = chars[j..]
                    .iter()
                    .position(|&c| c == '}')
                    .map_or(chars.len(), |p| j + p + 1);
                selector.extend(&chars[j..end]);
                i = end;
            }
            out.push(selector);
            continue;
        }
        i += 1;
    }
    out
}

/// The labels a legend format names (`{{type}} {{outcome}}` → type, outcome).
fn legend_labels(legend: &str) -> Vec<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|rest| rest.split("}}").next())
        .map(|l| l.trim().to_string())
        .collect()
}

#[tokio::test]
async fn a_real_prometheus_runs_every_panel_and_alert_on_a_real_worker() {
    let h = Harness::start().await;
    for r in ["r-ok-1", "r-ok-2", "r-retry", "r-half"] {
        h.peers.hold(r);
    }
    let w = h.worker(&[("MAX_RETRIES", "3")]).await;
    let prometheus = Prometheus::start(&format!("127.0.0.1:{}", w.http_port().await)).await;
    // Scraped before the run, so counters and rates see every change from 0.
    support::eventually_async("a first scrape", async || {
        !prometheus
            .query("worker_events_total{job=\"reservation-worker\"}")
            .await
            .is_empty()
    })
    .await;

    // Successes, a retry, two dead letters (not JSON; a refused PATCH) and a half-applied event.
    h.queue.send(&bodies::expired("live-ok-1", "r-ok-1")).await;
    h.queue.send(&bodies::failed("live-ok-2", "r-ok-2")).await;
    h.peers
        .reservations
        .push_fault(HttpRoute::Patch, HttpFault::Status(503));
    h.queue
        .send(&bodies::approved("live-retry", "r-retry"))
        .await;
    h.queue.wait_empty().await;
    h.queue.send("{not json").await;
    h.queue
        .send(&bodies::expired("live-gone", "r-unknown"))
        .await;
    h.queue.wait_empty().await;
    h.peers.inventory.push_fault(
        InventoryMethod::CommitReservation,
        GrpcFault::CommitStatus(CommitStatus::FailedExpired),
    );
    h.queue.send(&bodies::approved("live-half", "r-half")).await;
    h.queue.wait_empty().await;
    w.wait_logs("dead-lettered").await;
    support::eventually("three dead letters", || {
        w.logs_with_message("dead-lettered").len() >= 3
    })
    .await;

    // Scraped after all of it.
    let half = format!(
        "worker_half_applied_events_total{{namespace=\"{NAMESPACE}\",type=\"payment.approved\",applied_step=\"status_update\"}}"
    );
    support::eventually_async("prometheus scraped the half-applied event", async || {
        prometheus.query(&half).await.first().map(value) == Some(1.0)
    })
    .await;

    // The dashboard's variables find the worker.
    for (label, matcher) in [
        ("namespace", "worker_build_info".to_string()),
        (
            "pod",
            format!("worker_build_info{{namespace=~\"{NAMESPACE}\"}}"),
        ),
    ] {
        let values = prometheus
            .api(
                &format!("label/{label}/values"),
                &[("match[]", matcher.as_str())],
            )
            .await;
        let want = if label == "pod" { POD } else { NAMESPACE };
        assert_eq!(values, serde_json::json!([want]), "variable {label}");
    }

    // Every panel query: no error, data, and the labels its legend shows.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{ROOT}/{DASHBOARD}")).expect("the dashboard"),
    )
    .expect("the dashboard is JSON");
    // Panels whose series the run moved: each must show a value above 0.
    let moved = [
        "Half-applied events (range)",
        "Ready pods",
        "Throughput by type and outcome",
        "End-to-end latency by type (p50, p99)",
        "In flight vs pool capacity",
        "Dead letters by reason",
        "Partial applications",
        "Retries by step",
        "Downstream latency by target and method (p99)",
        "Downstream results by target and method",
        "SQS call latency by operation (p99)",
        "Resident memory",
        "Builds running",
    ];
    let mut report = BTreeMap::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().expect("a title");
        let mut max = f64::NEG_INFINITY;
        for target in panel["targets"].as_array().expect("targets") {
            let expr = expand(target["expr"].as_str().expect("expr"));
            let result = prometheus.query(&expr).await;
            assert!(!result.is_empty(), "{title}: no data for {expr}");
            for label in legend_labels(target["legendFormat"].as_str().unwrap_or_default()) {
                for sample in &result {
                    let v = sample["metric"][label.as_str()]
                        .as_str()
                        .unwrap_or_default();
                    assert!(
                        !v.is_empty(),
                        "{title}: the legend's {label} is missing from {sample} ({expr})"
                    );
                }
            }
            max = result
                .iter()
                .map(value)
                .filter(|v| v.is_finite())
                .fold(max, f64::max);
        }
        if moved.contains(&title) {
            assert!(max > 0.0, "{title}: the run moved it, but it shows {max}");
        }
        report.insert(title.to_string(), max);
    }
    for t in moved {
        assert!(report.contains_key(t), "no panel titled {t:?}");
    }
    let expected_panels = panels.iter().filter(|p| p["type"] != "row").count();
    assert!(expected_panels >= 15, "{expected_panels} panels");

    // Every alert rule as Prometheus loaded it from the shipped file: evaluated without error,
    // and its expression answers a direct query too.
    let groups = prometheus.api("rules", &[]).await;
    let rules: Vec<Value> = groups["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    let shipped = std::fs::read_to_string(format!("{ROOT}/{}", super::alerts::RULES))
        .expect("the rules")
        .matches("- alert: ")
        .count();
    assert_eq!(rules.len(), shipped, "Prometheus loaded every rule");
    support::eventually_async("every rule evaluated", async || {
        let groups = prometheus.api("rules", &[]).await;
        groups["groups"][0]["rules"]
            .as_array()
            .is_some_and(|r| r.iter().all(|r| r["health"] == "ok"))
    })
    .await;
    for rule in &rules {
        let query = rule["query"].as_str().expect("query");
        prometheus.query(query).await;
        // Every series a rule reads exists (they are all exported from the start): a renamed
        // metric, label or label value would leave the alert silent for good.
        let selectors = selectors(query);
        assert!(!selectors.is_empty(), "{query}");
        for selector in selectors {
            assert!(
                !prometheus.query(&selector).await.is_empty(),
                "{}: {selector} matches no series",
                rule["name"]
            );
        }
    }

    // The two alerts without a `for:` fire on what the run did.
    support::eventually_async("the half-applied and dead-letter alerts fire", async || {
        let alerts = prometheus.api("alerts", &[]).await;
        let firing: Vec<(String, String)> = alerts["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|a| a["state"] == "firing")
            .map(|a| {
                (
                    a["labels"]["alertname"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    a["labels"]["reason"]
                        .as_str()
                        .or(a["labels"]["applied_step"].as_str())
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect();
        [
            ("ReservationWorkerHalfAppliedEvent", "status_update"),
            ("ReservationWorkerDeadLetters", "malformed_json"),
            ("ReservationWorkerDeadLetters", "downstream_rejected"),
        ]
        .iter()
        .all(|(a, l)| firing.contains(&(a.to_string(), l.to_string())))
    })
    .await;

    eprintln!("panel: largest value in the run");
    for (title, max) in &report {
        eprintln!("  {title}: {max}");
    }
}

#[test]
fn selectors_are_found_in_rule_expressions() {
    assert_eq!(
        selectors(
            r#"(sum by (namespace, target) (rate(x_total{result="terminal"}[10m])) / sum by (namespace, target) (rate(x_total[10m]))) > 0.05 and on (namespace, pod) worker_ready == 1"#
        ),
        [r#"x_total{result="terminal"}"#, "x_total", "worker_ready"]
    );
    assert_eq!(
        selectors("histogram_quantile(0.9, sum by (namespace, le) (rate(a_bucket[5m]))) > 300"),
        ["a_bucket"]
    );
}
