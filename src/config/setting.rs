//! What a row of the table is (variable, parser, default, meaning), how a variable's text
//! becomes a typed value, and the macro that turns the table into `Config` and its reader.

use std::marker::PhantomData;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer};

use super::{ConfigError, Http2, LogFormat, Secret};

/// One setting: a row of the table in `table.rs`.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The environment variable.
    pub var: &'static str,
    /// How its text is read.
    pub kind: Kind,
    /// What applies when it is unset or empty.
    pub unset: Unset,
    /// Its key in the Secrets Manager secret, when the secret may set it.
    pub key: Option<&'static str>,
    /// What it does, one line of markdown (the docs' table).
    pub meaning: &'static str,
}

/// How a setting's text is read.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A whole number from `min` to `max`; `words` say what it counts in errors.
    Int {
        min: u64,
        max: u64,
        unit: Unit,
        words: &'static str,
    },
    /// An absolute http(s) URL with a host.
    Url,
    /// An absolute http(s) URL with a host, its trailing slash dropped (paths are appended).
    BaseUrl,
    /// `host:port` or an http(s) URL without a path, read as a URI tonic can dial.
    Endpoint,
    /// `true` or `false` (also `1`/`0`, `yes`/`no`, any case).
    Bool,
    /// One of these words.
    Choice(&'static [&'static str]),
    /// A tracing filter directive.
    Filter,
    /// Any text.
    Text,
    /// A bearer token: a secret, never shown.
    Token,
}

/// What an integer setting's number is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Secs,
    Millis,
    Count,
}

