//! How a variable's text becomes a field's value and back ([`EnvValue`]),
//! for each type a knob has.

use std::{str::FromStr, time::Duration};

use crate::config::{CachePolicy, ManagerConfig};

/// What a field's value is written in, for [`EnvVar::unit`].
pub(super) fn unit_of<T: EnvValue>(_field: fn(&ManagerConfig) -> &T) -> &'static str {
    T::UNIT
}

/// How a variable's text becomes a field's value, and back.
pub(super) trait EnvValue: Sized {
    /// What the text is written in (a flag's value name).
    const UNIT: &'static str;
    fn parse(raw: &str) -> Result<Self, String>;
    fn show(&self) -> String;
}

fn whole(raw: &str) -> Result<u64, String> {
    raw.parse::<u64>()
        .map_err(|_| "is not a non-negative whole number".to_string())
}

impl EnvValue for u64 {
    const UNIT: &'static str = "N";
    fn parse(raw: &str) -> Result<Self, String> {
        whole(raw)
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl EnvValue for u32 {
    const UNIT: &'static str = "N";
    fn parse(raw: &str) -> Result<Self, String> {
        u32::try_from(whole(raw)?).map_err(|_| "is too large".to_string())
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl EnvValue for usize {
    const UNIT: &'static str = "N";
    fn parse(raw: &str) -> Result<Self, String> {
        usize::try_from(whole(raw)?).map_err(|_| "is too large".to_string())
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

/// Milliseconds.
impl EnvValue for Duration {
    const UNIT: &'static str = "MS";
    fn parse(raw: &str) -> Result<Self, String> {
        whole(raw)
            .map(Duration::from_millis)
            .map_err(|e| format!("{e} of milliseconds"))
    }
    fn show(&self) -> String {
        self.as_millis().to_string()
    }
}

/// Milliseconds; 0 = none.
impl EnvValue for Option<Duration> {
    const UNIT: &'static str = "MS";
    fn parse(raw: &str) -> Result<Self, String> {
        Duration::parse(raw).map(|d| (!d.is_zero()).then_some(d))
    }
    fn show(&self) -> String {
        self.unwrap_or_default().show()
    }
}

/// 0 = none.
impl EnvValue for Option<u32> {
    const UNIT: &'static str = "N";
    fn parse(raw: &str) -> Result<Self, String> {
        u32::parse(raw).map(|v| (v > 0).then_some(v))
    }
    fn show(&self) -> String {
        self.unwrap_or_default().show()
    }
}

/// `true`/`false` (also `1`/`0`, `on`/`off`).
impl EnvValue for bool {
    const UNIT: &'static str = "BOOL";
    fn parse(raw: &str) -> Result<Self, String> {
        match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "on" => Ok(true),
            "false" | "0" | "off" => Ok(false),
            _ => Err("is not true or false".to_string()),
        }
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl EnvValue for String {
    const UNIT: &'static str = "NAME";
    fn parse(raw: &str) -> Result<Self, String> {
        Ok(raw.to_string())
    }
    fn show(&self) -> String {
        self.clone()
    }
}

impl EnvValue for Option<String> {
    const UNIT: &'static str = "URL";
    fn parse(raw: &str) -> Result<Self, String> {
        Ok((!raw.is_empty()).then(|| raw.to_string()))
    }
    fn show(&self) -> String {
        self.as_deref()
            .map(crate::redact::redacted_url)
            .unwrap_or_default()
    }
}

/// Comma-separated URLs; empty: none.
impl EnvValue for Vec<String> {
    const UNIT: &'static str = "URLS";
    fn parse(raw: &str) -> Result<Self, String> {
        Ok(raw
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect())
    }
    fn show(&self) -> String {
        self.iter()
            .map(|u| crate::redact::redacted_url(u))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl EnvValue for f64 {
    const UNIT: &'static str = "NUMBER";
    fn parse(raw: &str) -> Result<Self, String> {
        match raw.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
            _ => Err("is not a non-negative number".to_string()),
        }
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl EnvValue for CachePolicy {
    const UNIT: &'static str = "POLICY";
    fn parse(raw: &str) -> Result<Self, String> {
        CachePolicy::from_str(raw)
    }
    fn show(&self) -> String {
        match self {
            CachePolicy::Lru => "lru",
            CachePolicy::TinyLfu => "tinylfu",
        }
        .to_string()
    }
}
