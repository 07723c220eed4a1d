//! Redirects: which statuses are followed, and a pure resolver of `Location` against the URL
//! that answered it. Whether credentials follow a redirect is decided in `mod.rs` (only while
//! the hop stays on the upstream host).

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{StatusCode, Uri};

/// The most hops followed for one request.
pub const MAX_HOPS: usize = 5;

/// 301, 302, 303, 307 and 308.
pub fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// Resolves a `Location` value against `base`: absolute URLs (`http`/`https` only),
/// scheme-relative (`//host/path`), absolute paths and relative paths are accepted.
pub fn resolve_location(base: &Uri, location: &str) -> Result<Uri, String> {
    let location = location.trim();
    if location.is_empty() {
        return Err("the redirect has an empty Location".to_owned());
    }
    let scheme = base.scheme().cloned().unwrap_or(Scheme::HTTPS);
    let authority = base
        .authority()
        .cloned()
        .ok_or_else(|| "the redirecting URL has no host".to_owned())?;

    if let Some(rest) = location.strip_prefix("//") {
        return build_absolute(&format!("{scheme}://{rest}"));
    }
    // Absolute when its first segment has a scheme (`https:`); a query may hold "://".
    if location
        .split(['/', '?', '#'])
        .next()
        .is_some_and(|first| first.contains(':'))
    {
        return build_absolute(location);
    }
    let path_and_query = if location.starts_with('/') {
        location.to_owned()
    } else {
        let (base_path, _) = base.path().rsplit_once('/').unwrap_or(("", ""));
        let (rel, query) = match location.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (location, None),
        };
        let mut joined = format!("{base_path}/{rel}");
        joined = normalize_dots(&joined);
        if let Some(q) = query {
            joined.push('?');
            joined.push_str(q);
        }
        joined
    };
    let pq: PathAndQuery = path_and_query
        .parse()
        .map_err(|e| format!("invalid Location {:?}: {e}", shown(location)))?;
    build(scheme, authority, pq)
}

fn build_absolute(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("invalid Location {:?}: {e}", shown(url)))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("redirect to a non-HTTP URL {:?}", shown(url))),
    }
    if uri.authority().is_none() {
        return Err(format!("redirect to {:?} without a host", shown(url)));
    }
    Ok(uri)
}

fn build(scheme: Scheme, authority: Authority, pq: PathAndQuery) -> Result<Uri, String> {
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(pq)
        .build()
        .map_err(|e| format!("invalid redirect target: {e}"))
}

/// A Location as errors show it: without its query and fragment (a signed URL's signature is a
/// credential for the blob) and without any `user:password@`.
fn shown(location: &str) -> String {
    let end = location.find(['?', '#']).unwrap_or(location.len());
    let location = &location[..end];
    match location.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            let host = authority
                .rsplit_once('@')
                .map_or(authority, |(_, host)| host);
            format!("{scheme}://{host}{path}")
        }
        None => location.to_owned(),
    }
}

/// Removes `.` and `..` segments of an absolute path.
fn normalize_dots(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for segment in path.split('/').skip(1) {
        match segment {
            "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Uri {
        "https://registry.example.com:5000/v2/a/b/blobs/sha256:abc?x=1"
            .parse()
            .unwrap()
    }

    fn resolve(loc: &str) -> String {
        resolve_location(&base(), loc).unwrap().to_string()
    }

    #[test]
    fn absolute_urls_are_taken_as_is() {
        assert_eq!(
            resolve("https://cdn.example.net/blob?sig=a%2Cb&x=2"),
            "https://cdn.example.net/blob?sig=a%2Cb&x=2"
        );
        assert_eq!(resolve("http://127.0.0.1:9/x"), "http://127.0.0.1:9/x");
    }

    #[test]
    fn scheme_relative_keeps_the_scheme() {
        assert_eq!(resolve("//cdn.example.net/p"), "https://cdn.example.net/p");
    }

    #[test]
    fn absolute_path_keeps_scheme_and_host() {
        assert_eq!(
            resolve("/storage/x?sig=1"),
            "https://registry.example.com:5000/storage/x?sig=1"
        );
    }

    #[test]
    fn relative_path_is_resolved_against_the_directory() {
        assert_eq!(
            resolve("other?y=2"),
            "https://registry.example.com:5000/v2/a/b/blobs/other?y=2"
        );
        assert_eq!(
            resolve("../../c"),
            "https://registry.example.com:5000/v2/a/c"
        );
    }

    #[test]
    fn errors_show_no_query_and_no_credentials() {
        for location in [
            "ftp://user:secret@x.example/blob?X-Amz-Signature=secret",
            "https://user:secret@/y?sig=secret",
            "https://[::1/y?sig=secret",
        ] {
            let error = resolve_location(&base(), location).unwrap_err();
            assert!(!error.contains("secret"), "{error}");
        }
    }

    #[test]
    fn bad_locations_are_errors() {
        assert!(resolve_location(&base(), "").is_err());
        assert!(resolve_location(&base(), "ftp://x.example/y").is_err());
        assert!(resolve_location(&base(), "https://").is_err());
    }

    #[test]
    fn redirect_statuses() {
        for s in [301, 302, 303, 307, 308] {
            assert!(is_redirect(StatusCode::from_u16(s).unwrap()));
        }
        for s in [200, 300, 304, 401, 404] {
            assert!(!is_redirect(StatusCode::from_u16(s).unwrap()));
        }
    }
}