/// What applies when a variable is unset or empty.
#[derive(Debug, Clone, Copy)]
pub enum Unset {
    /// This text, read like a value.
    Default(&'static str),
    /// A value computed from other settings, as described.
    Derived(&'static str),
    /// Nothing (the description says what that means).
    Optional(&'static str),
    /// Start-up stops; the text says what was expected.
    Required(&'static str),
}

/// Whole seconds from `min` to `max`.
pub(crate) const fn secs(min: u64, max: u64) -> Kind {
    Kind::Int {
        min,
        max,
        unit: Unit::Secs,
        words: "whole seconds",
    }
}

/// Milliseconds from `min` to `max`.
pub(crate) const fn millis(min: u64, max: u64) -> Kind {
    Kind::Int {
        min,
        max,
        unit: Unit::Millis,
        words: "milliseconds",
    }
}

/// A count from `min` to `max` of what `words` say.
pub(crate) const fn count(min: u64, max: u64, words: &'static str) -> Kind {
    Kind::Int {
        min,
        max,
        unit: Unit::Count,
        words,
    }
}

impl Kind {
    /// The same integer kind, saying `words` in errors.
    pub(crate) const fn saying(self, words: &'static str) -> Kind {
        match self {
            Kind::Int { min, max, unit, .. } => Kind::Int {
                min,
                max,
                unit,
                words,
            },
            other => other,
        }
    }

    /// What a valid value is, as an error says it.
    pub fn expected(&self) -> String {
        match *self {
            Kind::Int {
                min, max, words, ..
            } => format!("an integer from {min} to {max} ({words})"),
            Kind::Url | Kind::BaseUrl => "an absolute http:// or https:// URL".into(),
            Kind::Endpoint => "host:port or an http(s):// URL with no path".into(),
            Kind::Bool => "true or false".into(),
            Kind::Choice(words) => words.join(" or "),
            Kind::Filter => "a level (error, warn, info, debug, trace) or filter".into(),
            Kind::Text => "any text".into(),
            Kind::Token => "a bearer token without spaces or control characters".into(),
        }
    }

    fn unit(&self) -> Unit {
        match self {
            Kind::Int { unit, .. } => *unit,
            _ => Unit::Count,
        }
    }
}

impl Setting {
    /// The error for `value` of this variable.
    pub(crate) fn invalid(
        &self,
        value: impl Into<String>,
        expected: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            var: self.var,
            value: value.into(),
            expected: expected.into(),
        }
    }

    /// An integer within the table's range.
    fn int(&self, text: &str) -> Result<u64, ConfigError> {
        match (self.kind, text.parse::<u64>()) {
            (Kind::Int { min, max, .. }, Ok(n)) if (min..=max).contains(&n) => Ok(n),
            _ => Err(self.invalid(text, self.kind.expected())),
        }
    }
}

/// A type a setting is read into (as its kind says) and shown back as.
pub(crate) trait FromSetting: Sized + Clone {
    /// Reads `text`, trimmed and not empty.
    fn parse(s: &Setting, text: String) -> Result<Self, ConfigError>;
    /// The value as `GetStatus` shows it: `None` when unset, a secret masked.
    fn show(&self, s: &Setting) -> Option<String>;
    /// The value of an optional setting left unset; only `Option` has one.
    fn none() -> Option<Self> {
        None
    }
}

macro_rules! integers {
    ($($t:ty),*) => {$(
        impl FromSetting for $t {
            fn parse(s: &Setting, text: String) -> Result<Self, ConfigError> {
                let n = s.int(&text)?;
                Self::try_from(n).map_err(|_| s.invalid(text, s.kind.expected()))
            }
            fn show(&self, _: &Setting) -> Option<String> {
                Some(self.to_string())
            }
        }
    )*};
}
integers!(u16, u32, usize);

impl FromSetting for Duration {
    fn parse(s: &Setting, text: String) -> Result<Self, ConfigError> {
        let n = s.int(&text)?;
        Ok(match s.kind.unit() {
            Unit::Millis => Duration::from_millis(n),
            _ => Duration::from_secs(n),
        })
    }
    fn show(&self, s: &Setting) -> Option<String> {
        Some(match s.kind.unit() {
            Unit::Millis => self.as_millis().to_string(),
            _ => self.as_secs().to_string(),
        })
    }
}

impl FromSetting for bool {
    fn parse(s: &Setting, text: String) -> Result<Self, ConfigError> {
        match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(s.invalid(text, s.kind.expected())),
        }
    }
    fn show(&self, _: &Setting) -> Option<String> {
        Some(self.to_string())
    }
}

impl FromSetting for String {
    fn parse(s: &Setting, text: String) -> Result<Self, ConfigError> {
        match s.kind {
            Kind::Url => url(s, text),
            Kind::BaseUrl => url(s, text).map(|u| u.trim_end_matches('/').to_string()),
            Kind::Endpoint => endpoint(s, text),
            Kind::Filter => match tracing_subscriber::EnvFilter::try_new(&text) {
                Ok(_) => Ok(text),
                Err(e) => Err(s.invalid(text, format!("{} ({e})", s.kind.expected()))),
            },
            _ => Ok(text),
        }
    }
    fn show(&self, _: &Setting) -> Option<String> {
        Some(self.clone())
    }
}

impl FromSetting for LogFormat {
    fn parse(s: &Setting, text: String) -> Result<Self, ConfigError> {
        match text.as_str() {
            "json" => Ok(LogFormat::Json),
            "pretty" => Ok(LogFormat::Pretty),
            _ => Err(s.invalid(text, s.kind.expected())),
        }
    }
    fn show(&self, _: &Setting) -> Option<String> {
        Some(match self {
            LogFormat::Json => "json".into(),
            LogFormat::Pretty => "pretty".into(),
        })
    }
}

impl FromSetting for Http2 {
    fn parse(s: &Setting, text: String) -> Result<Self, ConfigError> {
        match text.as_str() {
            "alpn" => Ok(Http2::Alpn),
            "prior-knowledge" => Ok(Http2::PriorKnowledge),
            "off" => Ok(Http2::Off),
            _ => Err(s.invalid(text, s.kind.expected())),
        }
    }
    fn show(&self, _: &Setting) -> Option<String> {
        Some(
            match self {
                Http2::Alpn => "alpn",
                Http2::PriorKnowledge => "prior-knowledge",
                Http2::Off => "off",
            }
            .into(),
        )
    }
}

impl FromSetting for Secret {
    fn parse(s: &Setting, text: String) -> Result<Self, ConfigError> {
        if text.chars().any(|c| c.is_control() || c == ' ') {
            return Err(s.invalid(crate::redact::MASK, s.kind.expected()));
        }
        Ok(Secret::new(text))
    }
    fn show(&self, _: &Setting) -> Option<String> {
        Some(crate::redact::MASK.into())
    }
}

impl<T: FromSetting> FromSetting for Option<T> {
    fn parse(s: &Setting, text: String) -> Result<Self, ConfigError> {
        T::parse(s, text).map(Some)
    }
    fn show(&self, s: &Setting) -> Option<String> {
        self.as_ref().and_then(|v| v.show(s))
    }
    fn none() -> Option<Self> {
        Some(None)
    }
}

/// Checks that a value is an absolute http(s) URL with a host.
fn url(s: &Setting, text: String) -> Result<String, ConfigError> {
    match reqwest::Url::parse(&text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            // A password in a URL is sent (as Basic auth) and must never be shown.
            if let Some(password) = u.password() {
                crate::redact::register(password);
            }
            Ok(text)
        }
        _ => Err(s.invalid(text, s.kind.expected())),
    }
}

/// Accepts `host:port` or an http(s) URL and returns a URI tonic can dial.
fn endpoint(s: &Setting, text: String) -> Result<String, ConfigError> {
    let candidate = if text.contains("://") {
        text.clone()
    } else {
        format!("http://{text}")
    };
    match reqwest::Url::parse(&candidate) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && u.port_or_known_default().is_some()
                && (u.path().is_empty() || u.path() == "/") =>
        {
            Ok(candidate.trim_end_matches('/').to_string())
        }
        _ => Err(s.invalid(text, s.kind.expected())),
    }
}

