//! Field checks shared by every envelope form. Each check names the field by its dotted path
//! and says what it expected and what it found, so a dead-lettered message explains itself
//! without anyone having to re-read the body. Quoted values are truncated, so a hostile body
//! cannot make an error message (and hence a DLQ attribute or a log line) arbitrarily large.
//!
//! Nothing here recurses: every check looks at one JSON value and, for arrays, at its direct
//! elements only.

use std::collections::HashMap;

use super::json::{Json, Object};

use super::{EventError, MAX_ID_LEN, MAX_SEATS};

/// How many characters of a found string are quoted in an error: enough to recognise the
/// value, too few to flood a DLQ reason.
pub(super) const FOUND_CHARS: usize = 60;

/// The longest free-text value kept (`error_message`, `failure_reason`). Longer text is cut,
/// not rejected: a failed payment must still be processed even if its message is verbose.
pub(super) const MAX_TEXT_BYTES: usize = 1024;

/// The largest `qty` accepted: it goes into an `int32` proto field.
pub(super) const MAX_QTY: u32 = i32::MAX as u32;

/// The longest numeric string accepted as an `amount`; anything longer is not a price.
const MAX_AMOUNT_STR: usize = 64;

/// A field's name for an error, made only when there is one: a valid event names no field.
pub(super) trait FieldName {
    fn name(&self) -> String;
}

impl FieldName for str {
    fn name(&self) -> String {
        self.to_owned()
    }
}

/// `prefix.key` (just `key` in the envelope itself).
struct Path<'a> {
    prefix: &'a str,
    key: &'a str,
}

impl FieldName for Path<'_> {
    fn name(&self) -> String {
        if self.prefix.is_empty() {
            self.key.to_owned()
        } else {
            format!("{}.{}", self.prefix, self.key)
        }
    }
}

/// One element of an array field: `field[index]`.
struct Item<'a, F: ?Sized> {
    field: &'a F,
    index: usize,
}

impl<F: FieldName + ?Sized> FieldName for Item<'_, F> {
    fn name(&self) -> String {
        format!("{}[{}]", self.field.name(), self.index)
    }
}

/// Builds an [`EventError::InvalidField`]; a shorthand because almost every check ends in one.
pub(super) fn invalid(field: impl Into<String>, problem: impl Into<String>) -> EventError {
    EventError::InvalidField {
        field: field.into(),
        problem: problem.into(),
        event_type: None,
    }
}

/// A short, bounded description of a JSON value for the "found …" part of an error.
pub(super) fn describe(v: &Json<'_>) -> String {
    match v {
        Json::Null => "null".to_owned(),
        Json::Bool(b) => format!("boolean {b}"),
        Json::Number(n) => format!("number {n}"),
        Json::String(s) => describe_str(s),
        Json::Array(a) if a.len() == 1 => "an array of 1 item".to_owned(),
        Json::Array(a) => format!("an array of {} items", a.len()),
        Json::Object(o) if o.len() == 1 => "an object with 1 key".to_owned(),
        Json::Object(o) => format!("an object with {} keys", o.len()),
    }
}

/// [`describe`] for a string we already hold: quoted, escaped and truncated.
pub(super) fn describe_str(s: &str) -> String {
    if s.is_empty() {
        "an empty string".to_owned()
    } else {
        format!("string {:?}", crate::text::shortened_chars(s, FOUND_CHARS))
    }
}

/// Checks an id (reservation, event, payment, user, seat, envelope): a string that is
/// non-empty after trimming, at most [`MAX_ID_LEN`] bytes, without control characters.
/// Returns the trimmed id, because ids become idempotency keys and lookup keys downstream.
pub(super) fn id(field: &(impl FieldName + ?Sized), v: &Json<'_>) -> Result<String, EventError> {
    match v {
        Json::String(s) => id_str(field, s),
        other => Err(invalid(
            field.name(),
            format!("expected a string, found {}", describe(other)),
        )),
    }
}

