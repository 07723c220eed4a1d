//! The registry server's request router (`route::route`: method, path and query to an operation
//! on a source repository) and its `Range` header resolution (`response::parse_range`), both
//! reached through `server::fuzzing` (feature `fuzzing`). Neither may panic; a routed source
//! prints as a name that reads back to it; a resolved range lies inside the blob.
//!
//! Input, line by line: `METHOD /path?query` (as a request line), the `Range` header value, the
//! blob size in decimal (default 1000).
#![no_main]

use http::{HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use oci::{Registry, Source};
use server::fuzzing::{parse_range, route, ByteRange};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(3, '\n');
    let request = lines.next().unwrap_or_default();
    let range = lines.next();
    let size = lines
        .next()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1000);

    let (method, target) = request.split_once(' ').unwrap_or(("GET", request));
    let method = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    for default in [Registry::docker_hub(), Registry::parse("quay.io").unwrap()] {
        match route(&method, path, query, &default) {
            Ok(routed) => {
                assert_eq!(routed.head, method == Method::HEAD);
                // A source prints as a name that routes back to it (when its registry looks
                // like a host: `?ns=quay` names a registry `quay` that a path cannot).
                let host_like = |s: &&Source| oci::looks_like_host(s.registry.as_str());
                if let Some(source) = routed.operation.source().filter(host_like) {
                    let printed = source.to_string();
                    assert_eq!(
                        Source::from_name(&printed, &default).as_ref(),
                        Ok(source),
                        "{request:?}"
                    );
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }

    if let Some(value) = range.and_then(|r| HeaderValue::from_str(r).ok()) {
        match parse_range(Some(&value), size) {
            ByteRange::Part(start, end) => {
                assert!(
                    start < end && end <= size,
                    "{value:?} of {size}: {start}..{end}"
                );
            }
            ByteRange::Full | ByteRange::Unsatisfiable => {}
        }
    }
});
