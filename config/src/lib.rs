//! Loading a BLGV configuration file.
//!
//! TOML is read, `BLGV_<SECTION>__<KEY>` environment variables are applied on top (double
//! underscore between levels, array items by index: `BLGV_UPSTREAMS__0__USER`; `BLGV_` names
//! without a double underscore, like `BLGV_LOG`, are not configuration), the result is
//! deserialized into the program's typed config and validated. Every error names the key and the
//! fix, because the reader is an operator at a remote site, not the author of the file.

use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// A configuration problem: which key, what is wrong, what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("config key `{key}`: {problem}; fix: {fix}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
    pub fix: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

/// Checks serde cannot express: ranges, relations between keys, formats.
pub trait Validate {
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Why a config file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config file {path}: {source}; fix: check the path given to --config")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("config file {path}: {error}")]
    Invalid { path: PathBuf, error: ConfigError },
}

/// Read `path`, apply the process environment, deserialize and validate.
pub fn load<T: DeserializeOwned + Validate>(path: &Path) -> Result<T, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    from_toml_with_env(&text, path, std::env::vars())
}

/// As [`load`], from text and an explicit environment (tests pass their own).
pub fn from_toml_with_env<T: DeserializeOwned + Validate>(
    text: &str,
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, LoadError> {
    let mut doc: toml::Table = toml::from_str(text).map_err(|e| LoadError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    for (var, value) in env {
        // Only `BLGV_SECTION__KEY` names are overrides; other BLGV_ variables (BLGV_LOG, the
        // test tools' switches) are not configuration.
        if let Some(rest) = var.strip_prefix("BLGV_").filter(|r| r.contains("__")) {
            apply_override(&mut doc, rest, &value).map_err(|message| LoadError::Env {
                var: var.clone(),
                message,
            })?;
        }
    }
    let config = T::deserialize(toml::Value::Table(doc)).map_err(|e| LoadError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    config.validate().map_err(|error| LoadError::Invalid {
        path: path.to_path_buf(),
        error,
    })?;
    Ok(config)
}

/// Put `value` at the path named by an env var suffix (`PROXY__LISTEN` → proxy.listen).
fn apply_override(doc: &mut toml::Table, path: &str, value: &str) -> Result<(), String> {
    let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
    if parts.iter().any(String::is_empty) {
        return Err("empty path segment; write BLGV_SECTION__KEY".into());
    }
    // A value that parses as a TOML scalar keeps its type (numbers, booleans); anything else is
    // a string, so `BLGV_PROXY__LISTEN=0.0.0.0:3333` needs no quoting.
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let (first, rest) = parts.split_first().expect("split yields at least one part");
    let entry = doc
        .entry(first.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    set_path(entry, rest, parsed)
}

fn set_path(node: &mut toml::Value, path: &[String], value: toml::Value) -> Result<(), String> {
    let Some((part, rest)) = path.split_first() else {
        *node = value;
        return Ok(());
    };
    let child = match node {
        toml::Value::Table(t) => t
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new())),
        toml::Value::Array(a) => {
            let idx: usize = part
                .parse()
                .map_err(|_| format!("{part:?} must be an array index"))?;
            a.get_mut(idx)
                .ok_or_else(|| format!("index {idx} is past the end of the array in the file"))?
        }
        _ => return Err(format!("{part:?} is below a value that is not a table")),
    };
    set_path(child, rest, value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    struct T {
        a: A,
        items: Vec<A>,
    }
    #[derive(Deserialize, Debug)]
    struct A {
        n: i64,
        s: String,
    }
    impl Validate for T {
        fn validate(&self) -> Result<(), ConfigError> {
            if self.a.n < 0 {
                return Err(ConfigError::new("a.n", "negative", "use 0 or more"));
            }
            Ok(())
        }
    }

    const TEXT: &str = "[a]\nn = 1\ns = \"x\"\n[[items]]\nn = 2\ns = \"y\"\n";

    fn load(env: &[(&str, &str)]) -> Result<T, LoadError> {
        from_toml_with_env(
            TEXT,
            Path::new("t.toml"),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn overrides_keep_types_and_reach_array_items() {
        let t = load(&[("BLGV_A__N", "5"), ("BLGV_ITEMS__0__S", "0.0.0.0:1")]).unwrap();
        assert_eq!((t.a.n, t.items[0].s.as_str()), (5, "0.0.0.0:1"));
        assert_eq!(t.a.s, "x");
        assert_eq!(t.items[0].n, 2);
    }

    #[test]
    fn bad_overrides_and_invalid_values_name_what_to_fix() {
        let e = load(&[("BLGV_ITEMS__3__S", "v")]).unwrap_err().to_string();
        assert!(
            e.contains("BLGV_ITEMS__3__S") && e.contains("past the end"),
            "{e}"
        );
        // Not overrides: no SECTION__KEY shape.
        assert!(load(&[("BLGV_LOG", "debug"), ("BLGV_REAL_NODE", "1")]).is_ok());
        let e = load(&[("BLGV_A____N", "v")]).unwrap_err().to_string();
        assert!(e.contains("empty path segment"), "{e}");
        let e = load(&[("BLGV_A__N", "-1")]).unwrap_err().to_string();
        assert!(
            e.contains("`a.n`") && e.contains("fix: use 0 or more"),
            "{e}"
        );
        let e = load(&[("BLGV_A__N", "ten")]).unwrap_err().to_string();
        assert!(
            e.contains("not valid") && e.contains("a.n") || e.contains("invalid type"),
            "{e}"
        );
    }
}
