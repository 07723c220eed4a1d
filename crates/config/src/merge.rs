//! Merging of several files: later values win, key by key.
//!
//! Maps (sections, and `registryMappingRules`) merge recursively: a key set in a later file
//! replaces the same key of an earlier file, keys set only earlier stay. Scalars and lists
//! (`registries`, `caCerts`, `certificates`, `infrastructureImages`) are values: a later file's
//! list replaces the earlier list as a whole. A section that names where its secrets go
//! (`registryCredentials.domain`, `providerCredentials.registry`, `sharedStore.endpoint`) is
//! replaced whole by a later one that names another place.

use super::file::*;

/// Fold `later` into `self`, `later` winning key by key.
pub trait Merge {
    fn merge(&mut self, later: Self);
}

impl<T: Merge> Merge for Option<T> {
    fn merge(&mut self, later: Self) {
        match (self.as_mut(), later) {
            (Some(earlier), Some(later)) => earlier.merge(later),
            (None, Some(later)) => *self = Some(later),
            (_, None) => {}
        }
    }
}

/// Leaves: a later value replaces the earlier one.
macro_rules! leaf {
    ($($ty:ty),* $(,)?) => {$(
        impl Merge for $ty {
            fn merge(&mut self, later: Self) {
                *self = later;
            }
        }
    )*};
}

use super::values::{
    ByteSize, CaCertificates, Domain, HostRuleText, HumanDuration, ImageText, ListenAddr, MinFree,
    NoProxyText, Pattern, PemCertificates, ProxyUrlText, RegistryHost, WorkerThreads,
};
use std::path::PathBuf;

leaf!(
    bool,
    String,
    PathBuf,
    RawSecret,
    ByteSize,
    MinFree,
    HumanDuration,
    ListenAddr,
    RegistryHost,
    Domain,
    ImageText,
    PemCertificates,
    CaCertificates,
    Vec<Pattern>,
    Vec<HostRuleText>,
    Vec<RegistrySection>,
    ProxyUrlText,
    NoProxyText,
    WorkerThreads,
);

/// Sections that name where their secrets go (a registry's `domain`, the provider's
/// `registry`, the shared store's `endpoint`): when a later file names another place than the
/// earlier one named, its section replaces the earlier one whole, so that no earlier password,
/// certificate or setting is carried to a host it was not written for. Otherwise (the same
/// place, or one named only now) field by field.
macro_rules! bound_section {
    ($ty:ty, $place:ident { $($field:ident),* $(,)? }) => {
        impl Merge for $ty {
            fn merge(&mut self, later: Self) {
                if self.$place.is_some() && later.$place.is_some() && later.$place != self.$place {
                    *self = later;
                    return;
                }
                $( self.$field.merge(later.$field); )*
            }
        }
    };
}

/// Sections: merge field by field.
macro_rules! section {
    ($ty:ty { $($field:ident),* $(,)? }) => {
        impl Merge for $ty {
            fn merge(&mut self, later: Self) {
                $( self.$field.merge(later.$field); )*
            }
        }
    };
}

section!(FileConfig {
    outpost,
    stylus,
    options,
    provider_credentials
});
section!(OutpostSection {
    listen,
    data_dir,
    default_registry,
    local_registry,
    cache,
    infrastructure_images,
    tls,
    upstream,
    admin,
    auth,
    shared_store,
    worker_threads
});
bound_section!(
    SharedStoreSection,
    endpoint {
        endpoint,
        region,
        bucket,
        access_key_id,
        secret_access_key,
        secret_access_key_file,
        prefix,
        max_size,
        timeout
    }
);
section!(LocalRegistrySection { enabled });
section!(CacheSection {
    max_size,
    tag_ttl,
    fill_timeout,
    min_free
});
section!(TlsSection {
    cert,
    key,
    client_ca
});
section!(AuthSection {
    htpasswd,
    anonymous
});
section!(UpstreamSection {
    connect_timeout,
    response_timeout,
    allowed_hosts
});
section!(AdminSection { listen });
section!(StylusSection {
    registry_credentials,
    external_registries,
    site
});
bound_section!(
    RegistrySection,
    domain {
        domain,
        username,
        password,
        repository_name,
        certificates,
        insecure,
        encoded_password
    }
);
section!(ExternalRegistriesSection {
    registries,
    registry_mapping_rules
});
section!(SiteSection {
    ca_certs,
    insecure_skip_verify,
    network
});
section!(NetworkSection {
    http_proxy,
    https_proxy,
    no_proxy
});
section!(OptionsSection { system_uri });
bound_section!(
    ProviderCredentialsSection,
    registry {
        registry,
        user,
        password,
        certificates
    }
);

impl Merge for MappingRules {
    /// Key by key: a later rule for the same source replaces the earlier target in place; new
    /// sources are appended in file order.
    fn merge(&mut self, later: Self) {
        for (source, target) in later.0 {
            match self.0.iter_mut().find(|(s, _)| *s == source) {
                Some(existing) => existing.1 = target,
                None => self.0.push((source, target)),
            }
        }
    }
}

/// Merge every file in order.
pub fn merge_all<'a>(files: impl IntoIterator<Item = &'a FileConfig>) -> FileConfig {
    let mut merged = FileConfig::default();
    for file in files {
        merged.merge(file.clone());
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> FileConfig {
        super::super::file::parse(Path::new("t.yaml"), text).unwrap()
    }

    #[test]
    fn later_wins_key_by_key() {
        let a = parse(
            "outpost:\n  listen: 127.0.0.1:1\n  dataDir: /a\nstylus:\n  externalRegistries:\n    registryMappingRules:\n      a.io/x: b.io/x\n      c.io: d.io\n",
        );
        let b = parse(
            "outpost:\n  listen: 127.0.0.1:2\nstylus:\n  externalRegistries:\n    registryMappingRules:\n      c.io: e.io\n      f.io: g.io\n",
        );
        let m = merge_all([&a, &b]);
        let o = m.outpost.unwrap();
        assert_eq!(o.listen.unwrap().0.port(), 2);
        assert_eq!(o.data_dir.unwrap(), PathBuf::from("/a"));
        let rules: Vec<(String, String)> = m
            .stylus
            .unwrap()
            .external_registries
            .unwrap()
            .registry_mapping_rules
            .unwrap()
            .0
            .into_iter()
            .map(|(s, t)| (s.0.to_string(), t.0.to_string()))
            .collect();
        let expected = [("a.io/x", "b.io/x"), ("c.io", "e.io"), ("f.io", "g.io")];
        assert_eq!(
            rules,
            expected.map(|(s, t)| (s.to_owned(), t.to_owned())).to_vec()
        );
    }
}