/// A variable as read: unset, a typed value, or why its text is invalid (kept until the
/// value is needed, so a valid value from the secret can still replace an invalid one).
pub(crate) struct Field<T> {
    setting: &'static Setting,
    value: Result<Option<T>, ConfigError>,
}

impl<T: FromSetting> Field<T> {
    pub(crate) fn read(setting: &'static Setting, text: Option<String>) -> Field<T> {
        let text = text.map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
        Field {
            setting,
            value: text.map(|t| T::parse(setting, t)).transpose(),
        }
    }

    /// The value, else what the table says applies when unset. `secret` names the secret in
    /// use, which a missing setting's message mentions when the secret could have held it.
    pub(crate) fn get(&self, secret: Option<&str>) -> Result<T, ConfigError> {
        let s = self.setting;
        match (&self.value, s.unset) {
            (Err(e), _) => Err(e.clone()),
            (Ok(Some(v)), _) => Ok(v.clone()),
            (Ok(None), Unset::Default(text)) => T::parse(s, text.into()),
            (Ok(None), Unset::Required(expected)) => Err(match (s.key, secret) {
                (Some(key), Some(secret)) => ConfigError::MissingEverywhere {
                    var: s.var,
                    key,
                    secret: secret.into(),
                    expected,
                },
                _ => ConfigError::Missing {
                    var: s.var,
                    expected,
                },
            }),
            // `Derived` is filled in by the rules between settings before this is read.
            (Ok(None), Unset::Optional(what) | Unset::Derived(what)) => {
                T::none().ok_or(ConfigError::Missing {
                    var: s.var,
                    expected: what,
                })
            }
        }
    }

    /// Sets the value when unset: a default that depends on other settings.
    pub(crate) fn or(&mut self, default: T) {
        if let Ok(None) = self.value {
            self.value = Ok(Some(default));
        }
    }

    /// Narrows the table's range with a bound that depends on another setting (`None` keeps
    /// the table's), so the message gives the range that applies; `n` is the value's number.
    pub(crate) fn within(&mut self, min: Option<u64>, max: Option<u64>, n: impl Fn(&T) -> u64) {
        let Kind::Int {
            min: lo,
            max: hi,
            words,
            ..
        } = self.setting.kind
        else {
            return;
        };
        let (min, max) = (min.unwrap_or(lo), max.unwrap_or(hi));
        let s = self.setting;
        let out = |value: String| {
            Err(s.invalid(value, format!("an integer from {min} to {max} ({words})")))
        };
        self.value = match std::mem::replace(&mut self.value, Ok(None)) {
            Ok(Some(v)) if !(min..=max).contains(&n(&v)) => out(n(&v).to_string()),
            Err(ConfigError::Invalid { value, .. }) => out(value),
            other => other,
        };
    }

    /// Replaces this value with the secret's, when the secret set one; an invalid value then
    /// names the secret and its key rather than the variable the operator did not set.
    pub(crate) fn overlay(&mut self, from_secret: Field<T>, name: &str) {
        if let Ok(None) = from_secret.value {
            return;
        }
        let key = self.setting.key.unwrap_or(self.setting.var);
        self.value = from_secret.value.map_err(|e| match e {
            ConfigError::Invalid {
                value, expected, ..
            } => ConfigError::SecretValue {
                secret: name.into(),
                key,
                value,
                expected,
            },
            other => other,
        });
    }
}

