//! The configuration loader (`config::load`: Palette user-data and OS-pack values in YAML, read,
//! merged key by key, resolved and checked) on any text, and the pure functions over a loaded
//! configuration: the routing table `outpost check` prints, translation of a few sources, the
//! upstream allow-list and containerd's hosts directory plan. Loading returns Ok or Err; nothing
//! panics.
//!
//! Input: YAML text. A line `#---` splits it into files (at most 4), loaded in order, so merging
//! is fuzzed too. The files live in one directory per process under `$TMPDIR`.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use config::Config;
use libfuzzer_sys::fuzz_target;
use oci::Source;

const MAX_FILES: usize = 4;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("outpost-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    // `load` reads files as UTF-8 text; anything else is a read error, not worth the cycles.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let files: Vec<PathBuf> = text
        .split("\n#---\n")
        .take(MAX_FILES)
        .enumerate()
        .map(|(i, part)| {
            let path = dir().join(format!("{i}.yaml"));
            std::fs::write(&path, part).unwrap();
            path
        })
        .collect();
    match config::load(&files) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                assert!(!warning.is_empty());
            }
            over(&loaded.config);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});

/// What `outpost check`, `serve` and `containerd` do with a loaded configuration.
fn over(config: &Config) {
    let rows = config::routing_table(config);
    let _ = config::render_text(&rows);
    let _ = config.serving_problem();

    let mut sources: Vec<Source> = ["alpine", "quay.io/kairos/core", "localhost:5000/a/b"]
        .into_iter()
        .filter_map(|name| Source::from_name(name, &config.default_registry).ok())
        .collect();
    sources.extend(config.provider.image.iter().map(|i| i.source.clone()));
    sources.extend(config.mapping_rules.iter().filter_map(|rule| {
        let name = format!("{}/x", rule.source);
        Source::from_name(&name, &config.default_registry).ok()
    }));
    for source in &sources {
        let target = config::translate(config, source);
        let _ = config.check_upstream(&target.host);
        config.is_infrastructure(source);
    }

    let registries = config::containerd::known_registries(config);
    if let Ok(settings) = config::containerd::settings(config, None, None, None, false) {
        let _ = config::containerd::plan(&registries, &settings);
    }
}
