//! The routing table printed by `outpost check`: one row per upstream outpost may talk to.
//!
//! It mirrors the translation rules of [`crate::translate`] over a source *prefix* rather than one
//! repository: mapping rules first (longest prefix at a `/` boundary), else the external registry
//! (the whole source under its prefix), else the source registry itself (`docker.io` is reached at
//! `registry-1.docker.io`) with `providerCredentials` for the provider registry.
//! Credentials are shown as `user ****`; no secret is ever part of a row.

use std::fmt::Write as _;

use serde::Serialize;

use super::model::{Config, Credentials, ExternalRegistry};
use super::values::{join, parse_pem_certificates};

/// One upstream outpost may talk to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteRow {
    /// A registry host, a mapping-rule or infrastructure-image prefix, or `*` for every other source.
    pub source: String,
    /// `https`, or `http(insecure)` for an upstream reached without TLS verification.
    pub scheme: String,
    /// `host[:port]`, or `<source host>` for the direct catch-all.
    pub host: String,
    /// Prepended to the source's remaining path on `host`; may be empty.
    pub prefix: String,
    /// `user ****`, or `anonymous`.
    pub credentials: String,
    /// Subjects of the extra trusted CAs (site CAs plus the registry's own).
    pub extra_cas: Vec<String>,
    pub insecure: bool,
    /// `stored` in the local registry, or `pass-through`.
    pub content: String,
}

fn credentials_label(credentials: Option<&Credentials>) -> String {
    match credentials {
        Some(c) if c.username.is_empty() => "(no user) ****".to_owned(),
        Some(c) => format!("{} ****", c.username),
        None => "anonymous".to_owned(),
    }
}

fn subjects(pems: &[String]) -> Vec<String> {
    pems.iter()
        .flat_map(|pem| match parse_pem_certificates(pem) {
            Ok(certs) => certs.into_iter().map(|c| c.subject).collect(),
            Err(_) => vec!["(unparsable certificate)".to_owned()],
        })
        .collect()
}

/// Registry API host of a registry name: `docker.io` is served at `registry-1.docker.io`.
fn api_host(host: &str) -> &str {
    if host == "docker.io" {
        "registry-1.docker.io"
    } else {
        host
    }
}

/// `localhost`, `127.0.0.0/8` or `[::1]`, with or without a port (treated as insecure, like
/// containerd and Docker do).
fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

struct Destination<'c> {
    host: String,
    prefix: String,
    credentials: Option<&'c Credentials>,
    certificates: &'c [String],
    insecure: bool,
}

fn via<'c>(registry: &'c ExternalRegistry, prefix: String) -> Destination<'c> {
    Destination {
        host: registry.host.clone(),
        prefix,
        credentials: registry.credentials.as_ref(),
        certificates: &registry.certificates,
        insecure: registry.insecure,
    }
}

/// Where the source prefix `source` (`host[/path]`) goes.
fn destination<'c>(config: &'c Config, source: &str) -> Destination<'c> {
    let rule = config
        .mapping_rules
        .iter()
        .filter_map(|rule| {
            let rest = source.strip_prefix(rule.source.as_str())?;
            (rest.is_empty() || rest.starts_with('/')).then_some((rule, rest))
        })
        .max_by_key(|(rule, _)| rule.source.len());
    if let Some((rule, rest)) = rule {
        let (host, path) = rule.target.split_once('/').unwrap_or((&rule.target, ""));
        let host = api_host(host);
        let prefix = join(&[path, rest]);
        return match config.registry_for_host(host) {
            Some(registry) => via(registry, prefix),
            None => Destination {
                host: host.to_owned(),
                prefix,
                credentials: None,
                certificates: &[],
                insecure: false,
            },
        };
    }
    if let Some(external) = config.external_registry() {
        return via(external, join(&[&external.prefix, source]));
    }
    let (host, path) = source.split_once('/').unwrap_or((source, ""));
    let provider = &config.provider;
    let is_provider = provider.registry.as_deref() == Some(host);
    Destination {
        host: api_host(host).to_owned(),
        prefix: path.to_owned(),
        credentials: provider.credentials.as_ref().filter(|_| is_provider),
        certificates: if is_provider {
            &provider.certificates
        } else {
            &[]
        },
        insecure: false,
    }
}

