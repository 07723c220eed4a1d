//! The name grammar and the other small parsers of `oci`, on every string: registry hosts,
//! repositories, tags, references, digests, `Source::from_name`, `ImageRef::parse`, prefixes,
//! repository patterns, host rules (`upstream.allowedHosts`), server URLs, media types and
//! platforms. None may panic, and what parses is canonical: it prints as something that parses
//! back to the same value.
//!
//! Input: the whole text is given to every parser. When it holds a newline, the text before it
//! is also read as a rule (host rule, pattern, prefix, registry) and the text after it as what
//! the rule is matched against.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci::{
    Digest, HostRule, ImageRef, MediaType, Platform, Prefix, Reference, Registry, RepoPattern,
    Repository, ServerUrl, Source, Tag,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let hub = Registry::docker_hub();
    every_parser(&text, &hub);
    if let Some((rule, subject)) = text.split_once('\n') {
        every_parser(rule, &hub);
        every_parser(subject, &hub);
        pair(rule, subject, &hub);
    }
});

fn every_parser(s: &str, hub: &Registry) {
    oci::is_loopback(s);
    oci::looks_like_host(s);

    if let Ok(registry) = Registry::parse(s) {
        assert_eq!(
            Registry::parse(registry.as_str()),
            Ok(registry.clone()),
            "{s:?}"
        );
        assert_eq!(registry.to_string(), registry.as_str());
        registry.api_host();
        registry.is_docker_hub();
    }
    if let Ok(repository) = Repository::parse(s) {
        assert_eq!(
            Repository::parse(repository.as_str()),
            Ok(repository.clone())
        );
        assert!(
            repository.as_str().len() <= oci::MAX_REPOSITORY_LEN,
            "{s:?}"
        );
    }
    if let Ok(tag) = Tag::parse(s) {
        assert_eq!(Tag::parse(tag.as_str()), Ok(tag.clone()));
    }
    if let Ok(reference) = Reference::parse(s) {
        assert_eq!(Reference::parse(&reference.to_string()), Ok(reference));
    }
    if let Ok(digest) = s.parse::<Digest>() {
        assert_eq!(digest.to_string().parse::<Digest>().as_ref(), Ok(&digest));
        assert_eq!(digest.to_string(), s);
        let hex_len = match digest.algorithm() {
            oci::Algorithm::Sha256 => 64,
            oci::Algorithm::Sha512 => 128,
        };
        assert_eq!(digest.hex().len(), hex_len);
    }
    if let Ok(source) = Source::from_name(s, hub) {
        let printed = source.to_string();
        assert_eq!(Source::from_name(&printed, hub), Ok(source), "{s:?}");
    }
    if let Ok(image) = ImageRef::parse(s, hub) {
        let printed = image.to_string();
        assert_eq!(ImageRef::parse(&printed, hub).as_ref(), Ok(&image), "{s:?}");
        image.repository_key();
    }
    if let Ok(prefix) = Prefix::parse(s) {
        let printed = prefix.to_string();
        assert_eq!(Prefix::parse(&printed).as_ref(), Ok(&prefix), "{s:?}");
        assert_eq!(prefix.strip(&printed), Some(""), "{s:?}");
    }
    if let Ok(pattern) = RepoPattern::parse(s) {
        let printed = pattern.to_string();
        assert_eq!(RepoPattern::parse(&printed).as_ref(), Ok(&pattern), "{s:?}");
        assert!(pattern.matches_name(&pattern.prefix().to_string()), "{s:?}");
    }
    if let Ok(rule) = s.parse::<HostRule>() {
        let printed = rule.to_string();
        assert_eq!(printed.parse::<HostRule>().as_ref(), Ok(&rule), "{s:?}");
        rule.matches(s);
    }
    if let Ok(url) = ServerUrl::parse(s) {
        let printed = url.to_string();
        assert_eq!(ServerUrl::parse(&printed).as_ref(), Ok(&url), "{s:?}");
    }
    if let Ok(media_type) = MediaType::parse(s) {
        assert_eq!(media_type.as_str(), s);
        // The reason the type exists: it is always a valid header value.
        assert!(
            http::HeaderValue::from_str(media_type.as_str()).is_ok(),
            "media type {s:?} is not a valid header value"
        );
        media_type.essence();
        media_type.is_index();
    }
    if let Ok(platform) = Platform::parse(s) {
        assert_eq!(
            Platform::parse(&platform.to_string()).as_ref(),
            Ok(&platform)
        );
        for default in Platform::defaults() {
            platform.matches(&default);
            default.matches(&platform);
        }
    }
}

/// `rule` as a rule, `subject` as what it is matched against.
fn pair(rule: &str, subject: &str, hub: &Registry) {
    let source = Source::from_name(subject, hub).ok();
    if let Ok(rule) = rule.parse::<HostRule>() {
        rule.matches(subject);
    }
    if let Ok(pattern) = RepoPattern::parse(rule) {
        pattern.matches_name(subject);
        if let Some(source) = &source {
            pattern.matches(source);
        }
    }
    if let Ok(prefix) = Prefix::parse(rule) {
        if let Some(rest) = prefix.strip(subject) {
            assert!(subject.ends_with(rest));
        }
    }
    if let Ok(registry) = Registry::parse(rule) {
        // A name printed with its registry reads back the same when that registry looks like a
        // host (else its first component is taken for part of the repository, as Docker does).
        let host_like = oci::looks_like_host(registry.as_str());
        if let Some(source) = Source::from_name(subject, &registry)
            .ok()
            .filter(|_| host_like)
        {
            let printed = source.to_string();
            assert_eq!(Source::from_name(&printed, &registry).as_ref(), Ok(&source));
        }
        let _ = ImageRef::parse(subject, &registry);
    }
}
