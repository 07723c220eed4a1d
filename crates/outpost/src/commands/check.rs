//! `outpost check`: print the routing table (text, or JSON with `--json`) to stdout and the
//! warnings to stderr; a configuration error is exit code 2.

use std::io::Write as _;

use clap::Args;

use super::{ConfigArgs, Failure};

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Print the routing table as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: CheckArgs) -> Result<(), Failure> {
    let loaded = args.config.load()?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    let rows = config::routing_table(&loaded.config);
    let text = if args.json {
        let json = serde_json::to_string_pretty(&rows)
            .map_err(|e| Failure::other(format_args!("cannot print the table as JSON: {e}")))?;
        json + "\n"
    } else {
        config::render_text(&rows)
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // A closed pipe (`outpost check | head`) is the reader's choice, not a failure.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::other(format_args!(
            "cannot write the routing table to stdout: {e}"
        ))),
        _ => Ok(()),
    }
}
