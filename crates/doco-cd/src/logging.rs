//! The daemon's log output: `LOG_LEVEL` as upstream, text or JSON (`DOCO_CD_LOG_FORMAT`).
//!
//! Logged values come from requests (a webhook URL's `{customTarget}`, payload fields such as
//! repository names and refs, client addresses) and from Git and Docker. None may write a raw
//! control character into the log: a newline forges a log line, a NUL or an ESC corrupts files and
//! drives the terminal of whoever reads them. tracing-subscriber's text format writes field values
//! raw (its own sanitizing covers only a few escape characters, and only in the message), so every
//! field of the text format, spans' included, goes through [`EscapedFields`]; the JSON format
//! escapes control characters itself. One place covers every log site, present and future.

use std::fmt;

use doco_config::{AppConfig, LogFormat};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};

/// Installs the global subscriber, writing to stderr.
pub fn init(config: &AppConfig) {
    let level = format!("{:?}", config.log_level).to_lowercase();
    let filter = tracing_subscriber::EnvFilter::new(format!(
        "warn,doco_cd={level},doco_engine={level},doco_git={level},doco_docker={level},doco_config={level},doco_process={level}"
    ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.fmt_fields(EscapedFields::default()).init(),
    }
}

/// tracing-subscriber's default field formatting (`message key=value ...`), with every control
/// character escaped as Rust does (`\0`, `\n`, `\u{1b}`). Field names lose their terminal italics.
#[derive(Debug, Default)]
pub struct EscapedFields(DefaultFields);

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut plain = String::new();
        self.0.format_fields(Writer::new(&mut plain), fields)?;
        for c in plain.chars() {
            if c.is_control() {
                write!(writer, "{}", c.escape_debug())?;
            } else {
                writer.write_char(c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::{error, info_span};

    use super::*;

    /// Every byte the subscriber writes.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn text_fields_of_events_and_spans_escape_control_characters() {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .fmt_fields(EscapedFields::default())
            .finish();
        let hostile = "nas\0\x1b[31m\nforged line\r\t\u{85}";
        tracing::subscriber::with_default(subscriber, || {
            let _span = info_span!("webhook", target = %hostile).entered();
            error!(target = %hostile, reference = ?hostile, "received {hostile}");
        });
        let bytes = capture.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let text = String::from_utf8(bytes).unwrap_or_default();
        let line = text.strip_suffix('\n').unwrap_or(&text);
        assert!(!line.contains(char::is_control), "{line:?}");
        let escaped = r"nas\0\u{1b}[31m\nforged line\r\t\u{85}";
        assert!(
            line.contains(&format!("webhook{{target={escaped}}}")),
            "{line}"
        );
        // The message's ESC was already escaped by tracing-subscriber, in its own spelling.
        assert!(
            line.contains(r"received nas\0\x1b[31m\nforged line\r\t\u{85}"),
            "{line}"
        );
        assert!(line.contains(&format!(" target={escaped}")), "{line}");
        assert!(
            line.contains(&format!(" reference=\"{escaped}\"")),
            "{line}"
        );
    }
}