/// [`id`] for a string that did not come from JSON (an SQS attribute or MessageId).
pub(super) fn id_str(field: &(impl FieldName + ?Sized), s: &str) -> Result<String, EventError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(invalid(
            field.name(),
            format!("expected a non-empty id, found {}", describe_str(s)),
        ));
    }
    if t.len() > MAX_ID_LEN {
        return Err(invalid(
            field.name(),
            format!(
                "expected an id of at most {MAX_ID_LEN} bytes, found {} bytes: {}",
                t.len(),
                describe_str(t)
            ),
        ));
    }
    if let Some((at, c)) = t.char_indices().find(|(_, c)| c.is_control()) {
        return Err(invalid(
            field.name(),
            format!(
                "expected an id without control characters, found {c:?} at byte {at} of {}",
                describe_str(t)
            ),
        ));
    }
    Ok(t.to_owned())
}

/// [`id`] for an id the reservation API gets as a URL path segment (the reservation id). The
/// client percent-encodes `/`, `\`, `?`, `#`, `%` and the rest, so the id stays one segment on
/// the wire. But URL libraries drop `.` and `..` instead of encoding them, and a proxy that
/// decodes paths before routing (nginx with a URI in `proxy_pass`; a WHATWG parser for `\`)
/// turns `%2F` back into a separator, then resolves dot segments and merges slashes: the id
/// `r1/../r2` would update `r2`. So every part between separators must be a plain name: not
/// empty, not a dot segment, nor one percent-encoded (for a server that decodes twice).
pub(super) fn path_segment_id(
    field: &(impl FieldName + ?Sized),
    v: &Json<'_>,
) -> Result<String, EventError> {
    let id = id(field, v)?;
    let refuse = |why: &str| {
        Err(invalid(
            field.name(),
            format!(
                "expected an id that can be one URL path segment, found {}: {why}",
                describe_str(&id)
            ),
        ))
    };
    for part in id.split(['/', '\\']) {
        if part.is_empty() {
            return refuse("an empty part next to `/` or `\\` (a proxy merges slashes)");
        }
        if matches!(
            part.to_ascii_lowercase().as_str(),
            "." | ".." | "%2e" | "%2e%2e" | ".%2e" | "%2e."
        ) {
            return refuse("`.` and `..` (or their %2e forms) navigate the path");
        }
    }
    Ok(id)
}

/// [`id`] for the envelope id, which is also sent as the `Idempotency-Key` HTTP header: a
/// header value holds visible ASCII and spaces only, so anything else is refused here, naming
/// the field, rather than failing every request later.
pub(super) fn key_id(
    field: &(impl FieldName + ?Sized),
    v: &Json<'_>,
) -> Result<String, EventError> {
    match v {
        Json::String(s) => key_id_str(field, s),
        other => id(field, other),
    }
}

/// [`key_id`] for a string that did not come from JSON (the SQS MessageId).
pub(super) fn key_id_str(field: &(impl FieldName + ?Sized), s: &str) -> Result<String, EventError> {
    let id = id_str(field, s)?;
    if let Some((at, c)) = id
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_graphic() || *c == ' '))
    {
        return Err(invalid(
            field.name(),
            format!(
                "expected an id of visible ASCII characters (it is sent as the Idempotency-Key header), found {c:?} at byte {at} of {}",
                describe_str(&id)
            ),
        ));
    }
    Ok(id)
}

/// A string only logged (`source`, the envelope `trace_id`): kept when it would pass as an
/// id, silently dropped otherwise, since a bad log label must not dead-letter a good event.
pub(super) fn log_string(v: &Json<'_>) -> Option<String> {
    match v {
        Json::String(s) => id_str("", s).ok(),
        _ => None,
    }
}

