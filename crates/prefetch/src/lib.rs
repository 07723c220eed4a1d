//! `outpost prefetch`: pull images into the local registry before a node goes out.
//!
//! - `pull`: one manifest or blob through the same code as a client pull, in-process or through
//!   a running outpost ([`Puller`]).
//! - this file: the plan (which images, in which order), the run, progress bars and the report.
//!
//! Order: as the Palette agent does, the provider image (`options.system.uri`, unless
//! `--no-provider`) comes first, then images matching `outpost.infrastructureImages`, then the
//! rest in the order given. Images are fetched one after the other; the blobs of one image
//! `--jobs` at a time.
//!
//! Platforms: for an image index, the manifests of the `--platform`s (default linux/amd64 and
//! linux/arm64, those of them the index has) are fetched with their blobs; the index itself is
//! stored as it is, so its digest holds, and other platforms are fetched on demand later.
//!
//! In-process, every registry an image names is reachable (the operator named it; the
//! `outpost.upstream.allowedHosts` of a server guards against its clients). Through a running
//! outpost, that server's rules apply.
//!
//! `--with-referrers`: the referrers (signatures, attestations, SBOMs) of the image and of each
//! platform manifest fetched come along, with their manifests and blobs, so signatures verify
//! offline; their indexes are stored as a client's referrers request stores them.
//!
//! Blobs already in the store are not downloaded again, so a rerun after an interruption fetches
//! only what is missing. Infrastructure images are fetched and verified but not stored, as when
//! serving; the report says so.

#![forbid(unsafe_code)]

mod pull;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use config::Config;
use futures_util::stream::{self, StreamExt as _};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use oci::{
    Descriptor, Digest, ImageRef, ImageRefError, ManifestContent, Platform, Reference, ServerUrl,
    ServerUrlError, TlsPolicy,
};

pub use pull::{BlobFrom, Puller};

/// What to prefetch and how.
#[derive(Clone, Debug)]
pub struct Options {
    /// Image references as given on the command line.
    pub images: Vec<String>,
    /// A file with one reference per line (`#` comments, blank lines ignored).
    pub list: Option<PathBuf>,
    /// Platforms of an index to fetch; empty means [`Platform::defaults`].
    pub platforms: Vec<Platform>,
    /// Blobs of one image downloaded at the same time (at least 1).
    pub jobs: usize,
    /// A running outpost to pull through (`http://host:port` or `https://…`).
    pub server: Option<String>,
    /// A PEM CA file trusted for an `https://` server (on top of the system roots).
    pub server_ca: Option<PathBuf>,
    /// Prefetch the provider image (`options.system.uri`) first.
    pub include_provider: bool,
    /// Draw progress bars on stdout (only when it is a terminal).
    pub progress: bool,
    /// Also fetch the referrers (signatures, attestations, SBOMs) of every image and of the
    /// platform manifests fetched, with their manifests and blobs.
    pub with_referrers: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            images: Vec::new(),
            list: None,
            platforms: Vec::new(),
            jobs: 4,
            server: None,
            server_ca: None,
            include_provider: true,
            progress: false,
            with_referrers: false,
        }
    }
}

/// Why prefetch could not start. (An image that fails is reported in [`Report`] instead.)
#[derive(Debug, thiserror::Error)]
pub enum PrefetchError {
    #[error("nothing to prefetch: give image references as arguments, a --list FILE, or set options.system.uri")]
    NoImages,
    #[error("cannot read the image list {path}: {source}")]
    List {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {source}")]
    ListLine {
        path: PathBuf,
        line: usize,
        #[source]
        source: ImageRefError,
    },
    #[error(transparent)]
    Reference(#[from] ImageRefError),
    #[error(
        "the data dir {dir} is in use by a running outpost; prefetch through it instead: \
         outpost prefetch --server {server} ... (it stores what it fetches), or stop it first"
    )]
    Locked { dir: PathBuf, server: String },
    #[error("outpost.localRegistry.enabled is false: there is no store to prefetch into; enable the local registry")]
    LocalRegistryDisabled,
    #[error("--server {url:?} is not a server URL ({reason}); write it as http://HOST:PORT or https://HOST:PORT")]
    ServerUrl { url: String, reason: ServerUrlError },
    #[error("--server-ca {path}: {detail}; give a PEM file with the CA that signed outpost's certificate")]
    ServerCa { path: PathBuf, detail: String },
    #[error("cannot start: {0}")]
    Start(String),
}

/// Why an image is in the plan, which decides its place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// `options.system.uri`.
    Provider,
    /// Matches `outpost.infrastructureImages`.
    Infrastructure,
    /// Everything else, in the order given.
    Other,
}

