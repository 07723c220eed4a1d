//! The routing table printed by `outpost check`: one row per upstream outpost may talk to.
//!
//! Each row is [`crate::translate::translate_path`] applied to a source *prefix* rather than one
//! repository: mapping rules first (longest prefix at a `/` boundary), else the external registry
//! (the whole source under its prefix), else the source registry itself (`docker.io` is reached at
//! `registry-1.docker.io`) with `providerCredentials` for the provider registry.
//! Credentials are shown as `user ****`; no secret is ever part of a row.

use std::fmt::Write as _;

use serde::Serialize;

use super::model::Config;
use super::values::{join, parse_pem_certificates};
use oci::{Credentials, Prefix, Registry, Target};

use crate::translate::translate_path;

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
    /// `direct`, or the proxy the upstream is reached through (its password as `****`).
    pub via: String,
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

fn row(config: &Config, source: &str, target: Target) -> RouteRow {
    let insecure = target.tls.insecure;
    let stored = config.local_registry
        && !config
            .infrastructure_images
            .iter()
            .any(|pattern| pattern.matches_name(source));
    RouteRow {
        source: source.to_owned(),
        scheme: if insecure { "http(insecure)" } else { "https" }.to_owned(),
        host: target.host,
        prefix: target.repository,
        credentials: credentials_label(target.credentials.as_ref()),
        extra_cas: subjects(&target.tls.extra_cas),
        insecure,
        content: if stored { "stored" } else { "pass-through" }.to_owned(),
        via: String::new(),
    }
}

/// How `host` (`host[:port]`, or `<source host>` for the catch-all) is reached: `direct`, or
/// through which proxy. An insecure upstream is tried in HTTPS first, then in plain HTTP, which
/// may take different proxies.
fn via(config: &Config, host: &str, insecure: bool) -> String {
    let Some(proxy) = &config.proxy else {
        return "direct".to_owned();
    };
    let decide = |https: bool| -> String {
        if host.starts_with('<') {
            // Any host: the proxy of the scheme, where noProxy does not name it.
            let url = if https { &proxy.https } else { &proxy.http };
            return match url {
                None => "direct".to_owned(),
                Some(url) if proxy.no_proxy.is_empty() => url.to_string(),
                Some(url) => format!("{url} (unless noProxy names the host)"),
            };
        }
        let (name, port) = oci::split_host_port(host).unwrap_or((host.to_owned(), None));
        let port = port.unwrap_or(if https { 443 } else { 80 });
        proxy
            .proxy_for(https, &name, port)
            .map_or_else(|| "direct".to_owned(), ToString::to_string)
    };
    let https = decide(true);
    if !insecure {
        return https;
    }
    let plain = decide(false);
    if plain == https {
        https
    } else {
        format!("https: {https}; http: {plain}")
    }
}

/// One row per upstream: mapping rules, infrastructure images, `docker.io`, the default registry,
/// the provider registry, then `*` (every other source). Each row is what
/// [`translate_path`] does with that source prefix, so the table cannot drift from the proxy.
pub fn routing_table(config: &Config) -> Vec<RouteRow> {
    let mut sources: Vec<Prefix> = Vec::new();
    let mut add = |p: Prefix| {
        if !sources.contains(&p) {
            sources.push(p);
        }
    };
    let registry = |r: &Registry| Prefix {
        registry: r.clone(),
        path: None,
    };
    for rule in &config.mapping_rules {
        add(rule.source.clone());
    }
    for pattern in &config.infrastructure_images {
        add(pattern.prefix().clone());
    }
    add(registry(&Registry::docker_hub()));
    add(registry(&config.default_registry));
    if let Some(provider) = &config.provider.registry {
        add(registry(provider));
    }
    let mut rows: Vec<RouteRow> = sources
        .iter()
        .map(|p| {
            let path = p.path.as_ref().map_or("", |p| p.as_str());
            let target = translate_path(config, &p.registry, path);
            row(config, &p.to_string(), target)
        })
        .collect();
    // Every other source: through the external registry, or straight to its own host.
    let placeholder = Registry::parse("source.invalid").unwrap_or_else(|_| unreachable!("a host"));
    let catch_all = match config.external_registry() {
        Some(external) => {
            let mut target = translate_path(config, &placeholder, "");
            target.repository = join(&[&external.prefix, "<source>"]);
            target
        }
        None => Target {
            host: "<source host>".to_owned(),
            ..translate_path(config, &placeholder, "")
        },
    };
    rows.push(row(config, "*", catch_all));
    for r in &mut rows {
        r.via = via(config, &r.host, r.insecure);
    }
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
        "VIA",
    ];
    let cells: Vec<[String; 6]> = rows
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
                r.via.clone(),
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
