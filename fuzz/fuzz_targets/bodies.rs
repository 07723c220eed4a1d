//! What outpost reads of an upstream's answers to `tags/list` and `referrers/<digest>`, and of
//! its error answers to anything:
//! - a 2xx `tags/list` body, as `origin::fetch_tags` parses it (`origin::parse_tag_list`), its
//!   `Link` header, of which `origin::next_query` takes the next page's query, and the page
//!   `api::tags` then makes of the tags (`paging::page` and `paging::next_link`; all through
//!   `server::fuzzing`, feature `fuzzing`);
//! - a `referrers` body is passed through unread (only its `Content-Type` is kept), so here it
//!   is only probed as a manifest would be;
//! - an error answer of any status, as `server::ApiError::upstream_answer` turns it into the
//!   client's OCI error (its JSON `errors[0].message`, its `Retry-After`), for each kind of
//!   request, then the error's body and response.
//!
//! Input, line by line: the upstream's status (default 200), one header value (sent as both
//! `Link` and `Retry-After`), then the body.
#![no_main]

use http::{header, HeaderMap, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use oci::{Target, TlsPolicy};
use server::fuzzing::{next_link, next_query, page, parse_tag_list, Kind};
use server::ApiError;

const CLIENT_NAME: &str = "quay.io/kairos/core";

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let status = parts
        .next()
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.trim().parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let value = parts.next().and_then(|v| HeaderValue::from_bytes(v).ok());
    let body = parts.next().unwrap_or_default();

    let mut headers = HeaderMap::new();
    if let Some(value) = &value {
        headers.insert(header::LINK, value.clone());
        headers.insert(header::RETRY_AFTER, value.clone());
    }

    if status.is_success() {
        tag_list(body, &headers);
        let _ = oci::manifest_media_type(None, body);
    } else {
        let target = Target {
            host: "quay.io".to_owned(),
            repository: "kairos/core".to_owned(),
            credentials: None,
            tls: TlsPolicy::default(),
        };
        for kind in [Kind::Manifest, Kind::Blob, Kind::Tags, Kind::Referrers] {
            let error = ApiError::upstream_answer(status, &headers, body, &target, kind);
            error.is_unavailable();
            let json = error.body();
            assert!(serde_json::from_slice::<serde_json::Value>(&json).is_ok());
            let _ = error.into_response(false);
        }
    }
});

/// `origin::fetch_tags` then `api::tags`, without the network.
fn tag_list(body: &[u8], headers: &HeaderMap) {
    let Ok(tags) = parse_tag_list(body) else {
        return;
    };
    if let Some(link) = headers.get(header::LINK).and_then(|v| v.to_str().ok()) {
        if let Some(query) = next_query(link) {
            assert!(!query.is_empty());
        }
    }
    // api::tags, with a page size and a `last` taken from the body itself
    let n = tags.len() as u32 / 2;
    let last = tags.first().cloned();
    let (page, more) = page(tags, Some(n), last.as_deref());
    assert!(page.len() <= n as usize);
    assert!(page.windows(2).all(|w| w[0] < w[1]), "sorted and deduplicated");
    if let Some(link) = next_link("/v2/quay.io/kairos/core/tags/list", &page, more, Some(n), Some("quay.io")) {
        assert!(HeaderValue::from_str(&link).is_ok(), "{link}");
    }
    let _ = serde_json::json!({ "name": CLIENT_NAME, "tags": page }).to_string();
}
