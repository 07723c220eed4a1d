//! `outpost certs generate`: the operator's front end to [`certs::generate`]. Parses the
//! `--san` values, writes the files, and prints what was written and what to do next.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use certs::{Generated, San};
use clap::{Args, Subcommand};

use super::Failure;

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Write a CA (ca.pem, ca-key.pem) and a server certificate signed by it (server.pem,
    /// server-key.pem); with --client NAME, a client certificate of that CA (NAME.pem,
    /// NAME-key.pem) for mutual TLS (`outpost.tls.clientCa`).
    Generate(CertsGenerateArgs),
}

#[derive(Debug, Args)]
pub struct CertsGenerateArgs {
    /// Directory to write the files into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// A DNS name or IP address for the server certificate; repeatable.
    /// Default: localhost, 127.0.0.1, ::1 and this host's name.
    #[arg(long = "san", value_name = "NAME_OR_IP")]
    pub sans: Vec<String>,
    /// Validity of the certificates in days.
    #[arg(long, default_value_t = 825)]
    pub days: u32,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
    /// Issue a client certificate NAME.pem / NAME-key.pem from the CA already in --dir
    /// (for `outpost.tls.clientCa`), instead of a CA and a server certificate.
    #[arg(long, value_name = "NAME", conflicts_with = "sans")]
    pub client: Option<String>,
}

pub fn run(args: CertsGenerateArgs) -> Result<(), Failure> {
    if let Some(name) = &args.client {
        let client = certs::generate_client(&args.dir, name, args.days, args.force)
            .map_err(|e| Failure::Other(e.into()))?;
        print!("{}", client_report(&client));
        return Ok(());
    }
    let sans = args
        .sans
        .iter()
        .map(|s| San::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::Other(e.into()))?;
    let generated = certs::generate(&args.dir, &sans, args.days, args.force)
        .map_err(|e| Failure::Other(e.into()))?;
    print!("{}", report(&generated));
    Ok(())
}

/// What `--client` wrote and how a client uses it.
fn client_report(client: &certs::GeneratedClient) -> String {
    let abs = |p: &Path| {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .display()
            .to_string()
    };
    let (cert, key) = (abs(&client.cert), abs(&client.key));
    let until = humantime::format_rfc3339_seconds(client.not_after);
    let mut text = String::new();
    let _ = writeln!(
        text,
        "Wrote the client certificate {:?}, valid until {until}:",
        client.name
    );
    let _ = writeln!(text, "  {cert}  (certificate and CA)");
    let _ = writeln!(text, "  {key}  (private key, mode 0600)");
    let _ = writeln!(text);
    let _ = writeln!(
        text,
        "outpost admits it with `outpost.tls.clientCa` set to the ca.pem of this directory."
    );
    let _ = writeln!(
        text,
        "containerd presents it with: outpost containerd-config --client-cert {cert} --client-key {key} ..."
    );
    text
}

/// What was written (paths, names, expiry) and the next steps.
pub fn report(generated: &Generated) -> String {
    let layout = &generated.layout;
    let abs = |p: &Path| {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .display()
            .to_string()
    };
    let until = |t| humantime::format_rfc3339_seconds(t).to_string();
    let names = generated
        .sans
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = String::new();
    if generated.ca_reused {
        let _ = writeln!(
            out,
            "Reused the existing CA (valid until {}):",
            until(generated.ca_not_after)
        );
        let _ = writeln!(out, "  {}  (unchanged)", abs(&layout.ca_cert));
        let _ = writeln!(out, "  {}  (unchanged)", abs(&layout.ca_key));
    } else {
        let _ = writeln!(
            out,
            "Wrote a new CA (valid until {}):",
            until(generated.ca_not_after)
        );
        let _ = writeln!(
            out,
            "  {}  CA certificate: what containerd must trust",
            abs(&layout.ca_cert)
        );
        let _ = writeln!(
            out,
            "  {}  CA private key (mode 0600): needed only to issue server certificates",
            abs(&layout.ca_key)
        );
    }
    let _ = writeln!(
        out,
        "Wrote a server certificate signed by it (valid until {}) for: {names}",
        until(generated.server_not_after)
    );
    let _ = writeln!(
        out,
        "  {}  certificate chain (server, then CA)",
        abs(&layout.server_cert)
    );
    let _ = writeln!(
        out,
        "  {}  server private key (mode 0600)",
        abs(&layout.server_key)
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "Next steps:");
    let _ = writeln!(out, "  1. Serve HTTPS with it:");
    let _ = writeln!(
        out,
        "       outpost serve --tls-cert {} --tls-key {}",
        abs(&layout.server_cert),
        abs(&layout.server_key)
    );
    let _ = writeln!(
        out,
        "     (or `outpost: {{tls: {{cert: ..., key: ...}}}}` in the configuration; replacing the files later is picked up without a restart)"
    );
    let _ = writeln!(out, "  2. Point containerd at outpost, trusting this CA:");
    let _ = writeln!(
        out,
        "       outpost containerd-config --out /etc/containerd/certs.d --ca {}",
        abs(&layout.ca_cert)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_every_file_the_names_and_the_next_commands() {
        let dir = tempfile::tempdir().unwrap();
        let sans = [
            San::parse("outpost.local").unwrap(),
            San::parse("10.0.0.5").unwrap(),
        ];
        let generated = certs::generate(dir.path(), &sans, 7, false).unwrap();
        let text = report(&generated);
        for file in ["ca.pem", "ca-key.pem", "server.pem", "server-key.pem"] {
            let path = dir.path().join(file);
            assert!(text.contains(&path.display().to_string()), "{file}: {text}");
        }
        assert!(text.contains("for: outpost.local, 10.0.0.5"), "{text}");
        let expiry = humantime::format_rfc3339_seconds(generated.server_not_after).to_string();
        assert!(text.contains(&expiry), "{text}");
        assert!(text.contains("--tls-cert"), "{text}");
        assert!(text.contains("--tls-key"), "{text}");
        assert!(text.contains("outpost containerd-config"), "{text}");
        assert!(text.contains("--ca "), "{text}");
        assert!(text.contains("Wrote a new CA"), "{text}");

        std::fs::remove_file(&generated.layout.server_cert).unwrap();
        std::fs::remove_file(&generated.layout.server_key).unwrap();
        let again = certs::generate(dir.path(), &sans, 7, false).unwrap();
        assert!(report(&again).contains("Reused the existing CA"));
    }
}