/// Does `source` (a prefix) fall under an `infrastructureImages` pattern?
fn is_infrastructure(config: &Config, source: &str) -> bool {
    config.infrastructure_images.iter().any(|pattern| {
        let base = pattern.trim_end_matches('*').trim_end_matches('/');
        source == base
            || (pattern.ends_with('*')
                && source.starts_with(base)
                && source[base.len()..].starts_with('/'))
    })
}

fn row(config: &Config, source: &str, destination: Destination<'_>) -> RouteRow {
    let insecure =
        destination.insecure || config.site.insecure_skip_verify || is_loopback(&destination.host);
    let pems: Vec<String> = config
        .site
        .ca_certs
        .iter()
        .chain(destination.certificates)
        .cloned()
        .collect();
    let stored = config.local_registry && !is_infrastructure(config, source);
    RouteRow {
        source: source.to_owned(),
        scheme: if insecure { "http(insecure)" } else { "https" }.to_owned(),
        host: destination.host,
        prefix: destination.prefix,
        credentials: credentials_label(destination.credentials),
        extra_cas: subjects(&pems),
        insecure,
        content: if stored { "stored" } else { "pass-through" }.to_owned(),
    }
}

/// One row per upstream: mapping rules, infrastructure images, `docker.io`, the default registry,
/// the provider registry, then `*` (every other source).
pub fn routing_table(config: &Config) -> Vec<RouteRow> {
    let mut sources: Vec<String> = Vec::new();
    let mut add = |s: &str| {
        if !sources.iter().any(|x| x == s) {
            sources.push(s.to_owned());
        }
    };
    for rule in &config.mapping_rules {
        add(&rule.source);
    }
    for pattern in &config.infrastructure_images {
        add(pattern.trim_end_matches('*').trim_end_matches('/'));
    }
    add("docker.io");
    add(&config.default_registry);
    if let Some(registry) = &config.provider.registry {
        add(registry);
    }
    let mut rows: Vec<RouteRow> = sources
        .iter()
        .map(|s| row(config, s, destination(config, s)))
        .collect();
    let catch_all = match config.external_registry() {
        Some(external) => via(external, join(&[&external.prefix, "<source>"])),
        None => Destination {
            host: "<source host>".to_owned(),
            prefix: String::new(),
            credentials: None,
            certificates: &[],
            insecure: false,
        },
    };
    rows.push(row(config, "*", catch_all));
    rows
}

/// The table as aligned text, with a header line.
pub fn render_text(rows: &[RouteRow]) -> String {
    let header = [
        "SOURCE",
        "DESTINATION",
        "CREDENTIALS",
        "EXTRA CAS",
        "CONTENT",
    ];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            let scheme = if r.insecure { "http" } else { "https" };
            let mut destination = format!("{scheme}://{}", r.host);
            if !r.prefix.is_empty() {
                let _ = write!(destination, "/{}", r.prefix);
            }
            if r.insecure {
                destination.push_str(" (insecure)");
            }
            let cas = if r.extra_cas.is_empty() {
                "-".to_owned()
            } else {
                format!("{}: {}", r.extra_cas.len(), r.extra_cas.join("; "))
            };
            [
                r.source.clone(),
                destination,
                r.credentials.clone(),
                cas,
                r.content.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for line in &cells {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = header.map(str::to_owned);
    for line in std::iter::once(&header).chain(&cells) {
        let mut text = String::new();
        for (i, (cell, w)) in line.iter().zip(widths).enumerate() {
            if i + 1 == line.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<w$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}