/// Checks a seat count: an integer `0..=i32::MAX` (it goes into an `int32` proto field).
/// An integral float such as `2.0` is accepted, since some JSON encoders write every
/// number that way.
pub(super) fn qty(field: &(impl FieldName + ?Sized), v: &Json<'_>) -> Result<u32, EventError> {
    let expected = || {
        format!(
            "expected an integer from 0 to {MAX_QTY}, found {}",
            describe(v)
        )
    };
    let Json::Number(n) = v else {
        return Err(invalid(field.name(), expected()));
    };
    let whole = if let Some(u) = n.as_u64() {
        Some(u)
    } else if let Some(f) = n
        .as_f64()
        .filter(|f| n.is_f64() && f.fract() == 0.0 && (0.0..=f64::from(MAX_QTY)).contains(f))
    {
        // Integral and within 0..=i32::MAX, so the cast is exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let whole = f as u64;
        Some(whole)
    } else {
        None // a negative integer
    };
    whole
        .and_then(|u| u32::try_from(u).ok())
        .filter(|&q| q <= MAX_QTY)
        .ok_or_else(|| invalid(field.name(), expected()))
}

/// Checks a list of seat ids: an array of at most [`MAX_SEATS`] valid, distinct ids. A bad
/// element is named by its index (`detail.seat_ids[3]`) so it can be found in the body.
pub(super) fn seat_ids(
    field: &(impl FieldName + ?Sized),
    v: &Json<'_>,
) -> Result<Vec<String>, EventError> {
    let Json::Array(items) = v else {
        return Err(invalid(
            field.name(),
            format!(
                "expected an array of seat id strings, found {}",
                describe(v)
            ),
        ));
    };
    if items.len() > MAX_SEATS {
        return Err(invalid(
            field.name(),
            format!(
                "expected at most {MAX_SEATS} seat ids, found {}",
                items.len()
            ),
        ));
    }
    let mut seats = Vec::with_capacity(items.len());
    // Keyed by the body's own (trimmed) text: no copy of a seat id but the one kept.
    let mut first_seen: HashMap<&str, usize> = HashMap::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let at = Item { field, index };
        let seat = id(&at, item)?;
        let text = item.as_str().map_or("", str::trim);
        if let Some(first) = first_seen.get(text) {
            return Err(invalid(
                at.name(),
                format!(
                    "expected distinct seat ids, found {} again (first at index {first})",
                    describe_str(&seat)
                ),
            ));
        }
        first_seen.insert(text, index);
        seats.push(seat);
    }
    Ok(seats)
}

/// Checks an amount: a finite JSON number ≥ 0, or a string holding one (`"12.50"`), since
/// payment systems often send decimals as strings to avoid float rounding.
pub(super) fn amount(field: &(impl FieldName + ?Sized), v: &Json<'_>) -> Result<f64, EventError> {
    let expected = || {
        format!(
            "expected a finite number ≥ 0 (or a numeric string), found {}",
            describe(v)
        )
    };
    let parsed = match v {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => parse_decimal(s),
        _ => None,
    };
    parsed
        .filter(|a| a.is_finite() && *a >= 0.0)
        // `+ 0.0` turns a `-0` into `0`.
        .map(|a| a + 0.0)
        .ok_or_else(|| invalid(field.name(), expected()))
}

/// Parses a plain decimal string (digits, `.`, sign, exponent). Rejects what `f64::from_str`
/// would also accept but no price is: `inf`, `NaN`, empty, or absurdly long text.
fn parse_decimal(s: &str) -> Option<f64> {
    let t = s.trim();
    let plain = !t.is_empty()
        && t.len() <= MAX_AMOUNT_STR
        && t.bytes().any(|b| b.is_ascii_digit())
        && t.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'));
    if plain { t.parse().ok() } else { None }
}

/// Checks a currency code: three uppercase ASCII letters (ISO 4217 style), so downstream
/// never has to guess between `usd`, `US$` and `USD`.
pub(super) fn currency(
    field: &(impl FieldName + ?Sized),
    v: &Json<'_>,
) -> Result<String, EventError> {
    match v {
        Json::String(s) if s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase()) => {
            Ok(s.to_string())
        }
        other => Err(invalid(
            field.name(),
            format!(
                "expected a 3-letter uppercase currency code such as \"EUR\", found {}",
                describe(other)
            ),
        )),
    }
}

