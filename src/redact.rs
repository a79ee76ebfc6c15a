//! The secrets this process knows, and the one rule every text it writes passes through: log
//! lines, dead-letter attributes, span attributes and events, `/metrics`, the debug service,
//! `check` and `dlq` output. A secret enters the process in a few places (the bearer token, AWS
//! keys, OTLP headers) and is registered there; any output may then carry it, however it got
//! there (a peer echoing the Authorization header in an error body, a library's debug line), so
//! the outputs are scrubbed rather than the paths audited one by one.
//!
//! A secret is matched as written and as the encodings that turn up in text: JSON and Rust
//! `Debug` escaping (a `"` or `\` in a token becomes `\"`, `\\`) and percent-encoding (a token in
//! a URL). Scrub before cutting text to a length, or a cut secret no longer matches.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::{PoisonError, RwLock};

/// What a secret is replaced with.
pub(crate) const MASK: &str = "***";

/// Values shorter than this are not registered: blanking every "abc" would wreck the text, and
/// such a value is no real secret anyway.
pub(crate) const MIN_LEN: usize = 8;

/// Every form of every registered secret, longest first (a form containing another is replaced
/// whole).
static FORMS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Environment variables whose value is a credential (read by the AWS SDK).
const SECRET_VARS: [&str; 2] = ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"];

/// Environment variables of `key=value,…` pairs whose values are credentials (collector headers).
const SECRET_HEADER_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
];

/// Registers a secret: from now on every output of the process masks it.
pub(crate) fn register(secret: &str) {
    let secret = secret.trim();
    if secret.len() < MIN_LEN {
        return;
    }
    let mut forms = FORMS.write().unwrap_or_else(PoisonError::into_inner);
    for form in encodings(secret) {
        if !forms.contains(&form) {
            forms.push(form);
        }
    }
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
}

/// Registers the credentials found among `vars` (the AWS keys, OTLP header values).
pub(crate) fn register_from_vars<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) {
    for (name, value) in vars {
        if SECRET_VARS.contains(&name) {
            register(value);
        } else if SECRET_HEADER_VARS.contains(&name) {
            for pair in value.split(',') {
                if let Some((_, v)) = pair.split_once('=') {
                    register(v);
                }
            }
        }
    }
}

/// Registers the credentials in the process environment.
pub(crate) fn register_from_env() {
    let vars: Vec<(String, String)> = std::env::vars().collect();
    register_from_vars(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
}

/// `text` with every registered secret masked. Borrows when there is nothing to mask.
pub(crate) fn text(text: &str) -> Cow<'_, str> {
    let forms = FORMS.read().unwrap_or_else(PoisonError::into_inner);
    let mut out = Cow::Borrowed(text);
    for form in forms.iter() {
        if out.contains(form.as_str()) {
            out = Cow::Owned(out.replace(form.as_str(), MASK));
        }
    }
    out
}

/// [`text`] for an owned string, without a copy when there is nothing to mask.
pub(crate) fn owned(text: String) -> String {
    match self::text(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(masked) => masked,
    }
}

/// The forms a secret takes in text: as written, percent-encoded, and escaped once or twice
/// by JSON or `Debug` (a peer's JSON error body quoting the header, then that body inside a
/// JSON log line or an error's `Debug`).
fn encodings(secret: &str) -> Vec<String> {
    let mut forms = vec![secret.to_string(), percent_encoded(secret)];
    let mut once = Vec::new();
    for escaped in escapes(secret) {
        once.extend(escapes(&escaped));
        once.push(escaped);
    }
    forms.extend(once);
    forms.sort();
    forms.dedup();
    forms
}

/// `s` as a JSON string and as a `Debug` string would hold it, without the quotes.
fn escapes(s: &str) -> [String; 2] {
    let inner = |quoted: String| {
        quoted
            .strip_prefix('"')
            .and_then(|q| q.strip_suffix('"'))
            .map(str::to_string)
            .unwrap_or_default()
    };
    [
        inner(serde_json::to_string(s).unwrap_or_default()),
        inner(format!("{s:?}")),
    ]
}

/// Every byte but RFC 3986's unreserved characters as `%XX` (upper-case hex, as URL libraries
/// write it).
fn percent_encoded(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_encoding_of_a_secret_is_masked() {
        let secret = r#"tok"with\quotes-9f2c1d"#;
        register(secret);
        register("short");
        let json = serde_json::to_string(&serde_json::json!({ "e": format!("Bearer {secret}") }))
            .expect("json");
        assert!(
            !json.contains(secret),
            "the JSON form differs from the raw one"
        );
        let twice = serde_json::to_string(&json).expect("json");
        for t in [
            format!("raw Bearer {secret}"),
            json,
            twice,
            format!("{:?}", format!("debug {secret}")),
            format!("url ?token={}", percent_encoded(secret)),
        ] {
            let masked = text(&t);
            assert!(masked.contains(MASK), "{t} → {masked}");
            assert!(!masked.contains("with"), "{t} → {masked}");
        }
        assert_eq!(text("short and plain"), "short and plain");
        assert!(matches!(text("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn credentials_are_found_among_variables() {
        register_from_vars([
            ("AWS_SECRET_ACCESS_KEY", "aws-secret-value-1"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-api-key=otel-key-value-2,other=z",
            ),
            ("AWS_REGION", "ap-northeast-2-not-secret"),
        ]);
        assert_eq!(
            text("aws-secret-value-1 otel-key-value-2 ap-northeast-2-not-secret"),
            "*** *** ap-northeast-2-not-secret"
        );
    }
}