/// Deserializes one variable's text into a [`Field`] of its setting.
pub(crate) struct Seed<T>(pub(crate) &'static Setting, pub(crate) PhantomData<T>);

impl<'de, T: FromSetting> DeserializeSeed<'de> for Seed<T> {
    type Value = Field<T>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Field<T>, D::Error> {
        String::deserialize(d).map(|text| Field::read(self.0, Some(text)))
    }
}

/// Declares every setting once: the [`Config`](super::Config) field it fills, that field's
/// type, the variable, how it is read, what applies when it is unset and, for those the secret
/// may set, its key there. The doc comment is its meaning in the docs. Generates `Config`,
/// `vars::<VAR>` (each row), `SETTINGS` (all rows), `Env` (the typed variables envy reads, with
/// the secret overlay and the conversion into `Config`) and `Config::settings` (what `GetStatus`
/// shows).
macro_rules! settings {
    (@unset default $t:literal) => { Unset::Default($t) };
    (@unset derived $t:literal) => { Unset::Derived($t) };
    (@unset optional $t:literal) => { Unset::Optional($t) };
    (@unset required $t:literal) => { Unset::Required($t) };
    (@key) => { None };
    (@key $k:literal) => { Some($k) };
    ($(
        $(#[doc = $doc:literal])+
        $field:ident: $ty:ty = $var:ident, $kind:expr, $unset:ident $text:literal $(, key $key:literal)?;
    )*) => {
        /// The worker's validated settings: one field per row of the table in `table.rs`.
        #[derive(Debug, Clone)]
        pub struct Config {
            $(
                $(#[doc = $doc])+
                #[doc = ""]
                #[doc = concat!("From `", stringify!($var), "`.")]
                pub $field: $ty,
            )*
            /// What the Secrets Manager overlay applied, when it was on.
            pub secret: Option<$crate::config::SecretSource>,
        }

        /// Each row of the table, by its variable.
        pub mod vars {
            use super::*;
            $(
                #[doc = concat!($($doc),+)]
                pub const $var: Setting = Setting {
                    var: stringify!($var),
                    kind: $kind,
                    unset: settings!(@unset $unset $text),
                    key: settings!(@key $($key)?),
                    meaning: concat!($($doc),+),
                };
            )*
        }

        /// Every setting, in the order of the docs.
        pub static SETTINGS: &[Setting] = &[$(vars::$var),*];

        /// The variables as envy reads them: each typed, or why it is invalid.
        #[allow(non_snake_case)]
        pub(super) struct Env {
            $(pub(super) $var: Field<$ty>,)*
        }

        impl Default for Env {
            fn default() -> Env {
                Env { $($var: Field::read(&vars::$var, None),)* }
            }
        }

        impl<'de> ::serde::Deserialize<'de> for Env {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Env, D::Error> {
                struct Visit;
                impl<'de> ::serde::de::Visitor<'de> for Visit {
                    type Value = Env;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                        f.write_str("environment variables")
                    }
                    fn visit_map<A: ::serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Env, A::Error> {
                        let mut env = Env::default();
                        while let Some(name) = map.next_key::<String>()? {
                            $(if name.eq_ignore_ascii_case(stringify!($var)) {
                                env.$var = map.next_value_seed(Seed(&vars::$var, ::std::marker::PhantomData))?;
                                continue;
                            })*
                            map.next_value::<::serde::de::IgnoredAny>()?;
                        }
                        Ok(env)
                    }
                }
                d.deserialize_map(Visit)
            }
        }

        impl Env {
            /// Takes every value the secret set over the environment's.
            pub(super) fn overlay(&mut self, secret: Env, name: &str) {
                $(self.$var.overlay(secret.$var, name);)*
            }

            /// Each setting from its variable or the table's default, in the table's order.
            pub(super) fn resolve(&self, secret: Option<&str>) -> Result<Config, ConfigError> {
                Ok(Config { $($field: self.$var.get(secret)?,)* secret: None })
            }
        }

        impl Config {
            /// Every setting's effective value by variable, in the table's order: `None` when
            /// unset, a secret as `***`.
            pub fn settings(&self) -> Vec<(&'static str, Option<String>)> {
                vec![$((stringify!($var), FromSetting::show(&self.$field, &vars::$var)),)*]
            }
        }
    };
}
