//! Log output on stderr: human-readable text, or one JSON object a line
//! for a log shipper (`--log-format json`). `VIGIL_LOG` filters either.

use tracing_subscriber::fmt::format::{Format, Json, JsonFields};
use tracing_subscriber::fmt::{MakeWriter, SubscriberBuilder};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object a line: `timestamp`, `level`, `target`, `fields`.
    Json,
}

fn env_filter(default_filter: &str) -> EnvFilter {
    EnvFilter::try_from_env("VIGIL_LOG").unwrap_or_else(|_| default_filter.into())
}

/// The JSON subscriber, writing to `writer`.
fn json_builder<W>(
    writer: W,
    default_filter: &str,
) -> SubscriberBuilder<JsonFields, Format<Json>, EnvFilter, W>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(env_filter(default_filter))
        .with_writer(writer)
        .json()
}

/// Installs the process's logger, to stderr. `default_filter` applies
/// when `VIGIL_LOG` is unset (e.g. `info,openraft=warn`).
pub fn init_logging(format: LogFormat, default_filter: &str) {
    match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(env_filter(default_filter))
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => json_builder(std::io::stderr, default_filter).init(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_json_log_line_is_one_json_object_with_level_target_and_fields() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = json_builder(move || writer.clone(), "info").finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(agent = "a-1", appended = 3, "findings committed");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(lines[0]).expect(lines[0]);
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["target"], module_path!(), "{line}");
        assert_eq!(line["fields"]["message"], "findings committed", "{line}");
        assert_eq!(line["fields"]["agent"], "a-1", "{line}");
        assert_eq!(line["fields"]["appended"], 3, "{line}");
        assert!(line["timestamp"].is_string(), "{line}");
    }

    #[test]
    fn the_flag_takes_text_or_json() {
        use clap::ValueEnum;
        assert_eq!(LogFormat::from_str("json", false), Ok(LogFormat::Json));
        assert_eq!(LogFormat::from_str("text", false), Ok(LogFormat::Text));
        assert!(LogFormat::from_str("yaml", false).is_err());
    }
}
