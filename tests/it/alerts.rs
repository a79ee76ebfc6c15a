//! The shipped alerts (`charts/reservation-worker/files/prometheus-rules.yaml`): Prometheus's own
//! `promtool` checks them and runs their unit tests (`tests/prometheus/alerts.test.yaml`), every
//! alert has a test where it fires and one where it stays quiet, and every one carries a
//! summary, a description, a severity and a runbook_url that lands on its section of
//! `docs/runbook.md`.

use std::collections::BTreeSet;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
pub(crate) const RULES: &str = "charts/reservation-worker/files/prometheus-rules.yaml";
const RULE_TESTS: &str = "tests/prometheus/alerts.test.yaml";
const RUNBOOK: &str = "docs/runbook.md";
const RUNBOOK_URL: &str = "https://github.com/example/reservation-worker/blob/main/docs/runbook.md";

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs promtool (Debian's `prometheus` package; `make test` installs it) in the repository.
fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(ROOT)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): run `make test`, or apt-get install -y prometheus")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

/// The alert names of the rule file, in order.
fn alerts(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let checked = promtool(&["check", "rules", RULES]);
    let n = alerts(&read(RULES)).len();
    assert!(
        checked.contains(&format!("SUCCESS: {n} rules found")),
        "{checked}"
    );
    let tested = promtool(&["test", "rules", RULE_TESTS]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn every_alert_is_tested_firing_and_quiet() {
    let tests = read(RULE_TESTS);
    // One alert_rule_test case per `- eval_time:` item: its alertname, and whether it expects
    // alerts.
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for case in tests.split("- eval_time:").skip(1) {
        let case = case.split("\n  - name:").next().unwrap_or(case);
        let name = case
            .lines()
            .find_map(|l| l.trim().strip_prefix("alertname: "))
            .expect("an alertname in every case")
            .to_string();
        if case.contains("exp_alerts:") {
            firing.insert(name);
        } else {
            quiet.insert(name);
        }
    }
    for alert in alerts(&read(RULES)) {
        assert!(firing.contains(&alert), "{alert}: no test where it fires");
        assert!(
            quiet.contains(&alert),
            "{alert}: no test where it stays quiet"
        );
    }
}

#[test]
fn every_alert_says_what_it_means_and_links_its_runbook_section() {
    let rules = read(RULES);
    let runbook = read(RUNBOOK);
    let sections: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    let names = alerts(&rules);
    assert!(names.len() >= 9, "{names:?}");
    for (name, rule) in names.iter().zip(rules.split("- alert: ").skip(1)) {
        for key in ["summary: ", "description: ", "severity: "] {
            assert!(rule.contains(key), "{name}: no {key}");
        }
        let url = rule
            .lines()
            .find_map(|l| l.trim().strip_prefix("runbook_url: "))
            .unwrap_or_else(|| panic!("{name}: no runbook_url"));
        let anchor = name.to_lowercase();
        assert_eq!(url, format!("{RUNBOOK_URL}#{anchor}"), "{name}");
        assert!(
            sections.contains(&anchor),
            "{name}: {RUNBOOK} has no `## {name}` section"
        );
    }
    // And no runbook section for an alert that does not exist.
    let known: BTreeSet<String> = names.iter().map(|n| n.to_lowercase()).collect();
    for s in &sections {
        assert!(known.contains(s), "{RUNBOOK}: section {s} names no alert");
    }
}
