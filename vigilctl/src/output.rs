//! How a command prints what it got: a table for people, or JSON.
//!
//! Every command that prints data takes `-o table|json|jsonl`: `json` is one
//! document (an array for lists), `jsonl` one object per line. `--json` is
//! kept for scripts written before `-o`: it prints what it always printed,
//! which each command names as its [`OutputArgs::format`] legacy form.

use clap::{Args, ValueEnum};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    /// Aligned text for people; host-supplied text has control characters escaped.
    #[default]
    Table,
    /// One JSON document: an array for lists, an object for one thing.
    Json,
    /// One JSON object per line.
    Jsonl,
}

#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Output format: table (for people), json (one document), jsonl (one object per line).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
    /// JSON as this command printed it before -o existed (jsonl for alerts,
    /// audit and workload lists; json elsewhere). Kept for scripts.
    #[arg(long, conflicts_with = "output")]
    json: bool,
}

impl OutputArgs {
    /// The format asked for; `--json` means `legacy_json`.
    pub fn format(&self, legacy_json: OutputFormat) -> OutputFormat {
        if self.json {
            legacy_json
        } else {
            self.output
        }
    }
}

/// Prints a list: `table` renders all the items; json and jsonl use `as_json`.
pub fn print_list<T, J: Serialize>(
    format: OutputFormat,
    items: &[T],
    as_json: impl Fn(&T) -> J,
    table: impl FnOnce(&[T]) -> String,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Table => print!("{}", table(items)),
        OutputFormat::Json => {
            let values: Vec<J> = items.iter().map(as_json).collect();
            println!("{}", serde_json::to_string(&values)?);
        }
        OutputFormat::Jsonl => {
            for item in items {
                println!("{}", serde_json::to_string(&as_json(item))?);
            }
        }
    }
    Ok(())
}

/// Prints one thing: json and jsonl are the same single line.
pub fn print_one<J: Serialize>(
    format: OutputFormat,
    json: J,
    table: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Table => print!("{}", table()),
        OutputFormat::Json | OutputFormat::Jsonl => {
            println!("{}", serde_json::to_string(&json)?)
        }
    }
    Ok(())
}