/// Checks free text (`error_code`, `error_message`): a string, trimmed, cut to `max_bytes`.
/// An empty string counts as absent.
pub(super) fn text(
    field: &(impl FieldName + ?Sized),
    v: &Json<'_>,
    max_bytes: usize,
) -> Result<Option<String>, EventError> {
    match v {
        Json::String(s) => {
            let t = crate::text::prefix(s.trim(), max_bytes).trim_end();
            Ok((!t.is_empty()).then(|| t.to_owned()))
        }
        other => Err(invalid(
            field.name(),
            format!("expected a string, found {}", describe(other)),
        )),
    }
}

/// Extracts the trace id from a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`). Returns
/// `None` for anything malformed: a bad trace header must not dead-letter a good event.
pub(super) fn traceparent_trace_id(header: &str) -> Option<String> {
    let b = header.trim().as_bytes();
    let hex = |r: std::ops::Range<usize>| {
        b.get(r)
            .filter(|s| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
    };
    let dash = |i: usize| b.get(i) == Some(&b'-');
    let version = hex(0..2)?;
    let trace = hex(3..35)?;
    let span = hex(36..52)?;
    hex(53..55)?;
    let structured = dash(2) && dash(35) && dash(52);
    // Version 00 has exactly four fields; later versions may append more after a dash.
    let length_ok = if version == b"00" {
        b.len() == 55
    } else {
        b.len() == 55 || dash(55)
    };
    let non_zero = |s: &[u8]| s.iter().any(|&c| c != b'0');
    let valid = structured && length_ok && version != b"ff" && non_zero(trace) && non_zero(span);
    if valid {
        std::str::from_utf8(trace).ok().map(str::to_owned)
    } else {
        None
    }
}

/// The fields of one JSON object, with the dotted prefix that names them in errors (`""` for
/// the envelope, `"detail"` for its detail). A JSON `null` counts as absent throughout,
/// because many producers write `null` for "not set".
#[derive(Debug, Clone, Copy)]
pub(super) struct Fields<'a> {
    obj: &'a Object<'a>,
    prefix: &'static str,
}

impl<'a> Fields<'a> {
    /// Wraps `obj`, whose fields are named `prefix.key` in errors.
    pub(super) fn new(obj: &'a Object<'a>, prefix: &'static str) -> Self {
        Fields { obj, prefix }
    }

    /// The dotted path of `key`, as it appears in [`EventError::InvalidField`].
    pub(super) fn path(&self, key: &str) -> String {
        self.at(key).name()
    }

