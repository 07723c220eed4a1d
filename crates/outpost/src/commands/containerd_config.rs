//! `outpost containerd-config`: containerd's hosts directory pointing at outpost (the files
//! themselves are made by [`config::containerd`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use config::containerd::{self, Settings};

use super::{ConfigArgs, Failure};

#[derive(Debug, Args)]
pub struct ContainerdConfigArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// containerd's hosts directory to write (`config_path` in containerd's CRI registry config).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// outpost's URL as containerd reaches it (default: from `outpost.listen` and `outpost.tls`).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// The CA that signed outpost's certificate, for `ca = ` in hosts.toml.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Leave out the real upstream as `server`, so containerd never falls back to it (air-gapped nodes).
    #[arg(long)]
    pub no_fallback: bool,
    /// The client certificate containerd presents (mutual TLS, `outpost.tls.clientCa`), e.g.
    /// the NAME.pem of `outpost certs generate --client NAME`.
    #[arg(long, value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The private key of --client-cert.
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

pub fn run(args: ContainerdConfigArgs) -> Result<(), Failure> {
    let loaded = args.config.load()?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    let config = &loaded.config;
    let client = match (&args.client_cert, &args.client_key) {
        (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
        _ => None,
    };
    let settings = containerd::settings(
        config,
        args.endpoint.as_deref(),
        args.ca.as_deref(),
        client,
        args.no_fallback,
    )
    .map_err(Failure::other)?;
    if settings.endpoint.is_https() && settings.ca.is_none() {
        eprintln!(
            "warning: no CA for {}: containerd will only trust outpost if its certificate chains to \
             the system roots; pass --ca with the ca.pem of `outpost certs generate`",
            settings.endpoint
        );
    }
    if let Some(hint) = settings.endpoint.proxy_hint(config) {
        eprintln!("note: {hint}");
    }
    let files = containerd::plan(&containerd::known_registries(config), &settings);
    let written = containerd::write(&args.out, &files).map_err(Failure::other)?;
    print!("{}", summary(&args.out, &written, &settings));
    Ok(())
}

/// What the command prints: the files and how to enable the directory.
fn summary(out: &Path, written: &[PathBuf], settings: &Settings) -> String {
    let dir = std::path::absolute(out).unwrap_or_else(|_| out.to_path_buf());
    let mut text = String::new();
    let _ = writeln!(
        text,
        "Wrote containerd's hosts directory for {} ({}):",
        settings.endpoint,
        if settings.fallback {
            "falling back to the real registries"
        } else {
            "no fallback"
        }
    );
    for path in written {
        let _ = writeln!(text, "  {}", path.display());
    }
    let _ = writeln!(text);
    let _ = writeln!(
        text,
        "Enable it in containerd's config.toml (no restart needed for later changes to the directory):"
    );
    let _ = writeln!(text, "  [plugins.\"io.containerd.grpc.v1.cri\".registry]");
    let _ = writeln!(
        text,
        "    config_path = {}",
        containerd::toml_string(&dir.to_string_lossy())
    );
    let _ = writeln!(text, "For ctr:");
    let _ = writeln!(
        text,
        "  ctr images pull --hosts-dir {} docker.io/library/alpine:latest",
        dir.display()
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_says_how_to_enable_the_directory() {
        let settings = containerd::settings(
            &config::Config::default(),
            Some("https://127.0.0.1:5000"),
            None,
            None,
            false,
        )
        .unwrap();
        let out = Path::new("/etc/containerd/certs.d");
        let written = [out.join("_default/hosts.toml")];
        let summary = summary(out, &written, &settings);
        assert!(
            summary.contains("config_path = \"/etc/containerd/certs.d\""),
            "{summary}"
        );
        assert!(summary.contains("--hosts-dir"), "{summary}");
        assert!(summary.contains("_default/hosts.toml"), "{summary}");
    }
}
