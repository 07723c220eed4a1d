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
    /// Also connect to the shared store (`outpost.sharedStore`) and say whether it answers.
    #[arg(long)]
    pub probe: bool,
}

pub fn run(args: CheckArgs) -> Result<(), Failure> {
    let loaded = args.config.load()?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    if let Some(problem) = loaded.config.serving_problem() {
        return Err(Failure::Config(problem));
    }
    let rows = config::routing_table(&loaded.config);
    let text = if args.json {
        let json = serde_json::to_string_pretty(&rows)
            .map_err(|e| Failure::other(format_args!("cannot print the table as JSON: {e}")))?;
        json + "\n"
    } else {
        let mut text = config::render_text(&rows);
        // Who may pull, when it is more than this machine (the default says nothing).
        let config = &loaded.config;
        if config.client_auth.required() || !config.listen.ip().is_loopback() {
            text.push_str(&format!("\nCLIENTS: {}\n", clients(config)));
        }
        if let Some(settings) = &config.shared_store {
            text.push_str(&format!(
                "\nSHARED STORE: {}\n",
                shared_store(settings, args.probe)?
            ));
        }
        text
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

/// The shared store as `check` says it: where, and with `--probe` whether it answers.
fn shared_store(settings: &config::SharedStoreConfig, probe: bool) -> Result<String, Failure> {
    let settings = server::shared_settings(settings);
    let mut text = settings.describe();
    if !probe {
        text.push_str(" (not contacted; `--probe` checks it)");
        return Ok(text);
    }
    let store = shared::SharedStore::new(&settings).map_err(|e| Failure::Other(e.into()))?;
    let answer = super::runtime()?.block_on(store.probe());
    match answer {
        Ok(usage) => text.push_str(&format!(
            ": reachable, {} blobs, {}",
            usage.blobs,
            config::ByteSize(usage.bytes)
        )),
        Err(e) => text.push_str(&format!(": NOT REACHABLE: {e}")),
    }
    Ok(text)
}

/// Who may pull, as `check` says it after the table.
fn clients(config: &config::Config) -> String {
    let auth = &config.client_auth;
    let mut ways = Vec::new();
    if let Some(ca) = &auth.client_ca {
        ways.push(format!(
            "a certificate of the CA {} (mutual TLS)",
            ca.display()
        ));
    }
    if let Some(file) = &auth.htpasswd {
        ways.push(format!("a user of {} (Basic)", file.display()));
    }
    match (ways.is_empty(), config.listen.ip().is_loopback()) {
        (false, _) => format!("must present {}", ways.join(" and ")),
        (true, true) => format!("anyone on this machine ({} is loopback)", config.listen),
        (true, false) => format!(
            "anyone who reaches {} (outpost.auth.anonymous: true)",
            config.listen
        ),
    }
}
