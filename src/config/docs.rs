//! The table against what else spells the settings: docs/configuration.md (its tables are
//! generated from the table), `.env.example` and the Helm chart (checked against it).

use std::fmt::Write as _;
use std::path::PathBuf;

use super::*;

/// Variables `.env.example` and the chart set for others to read: the AWS SDK, the
/// OpenTelemetry SDK (`telemetry::tracing`) and the log filter (`RUST_LOG`).
const READ_ELSEWHERE: &[&str] = &[
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SQS",
    "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "RUST_LOG",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
];

/// Variables the chart sets only to build another one from them (`$(VAR)`): the pod's
/// namespace and node, from the downward API, into `OTEL_RESOURCE_ATTRIBUTES`. The worker
/// reads neither.
const CHART_ONLY: &[&str] = &["POD_NAMESPACE", "NODE_NAME"];

/// Settings the chart leaves out, and why.
const NOT_IN_CHART: &[(&str, &str)] = &[("AWS_PROFILE", "local runs only; pods use IRSA")];

fn read(path: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn setting(var: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.var == var)
}

fn known(var: &str) -> bool {
    setting(var).is_some() || READ_ELSEWHERE.contains(&var) || CHART_ONLY.contains(&var)
}

fn is_var(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_uppercase())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// What the docs say a kind accepts.
fn accepted(kind: &Kind) -> String {
    match *kind {
        Kind::Int { min, max, unit, .. } => format!(
            "{min}–{max}{}",
            match unit {
                Unit::Secs => " s",
                Unit::Millis => " ms",
                Unit::Count => "",
            }
        ),
        Kind::Url | Kind::BaseUrl => "http(s) URL".into(),
        Kind::Endpoint => "`host:port` or http(s) URL".into(),
        Kind::Bool => "`true` or `false`".into(),
        Kind::Choice(words) => words
            .iter()
            .map(|w| format!("`{w}`"))
            .collect::<Vec<_>>()
            .join(" or "),
        Kind::Filter => "level or filter".into(),
        Kind::Text => "text".into(),
        Kind::Token => "token".into(),
    }
}

fn settings_table() -> String {
    let mut out = String::from("| variable | default | accepted | meaning |\n|---|---|---|---|\n");
    for s in SETTINGS {
        let default = match s.unset {
            Unset::Default(v) => format!("`{v}`"),
            Unset::Derived(how) | Unset::Optional(how) if !how.is_empty() => how.into(),
            Unset::Required(_) => "— (required)".into(),
            _ => "—".into(),
        };
        let (var, meaning) = (s.var, s.meaning.trim());
        let _ = writeln!(
            out,
            "| `{var}` | {default} | {} | {meaning} |",
            accepted(&s.kind)
        );
    }
    out
}

fn secret_keys_table() -> String {
    let mut out = String::from("| key | overrides |\n|---|---|\n");
    for s in SETTINGS {
        if let Some(key) = s.key {
            let _ = writeln!(out, "| `{key}` | `{}` |", s.var);
        }
    }
    out
}

/// `text` with the block between the `name` markers replaced by `content`.
fn with_block(text: &str, name: &str, content: &str) -> String {
    let begin = format!("<!-- generated: {name},");
    let end = format!("<!-- end: {name} -->");
    let (Some(b), Some(e)) = (text.find(&begin), text.find(&end)) else {
        panic!("docs/configuration.md lacks the markers `{begin} … -->` and `{end}`");
    };
    let b = b + text[b..].find('\n').expect("a marker line") + 1;
    format!("{}\n{content}\n{}", &text[..b], &text[e..])
}

#[test]
fn the_docs_tables_are_generated_from_the_table() {
    const PATH: &str = "docs/configuration.md";
    let text = read(PATH);
    let want = with_block(&text, "settings", &settings_table());
    let want = with_block(&want, "secret keys", &secret_keys_table());
    if std::env::var_os("UPDATE_DOCS").is_some() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(PATH);
        std::fs::write(path, &want).expect("write the docs");
        return;
    }
    if let Some((have, want)) = text.lines().zip(want.lines()).find(|(a, b)| a != b) {
        panic!(
            "{PATH} disagrees with src/config/table.rs; run `UPDATE_DOCS=1 cargo test --lib config::` and review the diff.\n  has:  {have}\n  want: {want}"
        );
    }
    assert_eq!(
        text, want,
        "{PATH}: run `UPDATE_DOCS=1 cargo test --lib config::`"
    );
}