    /// `key`'s name for an error, made only if there is one.
    fn at<'k>(&self, key: &'k str) -> Path<'k> {
        Path {
            prefix: self.prefix,
            key,
        }
    }

    /// The value of `key`, `None` when absent or `null`.
    pub(super) fn get(&self, key: &str) -> Option<&'a Json<'a>> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    /// The value under `key` or else under its alias, with the key it was found under. Both
    /// present with different values is an error: one of them is wrong and we cannot tell
    /// which.
    fn pick(
        &self,
        key: &'static str,
        alias: &'static str,
    ) -> Result<Option<(&'static str, &'a Json<'a>)>, EventError> {
        match (self.get(key), self.get(alias)) {
            (Some(a), Some(b)) if a != b => Err(invalid(
                self.path(alias),
                format!(
                    "expected the same value as {} (an alias), found {} vs {}",
                    self.path(key),
                    describe(b),
                    describe(a)
                ),
            )),
            (Some(a), _) => Ok(Some((key, a))),
            (None, Some(b)) => Ok(Some((alias, b))),
            (None, None) => Ok(None),
        }
    }

    /// A required id.
    pub(super) fn required_id(&self, key: &str) -> Result<String, EventError> {
        match self.get(key) {
            Some(v) => id(&self.at(key), v),
            None => Err(invalid(
                self.path(key),
                "missing: expected a non-empty string",
            )),
        }
    }

    /// A required id that must be one URL path segment ([`path_segment_id`]).
    pub(super) fn required_path_id(&self, key: &str) -> Result<String, EventError> {
        match self.get(key) {
            Some(v) => path_segment_id(&self.at(key), v),
            None => self.required_id(key),
        }
    }

    /// A required id that may also arrive under an alias (`payment_id` for
    /// `payment_intent_id`). A missing value is reported under the canonical key.
    pub(super) fn required_id_or(
        &self,
        key: &'static str,
        alias: &'static str,
    ) -> Result<String, EventError> {
        match self.pick(key, alias)? {
            Some((found, v)) => id(&self.at(found), v),
            None => Err(invalid(
                self.path(key),
                format!("missing: expected a non-empty string (in {key} or {alias})"),
            )),
        }
    }

    /// An optional id; an empty or blank string counts as absent (producers often send `""`
    /// for "unknown"), but a wrong type or bad content is still an error.
    pub(super) fn optional_id(&self, key: &str) -> Result<Option<String>, EventError> {
        match self.get(key) {
            None => Ok(None),
            Some(Json::String(s)) if s.trim().is_empty() => Ok(None),
            Some(v) => id(&self.at(key), v).map(Some),
        }
    }

    /// An optional seat count under `key` or its alias (`quantity`).
    pub(super) fn optional_qty(
        &self,
        key: &'static str,
        alias: &'static str,
    ) -> Result<Option<u32>, EventError> {
        self.pick(key, alias)?
            .map(|(found, v)| qty(&self.at(found), v))
            .transpose()
    }

    /// Seat ids; absent means none.
    pub(super) fn seat_ids(&self, key: &str) -> Result<Vec<String>, EventError> {
        self.get(key)
            .map_or_else(|| Ok(Vec::new()), |v| seat_ids(&self.at(key), v))
    }

    /// A required amount.
    pub(super) fn amount(&self, key: &str) -> Result<f64, EventError> {
        match self.get(key) {
            Some(v) => amount(&self.at(key), v),
            None => Err(invalid(
                self.path(key),
                "missing: expected a finite number ≥ 0 (or a numeric string)",
            )),
        }
    }

    /// An optional currency code; an empty string counts as absent.
    pub(super) fn optional_currency(&self, key: &str) -> Result<Option<String>, EventError> {
        match self.get(key) {
            None => Ok(None),
            Some(Json::String(s)) if s.is_empty() => Ok(None),
            Some(v) => currency(&self.at(key), v).map(Some),
        }
    }

    /// Optional free text, cut to `max_bytes`.
    pub(super) fn optional_text(
        &self,
        key: &str,
        max_bytes: usize,
    ) -> Result<Option<String>, EventError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => text(&self.at(key), v, max_bytes),
        }
    }

    /// A required nested object of the envelope (`detail`), whose fields are then named
    /// `key.field`. Only one level deep: the envelope has no deeper objects we read.
    pub(super) fn object(&self, key: &'static str) -> Result<Fields<'a>, EventError> {
        match self.get(key) {
            Some(Json::Object(obj)) => Ok(Fields::new(obj, key)),
            Some(v) => Err(invalid(
                self.path(key),
                format!("expected an object, found {}", describe(v)),
            )),
            None => Err(invalid(
                self.path(key),
                "missing: expected an object holding the event's fields",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `serde_json::json!`, as the parser's tree.
    macro_rules! json {
        ($($t:tt)+) => {
            Json::from(serde_json::json!($($t)+))
        };
    }

    fn problem(r: Result<impl std::fmt::Debug, EventError>) -> (String, String) {
        match r {
            Err(EventError::InvalidField { field, problem, .. }) => (field, problem),
            other => panic!("expected InvalidField, got {other:?}"),
        }
    }

    #[test]
    fn describe_is_short_for_every_kind() {
        assert_eq!(describe(&json!(null)), "null");
        assert_eq!(describe(&json!(true)), "boolean true");
        assert_eq!(describe(&json!(42)), "number 42");
        assert_eq!(describe(&json!(-1.5)), "number -1.5");
        assert_eq!(describe(&json!("x")), "string \"x\"");
        assert_eq!(describe(&json!("")), "an empty string");
        assert_eq!(describe(&json!([1])), "an array of 1 item");
        assert_eq!(describe(&json!([1, 2])), "an array of 2 items");
        assert_eq!(describe(&json!({"a": 1})), "an object with 1 key");
        let long = describe(&json!("y".repeat(100_000)));
        assert!(long.len() < FOUND_CHARS + 20, "{long}");
        assert!(long.ends_with("…\""));
        assert_eq!(describe(&json!("a\nb")), "string \"a\\nb\"");
    }

    #[test]
    fn id_accepts_and_trims() {
        assert_eq!(id("f", &json!("  r-1 ")).ok(), Some("r-1".to_owned()));
        assert_eq!(
            id("f", &json!("a".repeat(MAX_ID_LEN)))
                .map(|s| s.len())
                .ok(),
            Some(MAX_ID_LEN)
        );
        assert!(id("f", &json!("座席-1")).is_ok());
    }

    #[test]
    fn id_rejections_say_expected_and_found() {
        assert_eq!(
            problem(id("detail.x", &json!(42))),
            (
                "detail.x".to_owned(),
                "expected a string, found number 42".to_owned()
            )
        );
        assert_eq!(
            problem(id("f", &json!(""))).1,
            "expected a non-empty id, found an empty string"
        );
        assert_eq!(
            problem(id("f", &json!("   "))).1,
            "expected a non-empty id, found string \"   \""
        );
        let (_, p) = problem(id("f", &json!("a".repeat(MAX_ID_LEN + 1))));
        assert!(
            p.starts_with("expected an id of at most 256 bytes, found 257 bytes"),
            "{p}"
        );
        let (_, p) = problem(id("f", &json!("a\u{0}b")));
        assert!(
            p.starts_with("expected an id without control characters, found '\\0' at byte 1"),
            "{p}"
        );
        assert!(id("f", &json!("a\u{85}b")).is_err(), "C1 control");
        assert_eq!(
            problem(id("f", &json!(null))).1,
            "expected a string, found null"
        );
        assert_eq!(
            problem(id("f", &json!(["a"]))).1,
            "expected a string, found an array of 1 item"
        );
    }

    #[test]
    fn path_ids_are_one_segment_or_refused() {
        for ok in [
            "r-1",
            "...",
            "%2e%2e%2e",
            "a?b#c",
            "예약",
            "a b",
            "r/with space",
            "a\\b",
        ] {
            assert_eq!(path_segment_id("f", &json!(ok)).ok().as_deref(), Some(ok));
        }
        for (bad, why) in [
            (".", "navigate the path"),
            (" .. ", "navigate the path"),
            ("%2E", "navigate the path"),
            ("%2e%2E", "navigate the path"),
            ("r1/../r2", "navigate the path"),
            ("r1\\.", "navigate the path"),
            ("a//b", "empty part"),
            ("/a", "empty part"),
            ("\\", "empty part"),
        ] {
            let (field, p) = problem(path_segment_id("detail.reservation_id", &json!(bad)));
            assert_eq!(field, "detail.reservation_id");
            assert!(
                p.starts_with("expected an id that can be one URL path segment") && p.contains(why),
                "{bad:?}: {p}"
            );
        }
    }

    #[test]
    fn key_ids_are_header_values() {
        assert_eq!(
            key_id("id", &json!(" env-1 ")).ok().as_deref(),
            Some("env-1")
        );
        assert!(key_id("id", &json!("a b~!")).is_ok());
        let (field, p) = problem(key_id("id", &json!("évé-1")));
        assert_eq!(field, "id");
        assert!(
            p.starts_with("expected an id of visible ASCII characters (it is sent as the Idempotency-Key header), found 'é' at byte 0"),
            "{p}"
        );
        assert!(key_id_str("id", "a\u{7f}").is_err());
        assert!(
            problem(key_id("id", &json!(7)))
                .1
                .starts_with("expected a string")
        );
    }

    #[test]
    fn huge_values_do_not_blow_up_messages() {
        let huge = "z".repeat(200_000);
        let (_, p) = problem(id("f", &json!(huge)));
        assert!(p.len() < 200, "{} bytes", p.len());
        let (_, p) = problem(amount("f", &json!(huge)));
        assert!(p.len() < 200, "{} bytes", p.len());
        let (_, p) = problem(currency("f", &json!(huge)));
        assert!(p.len() < 200, "{} bytes", p.len());
    }

    #[test]
    fn qty_bounds() {
        assert_eq!(qty("q", &json!(0)).ok(), Some(0));
        assert_eq!(qty("q", &json!(3)).ok(), Some(3));
        assert_eq!(qty("q", &json!(2.0)).ok(), Some(2));
        assert_eq!(qty("q", &json!(2_147_483_647_u64)).ok(), Some(MAX_QTY));
        let expected = "expected an integer from 0 to 2147483647, found";
        for (v, found) in [
            (json!(-1), "number -1"),
            (json!(2_147_483_648_u64), "number 2147483648"),
            (json!(u64::MAX), "number 18446744073709551615"),
            (json!(1.5), "number 1.5"),
            (json!(-2.0), "number -2.0"),
            (json!(3e10), "number 30000000000.0"),
            (json!("3"), "string \"3\""),
            (json!(true), "boolean true"),
        ] {
            let (field, p) = problem(qty("detail.qty", &v));
            assert_eq!(field, "detail.qty");
            assert_eq!(p, format!("{expected} {found}"));
        }
    }

    #[test]
    fn seat_ids_checks_each_element() {
        assert_eq!(
            seat_ids("s", &json!(["A1", " B2 "])).ok(),
            Some(vec!["A1".to_owned(), "B2".to_owned()])
        );
        assert_eq!(seat_ids("s", &json!([])).ok(), Some(vec![]));
        assert_eq!(
            problem(seat_ids("detail.seat_ids", &json!("A1"))),
            (
                "detail.seat_ids".to_owned(),
                "expected an array of seat id strings, found string \"A1\"".to_owned()
            )
        );
        assert_eq!(
            problem(seat_ids("detail.seat_ids", &json!(["A1", 7]))),
            (
                "detail.seat_ids[1]".to_owned(),
                "expected a string, found number 7".to_owned()
            )
        );
        assert_eq!(problem(seat_ids("s", &json!(["A1", ""]))).0, "s[1]");
        assert_eq!(
            problem(seat_ids("s", &json!(["A1", "B2", "A1"]))),
            (
                "s[2]".to_owned(),
                "expected distinct seat ids, found string \"A1\" again (first at index 0)"
                    .to_owned()
            )
        );
        // Duplicates after trimming are still duplicates.
        assert_eq!(problem(seat_ids("s", &json!(["A1", " A1"]))).0, "s[1]");
    }

    #[test]
    fn seat_ids_count_limit() {
        let max: Vec<String> = (0..MAX_SEATS).map(|i| format!("S{i}")).collect();
        assert_eq!(
            seat_ids("s", &json!(max)).map(|v| v.len()).ok(),
            Some(MAX_SEATS)
        );
        let over: Vec<String> = (0..=MAX_SEATS).map(|i| format!("S{i}")).collect();
        assert_eq!(
            problem(seat_ids("s", &json!(over))).1,
            "expected at most 500 seat ids, found 501"
        );
    }

    #[test]
    fn amount_numbers_and_strings() {
        assert_eq!(amount("a", &json!(12.5)).ok(), Some(12.5));
        assert_eq!(amount("a", &json!(0)).ok(), Some(0.0));
        assert_eq!(amount("a", &json!(1250)).ok(), Some(1250.0));
        assert_eq!(amount("a", &json!("12.50")).ok(), Some(12.5));
        assert_eq!(amount("a", &json!(" 7 ")).ok(), Some(7.0));
        assert_eq!(amount("a", &json!("1e2")).ok(), Some(100.0));
        let neg_zero = amount("a", &json!(-0.0)).ok();
        assert_eq!(neg_zero.map(f64::is_sign_positive), Some(true));
        for bad in [
            json!(-0.01),
            json!("-1"),
            json!("abc"),
            json!("NaN"),
            json!("inf"),
            json!("infinity"),
            json!(""),
            json!("."),
            json!("1e999"),
            json!("1".repeat(65)),
            json!(true),
            json!([1]),
        ] {
            let (f, p) = problem(amount("detail.amount", &bad));
            assert_eq!(f, "detail.amount");
            assert!(
                p.starts_with("expected a finite number ≥ 0 (or a numeric string), found "),
                "{p}"
            );
        }
        assert_eq!(
            problem(amount("a", &json!("abc"))).1,
            "expected a finite number ≥ 0 (or a numeric string), found string \"abc\""
        );
    }

    #[test]
    fn currency_codes() {
        assert_eq!(currency("c", &json!("EUR")).ok(), Some("EUR".to_owned()));
        for bad in [
            json!("eur"),
            json!("EURO"),
            json!("E1R"),
            json!("ÉUR"),
            json!(978),
        ] {
            let (_, p) = problem(currency("c", &bad));
            assert!(
                p.starts_with("expected a 3-letter uppercase currency code"),
                "{p}"
            );
        }
    }

    #[test]
    fn text_trims_cuts_and_treats_empty_as_absent() {
        assert_eq!(
            text("t", &json!(" declined "), 100).ok(),
            Some(Some("declined".to_owned()))
        );
        assert_eq!(text("t", &json!("  "), 100).ok(), Some(None));
        assert_eq!(
            text("t", &json!("x".repeat(5000)), 10).ok(),
            Some(Some("x".repeat(10)))
        );
        assert_eq!(
            text("t", &json!("line1\nline2"), 100).ok(),
            Some(Some("line1\nline2".to_owned()))
        );
        assert_eq!(
            problem(text("t", &json!(5), 100)).1,
            "expected a string, found number 5"
        );
    }

    #[test]
    fn traceparent_parsing() {
        let tid = "4bf92f3577b34da6a3ce929d0e0e4736";
        let good = format!("00-{tid}-00f067aa0ba902b7-01");
        assert_eq!(traceparent_trace_id(&good).as_deref(), Some(tid));
        assert_eq!(
            traceparent_trace_id(&format!(" {good} ")).as_deref(),
            Some(tid)
        );
        // A future version may append fields.
        let future = format!("01-{tid}-00f067aa0ba902b7-01-extra");
        assert_eq!(traceparent_trace_id(&future).as_deref(), Some(tid));
        for bad in [
            String::new(),
            "garbage".to_owned(),
            good.to_uppercase(),
            format!("{good}-extra"),
            format!("ff-{tid}-00f067aa0ba902b7-01"),
            format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)),
            format!("00-{tid}-0000000000000000-01"),
            format!("00_{tid}-00f067aa0ba902b7-01"),
            format!("00-{tid}-00f067aa0ba902b7-0"),
            format!("00-{}-00f067aa0ba902b7-01", &tid[..31]),
            format!("00-{tid}-00f067aa0ba902b7-01").replace('4', "é"),
            "é".repeat(60),
        ] {
            assert_eq!(traceparent_trace_id(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn fields_paths_nulls_and_aliases() {
        let obj = json!({"a": null, "qty": 2, "quantity": 3, "payment_id": "p-1", "e": ""});
        let Json::Object(map) = obj else {
            unreachable!()
        };
        let f = Fields::new(&map, "detail");
        assert_eq!(f.path("x"), "detail.x");
        assert_eq!(Fields::new(&map, "").path("x"), "x");
        assert!(f.get("a").is_none());
        assert_eq!(
            problem(f.required_id("a")).1,
            "missing: expected a non-empty string"
        );
        assert_eq!(
            f.required_id_or("payment_intent_id", "payment_id").ok(),
            Some("p-1".to_owned())
        );
        assert_eq!(
            problem(f.required_id_or("x", "y")),
            (
                "detail.x".to_owned(),
                "missing: expected a non-empty string (in x or y)".to_owned()
            )
        );
        assert_eq!(
            problem(f.optional_qty("qty", "quantity")),
            (
                "detail.quantity".to_owned(),
                "expected the same value as detail.qty (an alias), found number 3 vs number 2"
                    .to_owned()
            )
        );
        assert_eq!(f.optional_id("e").ok(), Some(None));
        assert_eq!(f.optional_id("a").ok(), Some(None));
        assert_eq!(f.seat_ids("missing").ok(), Some(vec![]));
        assert_eq!(
            problem(f.object("qty")).1,
            "expected an object, found number 2"
        );
        assert_eq!(problem(f.object("nope")).0, "detail.nope");
    }
}