/// One image of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub image: ImageRef,
    pub priority: Priority,
}

/// The references in a list file: one per line, `#` starts a comment.
pub fn read_list(path: &Path) -> Result<Vec<(usize, String)>, PrefetchError> {
    let text = std::fs::read_to_string(path).map_err(|source| PrefetchError::List {
        path: path.to_owned(),
        source,
    })?;
    Ok(text
        .lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let line = line.split('#').next().unwrap_or("").trim();
            (!line.is_empty()).then(|| (i + 1, line.to_owned()))
        })
        .collect())
}

/// The images to prefetch, in order: provider first, then infrastructure images, then the rest
/// in the order given; each once.
pub fn plan(config: &Config, options: &Options) -> Result<Vec<Planned>, PrefetchError> {
    let default = &config.default_registry;
    let mut images = Vec::new();
    if options.include_provider {
        if let Some(image) = &config.provider.image {
            images.push((Priority::Provider, image.clone()));
        }
    }
    if let Some(path) = &options.list {
        for (line, name) in read_list(path)? {
            let image =
                ImageRef::parse(&name, default).map_err(|source| PrefetchError::ListLine {
                    path: path.clone(),
                    line,
                    source,
                })?;
            images.push((Priority::Other, image));
        }
    }
    for name in &options.images {
        images.push((Priority::Other, ImageRef::parse(name, default)?));
    }
    let infrastructure = |image: &ImageRef| config.is_infrastructure(&image.source);
    let mut seen = HashSet::new();
    let mut planned: Vec<Planned> = images
        .into_iter()
        .filter(|(_, image)| seen.insert(image.clone()))
        .map(|(priority, image)| Planned {
            priority: match priority {
                Priority::Other if infrastructure(&image) => Priority::Infrastructure,
                p => p,
            },
            image,
        })
        .collect();
    // Stable: the order given is kept within each priority.
    planned.sort_by_key(|p| p.priority);
    if planned.is_empty() {
        return Err(PrefetchError::NoImages);
    }
    Ok(planned)
}

/// What happened to one image.
#[derive(Clone, Debug, Default)]
pub struct ImageReport {
    /// The canonical reference (`quay.io/kairos/core:v1`).
    pub image: String,
    /// The digest the reference resolved to (the index, for a multi-platform image).
    pub digest: Option<Digest>,
    /// The platforms fetched from an index (empty for a single-platform image).
    pub platforms: Vec<String>,
    /// Layers over every fetched manifest.
    pub layers: usize,
    /// Bytes of the config and layer blobs.
    pub bytes: u64,
    /// Of those, downloaded from the upstream.
    pub from_upstream: u64,
    /// Of those, already in the store (not downloaded).
    pub from_store: u64,
    /// Of those, transferred from a running server (`--server`).
    pub via_server: u64,
    /// Whether the content is kept in the store (false for infrastructure images).
    pub stored: bool,
    /// Referrers fetched (`--with-referrers`), over the image and its platform manifests.
    pub referrers: usize,
    /// Why the image was not (completely) fetched.
    pub error: Option<String>,
}

/// The outcome of a prefetch run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub images: Vec<ImageReport>,
}

impl Report {
    /// Whether every image was fetched.
    pub fn success(&self) -> bool {
        self.images.iter().all(|i| i.error.is_none())
    }

    /// The table printed at the end: image, digest, layers, bytes, where the bytes came from.
    pub fn table(&self) -> String {
        let rows: Vec<[String; 6]> = self
            .images
            .iter()
            .map(|i| {
                let digest = i
                    .digest
                    .as_ref()
                    .map(|d| {
                        let s = d.to_string();
                        s[..s.len().min(19)].to_owned()
                    })
                    .unwrap_or_else(|| "-".to_owned());
                let mut note = match (&i.error, i.stored) {
                    (Some(_), _) => "FAILED".to_owned(),
                    (None, false) => "not stored (infrastructure image)".to_owned(),
                    (None, true) if i.via_server > 0 => {
                        format!("{} via server", human(i.via_server))
                    }
                    (None, true) => format!(
                        "{} upstream, {} store",
                        human(i.from_upstream),
                        human(i.from_store)
                    ),
                };
                if i.referrers > 0 && i.error.is_none() {
                    let _ = write!(note, ", {} referrers", i.referrers);
                }
                [
                    i.image.clone(),
                    digest,
                    i.layers.to_string(),
                    human(i.bytes),
                    if i.platforms.is_empty() {
                        "-".to_owned()
                    } else {
                        i.platforms.join(",")
                    },
                    note,
                ]
            })
            .collect();
        let header = ["IMAGE", "DIGEST", "LAYERS", "BYTES", "PLATFORMS", "SOURCE"];
        let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &[&str]| {
            let text: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            let _ = writeln!(out, "{}", text.join("  ").trim_end());
        };
        line(&header);
        for row in &rows {
            line(&row.iter().map(String::as_str).collect::<Vec<_>>());
        }
        out
    }
}

