//! Thin wrapper around serde-saphyr that returns plain data for errors: the message, the line and
//! column, and (for type errors) the field path, so each caller can phrase its own error.

use serde::de::DeserializeOwned;

/// A YAML problem with its position (1-based; 0 when unknown) and the field path when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub message: String,
    pub line: u64,
    pub column: u64,
    /// serde path such as `[0].deployments[1].timeout`; empty for syntax errors or the root.
    pub path: String,
}

fn options() -> serde_saphyr::Options {
    serde_saphyr::options! { with_snippet: false }
}

fn from_saphyr(error: &serde_saphyr::Error, path: String) -> YamlError {
    let (line, column) = error
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    YamlError {
        message: strip_position(&error.to_string()),
        line,
        column,
        path,
    }
}

/// serde-saphyr appends or prefixes "line X column Y" to messages; we report the position
/// separately, so drop it from the text.
fn strip_position(message: &str) -> String {
    let mut text = message.trim().to_owned();
    for marker in [" at line ", "line "] {
        if let Some(start) = text.find(marker)
            && text[start + marker.len()..].split_whitespace().nth(1) == Some("column")
        {
            let rest = &text[start..];
            let end = rest
                .find("column ")
                .map(|c| {
                    let after = &rest[c + 7..];
                    c + 7
                        + after
                            .find(|ch: char| !ch.is_ascii_digit())
                            .unwrap_or(after.len())
                })
                .unwrap_or(rest.len());
            text = format!("{}{}", &text[..start], &rest[end..]);
            text = text.trim_start_matches([':', ' ']).trim().to_owned();
        }
    }
    text
}

/// Parses one YAML document into an untyped value (syntax check, key inspection).
pub fn parse_value(text: &str) -> Result<serde_json::Value, YamlError> {
    serde_saphyr::from_str_with_options(text, options()).map_err(|e| from_saphyr(&e, String::new()))
}

/// Parses every document of a stream into untyped values (empty documents are skipped).
pub fn parse_values(text: &str) -> Result<Vec<serde_json::Value>, YamlError> {
    serde_saphyr::from_multiple_with_options(text, options())
        .map_err(|e| from_saphyr(&e, String::new()))
}

/// Parses one YAML document into `T`, recording the field path of a type error.
pub fn parse_typed<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    let mut path = String::new();
    let outcome = serde_saphyr::with_deserializer_from_str_with_options(text, options(), |de| {
        serde_path_to_error::deserialize::<_, T>(de).map_err(|error| {
            path = error.path().to_string();
            error.into_inner()
        })
    });
    outcome.map_err(|error| {
        let path = if path == "." { String::new() } else { path };
        from_saphyr(&error, path)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Doc {
        items: Vec<Item>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Item {
        timeout: u64,
    }

    #[test]
    fn typed_errors_carry_path_and_position() {
        let err = parse_typed::<Doc>("items:\n  - timeout: 5\n  - timeout: soon\n").unwrap_err();
        assert_eq!(err.path, "items[1].timeout", "{err:?}");
        assert_eq!(err.line, 3, "{err:?}");
        assert!(err.column > 0, "{err:?}");
        assert!(!err.message.contains("line 3"), "{err:?}");
    }

    #[test]
    fn syntax_errors_carry_position() {
        let err = parse_value("a: [1, 2\nb: c\n").unwrap_err();
        assert!(err.line >= 1, "{err:?}");
        assert!(!err.message.is_empty());
    }
}
