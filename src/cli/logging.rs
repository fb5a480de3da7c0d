//! Where the logs go and how they look: plain text for people (coloured only on a
//! terminal, so files and Kubernetes logs carry no escape codes), or one JSON object per
//! line for log pipelines.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line of text per event; coloured when stderr is a terminal.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with the
    /// `message`) and the spans.
    Json,
}

/// Installs the global subscriber. An invalid filter is reported and replaced by
/// `fallback`, so a typo in `--log` never silences the logs altogether.
pub fn init(filter: &str, fallback: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|err| {
        eprintln!("invalid --log filter {filter:?}: {err}; using {fallback:?}");
        EnvFilter::new(fallback)
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}