/// `1.5 MiB`-style sizes.
fn human(bytes: u64) -> String {
    bytesize::ByteSize(bytes).display().iec().to_string()
}

/// Builds the puller: in-process on the data dir, or through `options.server`.
async fn puller(mut config: Config, options: &Options) -> Result<Puller, PrefetchError> {
    let Some(server) = &options.server else {
        if !config.local_registry {
            return Err(PrefetchError::LocalRegistryDisabled);
        }
        let dir = config.data_dir.clone();
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let server_url = format!("{scheme}://{}", config.listen);
        // The operator named these images: their registries are reachable, whatever
        // `upstream.allowedHosts` keeps clients of a server from naming.
        config.allowed_hosts = Some(vec![oci::HostRule::Any]);
        return match server::App::open(config).await {
            Ok(app) => Ok(Puller::Local(Arc::new(app))),
            Err(server::AppError::Store(storage::StoreError::Locked { .. })) => {
                Err(PrefetchError::Locked {
                    dir,
                    server: server_url,
                })
            }
            Err(e) => Err(PrefetchError::Start(e.to_string())),
        };
    };
    let url = ServerUrl::parse(server).map_err(|reason| PrefetchError::ServerUrl {
        url: server.clone(),
        reason,
    })?;
    let (host, https) = (url.authority, url.https);
    let mut tls = TlsPolicy {
        insecure: !https,
        extra_cas: Vec::new(),
    };
    if let Some(path) = &options.server_ca {
        let pem = std::fs::read_to_string(path).map_err(|e| PrefetchError::ServerCa {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        tls.extra_cas.push(pem);
    }
    // Through the server: no store here, the server keeps what it fetches.
    config.local_registry = false;
    let app = server::App::open(config)
        .await
        .map_err(|e| PrefetchError::Start(e.to_string()))?;
    Ok(Puller::Server {
        app: Arc::new(app),
        server: pull::RunningServer { host, tls },
    })
}

/// Progress bars: one for the total and one per image, drawn only on a terminal.
struct Progress {
    multi: MultiProgress,
    total: ProgressBar,
}

impl Progress {
    fn new(enabled: bool) -> Progress {
        let target = if enabled && std::io::stdout().is_terminal() {
            ProgressDrawTarget::stdout()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let total = multi.add(ProgressBar::new(0));
        total.set_style(style("total"));
        total.set_prefix("total");
        total.enable_steady_tick(Duration::from_millis(250));
        Progress { multi, total }
    }

    fn image(&self, name: &str) -> ProgressBar {
        let bar = self.multi.insert_before(&self.total, ProgressBar::new(0));
        bar.set_style(style(name));
        bar.set_prefix(name.to_owned());
        bar
    }
}

fn style(_name: &str) -> ProgressStyle {
    // The template is a constant; a template error would only lose the bars' layout.
    ProgressStyle::with_template(
        "{prefix:40!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

/// Prefetches the planned images. Fails only when it cannot start; per-image failures are in
/// the report ([`Report::success`]).
pub async fn prefetch(config: Config, options: &Options) -> Result<Report, PrefetchError> {
    let planned = plan(&config, options)?;
    let platforms = if options.platforms.is_empty() {
        Platform::defaults()
    } else {
        options.platforms.clone()
    };
    let puller = puller(config, options).await?;
    let progress = Progress::new(options.progress);
    let mut report = Report::default();
    for planned in &planned {
        let bar = progress.image(&planned.image.to_string());
        let image = fetch_image(
            &puller,
            &planned.image,
            &platforms,
            options,
            &bar,
            &progress.total,
        )
        .await;
        match &image.error {
            None => bar.finish_with_message("done"),
            Some(_) => bar.abandon_with_message("FAILED"),
        }
        report.images.push(image);
    }
    progress.total.finish();
    release(puller).await;
    Ok(report)
}

/// Drops the in-process app and waits until its store has let go of the data dir, so a server
/// started right after can open it.
async fn release(puller: Puller) {
    let dir = match &puller {
        Puller::Local(app) => app.cache.as_ref().map(|_| app.config.data_dir.clone()),
        Puller::Server { .. } => None,
    };
    drop(puller);
    let Some(dir) = dir else { return };
    for _ in 0..100 {
        let probe = dir.clone();
        let opened = tokio::task::spawn_blocking(move || storage::Store::open(&probe)).await;
        match opened {
            Ok(Err(storage::StoreError::Locked { .. })) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => return,
        }
    }
}

/// Fetches one image: its manifest, the manifests of the wanted platforms, and their blobs.
async fn fetch_image(
    puller: &Puller,
    image: &ImageRef,
    platforms: &[Platform],
    options: &Options,
    bar: &ProgressBar,
    total: &ProgressBar,
) -> ImageReport {
    let jobs = options.jobs.max(1);
    let mut report = ImageReport {
        image: image.to_string(),
        stored: puller.stores(&image.source),
        ..ImageReport::default()
    };
    let (mut blobs, subjects) = match resolve(puller, image, platforms, &mut report).await {
        Ok(resolved) => resolved,
        Err(e) => {
            report.error = Some(e);
            return report;
        }
    };
    if options.with_referrers {
        match referrers(puller, image, &subjects, &mut report).await {
            Ok(more) => {
                let known: HashSet<Digest> = blobs.iter().map(|b| b.digest.clone()).collect();
                blobs.extend(more.into_iter().filter(|b| !known.contains(&b.digest)));
            }
            Err(e) => {
                report.error = Some(e);
                return report;
            }
        }
    }
    report.bytes = blobs.iter().map(|b| b.size).sum();
    bar.set_length(report.bytes);
    total.inc_length(report.bytes);
    let on_bytes = |n: u64| {
        bar.inc(n);
        total.inc(n);
    };
    let results: Vec<(u64, Result<BlobFrom, String>)> = stream::iter(blobs.iter())
        .map(|blob| async {
            let from = puller
                .blob(&image.source, blob, &on_bytes)
                .await
                .map_err(|e| e.message);
            (blob.size, from)
        })
        .buffer_unordered(jobs)
        .collect()
        .await;
    let mut errors = Vec::new();
    for (size, from) in results {
        match from {
            Ok(BlobFrom::Upstream) => report.from_upstream += size,
            Ok(BlobFrom::Store) => report.from_store += size,
            Ok(BlobFrom::Server) => report.via_server += size,
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        report.error = Some(errors.join("; "));
    }
    report
}

/// The blobs (configs and layers, each once) of `image` for `platforms`, and the manifests
/// fetched (the image's, then its platforms'); fills in the digest, platforms and layer count
/// of `report`.
async fn resolve(
    puller: &Puller,
    image: &ImageRef,
    platforms: &[Platform],
    report: &mut ImageReport,
) -> Result<(Vec<Descriptor>, Vec<Digest>), String> {
    let top = puller
        .manifest(&image.source, &image.reference)
        .await
        .map_err(|e| e.message)?;
    report.digest = Some(top.digest.clone());
    let mut subjects = vec![top.digest.clone()];
    let content = ManifestContent::parse(&top.digest, top.media_type.as_str(), &top.bytes)
        .map_err(|e| e.to_string())?;
    let manifests = match content {
        ManifestContent::Image { config, layers } => vec![(config, layers)],
        ManifestContent::Index { manifests } => {
            let chosen: Vec<&Descriptor> = manifests
                .iter()
                .filter(|m| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| platforms.iter().any(|want| want.matches(p)))
                })
                .collect();
            if chosen.is_empty() {
                let available: Vec<String> = manifests
                    .iter()
                    .filter_map(|m| m.platform.as_ref().map(Platform::to_string))
                    .collect();
                let wanted: Vec<String> = platforms.iter().map(Platform::to_string).collect();
                return Err(format!(
                    "{image} has no manifest for {}; it has {}; choose with --platform",
                    wanted.join(", "),
                    available.join(", ")
                ));
            }
            let mut children = Vec::new();
            for child in chosen {
                let reference = Reference::Digest(child.digest.clone());
                let manifest = puller
                    .manifest(&image.source, &reference)
                    .await
                    .map_err(|e| e.message)?;
                match ManifestContent::parse(&manifest.digest, manifest.media_type.as_str(), &manifest.bytes)
                    .map_err(|e| e.to_string())?
                {
                    ManifestContent::Image { config, layers } => {
                        if let Some(p) = &child.platform {
                            report.platforms.push(p.to_string());
                        }
                        subjects.push(manifest.digest.clone());
                        children.push((config, layers));
                    }
                    ManifestContent::Index { .. } => {
                        return Err(format!(
                            "{image}: the index entry {} is itself an index; nested indexes are not prefetched",
                            child.digest
                        ))
                    }
                }
            }
            children
        }
    };
    let mut seen = HashSet::new();
    let mut blobs = Vec::new();
    for (config, layers) in manifests {
        report.layers += layers.len();
        for blob in std::iter::once(config).chain(layers) {
            if seen.insert(blob.digest.clone()) {
                blobs.push(blob);
            }
        }
    }
    Ok((blobs, subjects))
}

/// The referrers of `subjects` (each fetched, so stored, as a client's referrers request
/// would), their manifests, and the blobs those name; counted in `report.referrers`.
async fn referrers(
    puller: &Puller,
    image: &ImageRef,
    subjects: &[Digest],
    report: &mut ImageReport,
) -> Result<Vec<Descriptor>, String> {
    let source = &image.source;
    let mut blobs = Vec::new();
    for subject in subjects {
        let descriptors = puller
            .referrers(source, subject)
            .await
            .map_err(|e| format!("the referrers of {subject}: {}", e.message))?;
        for descriptor in descriptors {
            let reference = Reference::Digest(descriptor.digest.clone());
            let manifest = puller
                .manifest(source, &reference)
                .await
                .map_err(|e| format!("referrer {}: {}", descriptor.digest, e.message))?;
            let content = ManifestContent::parse(
                &manifest.digest,
                manifest.media_type.as_str(),
                &manifest.bytes,
            )
            .map_err(|e| format!("referrer {}: {e}", descriptor.digest))?;
            // An artifact is an image manifest (a config, often empty, and its layers); an
            // index among referrers (rare) is kept as it is, without its children.
            if let ManifestContent::Image { config, layers } = content {
                blobs.push(config);
                blobs.extend(layers);
            }
            report.referrers += 1;
        }
    }
    Ok(blobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(planned: &[Planned]) -> Vec<String> {
        planned.iter().map(|p| p.image.to_string()).collect()
    }

    #[test]
    fn provider_first_then_infrastructure_then_the_rest() {
        let mut config = Config::default();
        config.provider.image =
            Some(ImageRef::parse("quay.io/kairos/core:v1", &config.default_registry).unwrap());
        config.infrastructure_images = vec![
            oci::RepoPattern::parse("quay.io/kairos/core").unwrap(),
            oci::RepoPattern::parse("registry.k8s.io/*").unwrap(),
        ];
        let options = Options {
            images: vec![
                "alpine:3".to_owned(),
                "registry.k8s.io/pause:3.9".to_owned(),
                "quay.io/kairos/core:v1".to_owned(),
                "docker.io/library/alpine:3".to_owned(),
                "busybox".to_owned(),
            ],
            ..Options::default()
        };
        let planned = plan(&config, &options).unwrap();
        assert_eq!(
            names(&planned),
            [
                "quay.io/kairos/core:v1",
                "registry.k8s.io/pause:3.9",
                "docker.io/library/alpine:3",
                "docker.io/library/busybox:latest",
            ]
        );
        assert_eq!(planned[1].priority, Priority::Infrastructure);

        let without = Options {
            include_provider: false,
            ..options
        };
        assert_eq!(plan(&config, &without).unwrap().len(), 4);
    }

    #[test]
    fn list_files_allow_comments_and_name_the_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images.txt");
        std::fs::write(&path, "# images\nalpine:3  # the base\n\n  busybox\n").unwrap();
        let options = Options {
            list: Some(path.clone()),
            ..Options::default()
        };
        assert_eq!(
            names(&plan(&Config::default(), &options).unwrap()),
            [
                "docker.io/library/alpine:3",
                "docker.io/library/busybox:latest"
            ]
        );
        std::fs::write(&path, "alpine\nNot/Valid\n").unwrap();
        let error = plan(&Config::default(), &options).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("{}:2: ", path.display())),
            "{error}"
        );
        assert!(matches!(
            plan(&Config::default(), &Options::default()),
            Err(PrefetchError::NoImages)
        ));
    }

    #[test]
    fn table_says_where_bytes_came_from() {
        let report = Report {
            images: vec![
                ImageReport {
                    image: "docker.io/library/alpine:3".to_owned(),
                    layers: 2,
                    bytes: 3 << 20,
                    from_upstream: 1 << 20,
                    from_store: 2 << 20,
                    stored: true,
                    ..ImageReport::default()
                },
                ImageReport {
                    image: "quay.io/kairos/core:v1".to_owned(),
                    stored: false,
                    ..ImageReport::default()
                },
            ],
        };
        let table = report.table();
        assert!(table.contains("1.0 MiB upstream, 2.0 MiB store"), "{table}");
        assert!(
            table.contains("not stored (infrastructure image)"),
            "{table}"
        );
        assert!(report.success());
    }
}
