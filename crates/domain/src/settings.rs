//! Reading settings from environment variables (the seed's names where it
//! has them), once at start, with errors that name the variable. Each
//! setting is declared once, as a [`Setting`] beside the code that reads
//! it, with its default and meaning; `docs/configuration.md` is generated
//! from those declarations (a test keeps it in step).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{name} is not set")]
    Missing { name: &'static str },
    #[error("{name}={value:?} is invalid: {reason}")]
    Invalid { name: &'static str, value: String, reason: String },
}

/// One setting: the variable's name, what it is when unset, and what it
/// means. The code reads the variable through it, so the default written
/// here is the one that applies, and the documentation shows the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub name: &'static str,
    pub unset: Unset,
    /// What it sets, with its unit.
    pub meaning: &'static str,
}

/// What a setting is when its variable is unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unset {
    /// Read as if it were set to this text.
    Default(&'static str),
    /// No value: the reader decides, as this text says (e.g. "the provider's").
    Absent(&'static str),
}

impl Setting {
    /// A setting whose unset value is `default`, read as if it were set.
    pub const fn new(name: &'static str, default: &'static str, meaning: &'static str) -> Self {
        Self { name, unset: Unset::Default(default), meaning }
    }

    /// A setting with no default value; `when_unset` says what happens then.
    pub const fn optional(name: &'static str, when_unset: &'static str, meaning: &'static str) -> Self {
        Self { name, unset: Unset::Absent(when_unset), meaning }
    }

    /// The default as the documentation shows it.
    pub fn default_text(&self) -> &'static str {
        match self.unset {
            Unset::Default(text) | Unset::Absent(text) => text,
        }
    }
}

/// Where settings come from: the process environment, or a map in tests.
#[derive(Clone)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// A snapshot of the process environment.
    pub fn process() -> Self {
        Self { vars: std::env::vars().collect() }
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self { vars: pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect() }
    }

    /// The variable's value as set; unset and empty are the same.
    pub fn get(&self, name: &str) -> Option<String> {
        self.vars.get(name).filter(|v| !v.trim().is_empty()).cloned()
    }

    /// The setting's value: as set, else its default; `None` for an unset
    /// setting without one.
    pub fn value(&self, setting: &Setting) -> Option<String> {
        match (self.get(setting.name), setting.unset) {
            (Some(value), _) => Some(value),
            (None, Unset::Default(default)) => Some(default.to_owned()),
            (None, Unset::Absent(_)) => None,
        }
    }

    /// The setting's value as text; missing only when it has no default.
    pub fn text(&self, setting: &Setting) -> Result<String, ConfigError> {
        self.value(setting).ok_or(ConfigError::Missing { name: setting.name })
    }

    /// The setting parsed, or `None` when it is unset without a default.
    pub fn parse_optional<T>(&self, setting: &Setting) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let Some(value) = self.value(setting) else { return Ok(None) };
        value.trim().parse().map(Some).map_err(|e: T::Err| ConfigError::Invalid {
            name: setting.name,
            value,
            reason: e.to_string(),
        })
    }

    /// The setting parsed (its default when unset).
    pub fn parse<T>(&self, setting: &Setting) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        self.parse_optional(setting)?.ok_or(ConfigError::Missing { name: setting.name })
    }

    /// Like [`Env::parse`], and the value must be at least `min`.
    pub fn parse_at_least<T>(&self, setting: &Setting, min: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
        T::Err: fmt::Display,
    {
        let value: T = self.parse(setting)?;
        at_least(setting, value, min)
    }

    /// Like [`Env::parse_optional`], and a value given must be at least `min`.
    pub fn parse_optional_at_least<T>(&self, setting: &Setting, min: T) -> Result<Option<T>, ConfigError>
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
        T::Err: fmt::Display,
    {
        self.parse_optional(setting)?.map(|value| at_least(setting, value, min)).transpose()
    }
}

fn at_least<T: PartialOrd + fmt::Display>(setting: &Setting, value: T, min: T) -> Result<T, ConfigError> {
    if value < min {
        return Err(ConfigError::Invalid {
            name: setting.name,
            value: value.to_string(),
            reason: format!("must be at least {min}"),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREADS: Setting = Setting::new("T_THREADS", "8", "threads");
    const MODEL: Setting = Setting::optional("T_MODEL", "the provider's", "the model");

    #[test]
    fn a_default_is_read_as_if_it_were_set() {
        let unset = Env::from_pairs([("T_MODEL", " ")]);
        assert_eq!(unset.parse::<u32>(&THREADS), Ok(8));
        assert_eq!(unset.value(&MODEL), None, "empty is unset");
        assert_eq!(unset.text(&MODEL), Err(ConfigError::Missing { name: "T_MODEL" }));
        let set = Env::from_pairs([("T_THREADS", "2"), ("T_MODEL", "m")]);
        assert_eq!(set.parse::<u32>(&THREADS), Ok(2));
        assert_eq!(set.text(&MODEL).as_deref(), Ok("m"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let env = Env::from_pairs([("T_THREADS", "many")]);
        let err = env.parse::<u32>(&THREADS).unwrap_err();
        assert!(err.to_string().starts_with("T_THREADS=\"many\" is invalid"), "{err}");
        let zero = Env::from_pairs([("T_THREADS", "0")]);
        assert!(zero.parse_at_least(&THREADS, 1u32).unwrap_err().to_string().contains("at least 1"));
        assert_eq!(Env::from_pairs([]).parse_optional_at_least::<u32>(&MODEL, 1), Ok(None));
    }
}