/// `.env.example` lists every setting; a commented-out line shows the default; every
/// variable it sets is one the worker (or a library) reads; and its values are valid.
#[test]
fn env_example_agrees_with_the_table() {
    let text = read(".env.example");
    let lines: Vec<(bool, &str, &str)> = text
        .lines()
        .filter_map(|l| {
            let (commented, l) = l.strip_prefix('#').map_or((false, l), |l| (true, l));
            let (var, value) = l.split_once('=')?;
            is_var(var).then_some((commented, var, value))
        })
        .collect();
    for s in SETTINGS {
        assert!(
            lines.iter().any(|(_, var, _)| *var == s.var),
            ".env.example lacks {} (add it, commented out with its default if it has one)",
            s.var
        );
    }
    for (commented, var, value) in &lines {
        assert!(
            known(var),
            ".env.example sets {var}, which no setting in src/config/table.rs is"
        );
        if let (true, Some(Unset::Default(default))) = (commented, setting(var).map(|s| s.unset)) {
            assert_eq!(
                *value, default,
                ".env.example shows #{var}={value}, but its default is {default}"
            );
        }
    }
    let set = lines
        .iter()
        .filter(|(commented, var, _)| !commented && setting(var).is_some())
        .map(|(_, var, value)| (var.to_string(), value.to_string()));
    if let Err(e) = Config::from_vars(set) {
        panic!(".env.example's values are invalid: {e}");
    }
}

/// The chart sets every setting (but those in [`NOT_IN_CHART`]) and nothing unknown; values.yaml
/// documents each it sets from a value (`# -- VAR: …` above its key), that value is the table's
/// default, and values.schema.json allows no number the worker would refuse.
#[test]
fn the_chart_agrees_with_the_table() {
    let chart = "charts/reservation-worker";
    let deployment = read(&format!("{chart}/templates/deployment.yaml"));
    let lines: Vec<&str> = deployment.lines().map(str::trim).collect();
    // (variable, whether its value comes from values.yaml rather than `valueFrom`)
    let env: Vec<(&str, bool)> = lines
        .iter()
        .zip(lines.iter().skip(1))
        .filter_map(|(l, next)| Some((l.strip_prefix("- name: ")?, *next != "valueFrom:")))
        .filter(|(name, _)| is_var(name))
        .collect();
    let set: Vec<&str> = env.iter().map(|(var, _)| *var).collect();
    for var in &set {
        assert!(
            known(var),
            "the chart sets {var}, which no setting in src/config/table.rs is"
        );
    }
    for s in SETTINGS {
        assert!(
            set.contains(&s.var) || NOT_IN_CHART.iter().any(|(v, _)| *v == s.var),
            "the chart's deployment does not set {}",
            s.var
        );
    }

    let schema: serde_json::Value =
        serde_json::from_str(&read(&format!("{chart}/values.schema.json"))).expect("schema");
    let values = read(&format!("{chart}/values.yaml"));
    let mut path: Vec<(usize, &str)> = Vec::new();
    let mut documented: Option<&str> = None;
    let mut checked = Vec::new();
    for line in values.lines() {
        let trimmed = line.trim_start();
        if let Some(doc) = trimmed.strip_prefix("# -- ") {
            documented = doc
                .split_once(':')
                .map(|(var, _)| var)
                .filter(|v| is_var(v));
            continue;
        }
        let Some((key, value)) = trimmed
            .split_once(':')
            .filter(|_| !trimmed.starts_with('#'))
        else {
            continue;
        };
        let indent = line.len() - trimmed.len();
        path.retain(|(i, _)| *i < indent);
        path.push((indent, key));
        let Some(var) = documented.take() else {
            continue;
        };
        let keys: Vec<&str> = path.iter().map(|(_, k)| *k).collect();
        let at = keys.join(".");
        assert!(
            set.contains(&var),
            "values.yaml documents {var} at {at}, which the chart does not set"
        );
        checked.push(var);
        let Some(s) = setting(var) else { continue };
        let value = value.trim().trim_matches('"');
        if let Unset::Default(default) = s.unset {
            assert_eq!(
                value, default,
                "values.yaml {at} ({var}) is {value}; the worker's default is {default}"
            );
        }
        if let Kind::Int { min, max, .. } = s.kind {
            let rule = keys
                .iter()
                .fold(&schema, |node, key| &node["properties"][*key]);
            let bound = |name: &str| rule[name].as_u64();
            // 0 is how the chart leaves a derived setting unset.
            let derived = matches!(s.unset, Unset::Derived(_));
            assert!(
                bound("minimum").is_some_and(|lo| lo >= min || (derived && lo == 0))
                    && bound("maximum").is_some_and(|hi| hi <= max),
                "values.schema.json allows {at} ({var}) {:?}–{:?}; the worker accepts {min}–{max}",
                bound("minimum"),
                bound("maximum")
            );
        }
    }
    for (var, from_values) in env {
        assert!(
            !from_values || setting(var).is_none() || checked.contains(&var),
            "values.yaml has no `# -- {var}: …` comment above the value the chart sets {var} from"
        );
    }
}
