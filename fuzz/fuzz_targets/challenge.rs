//! What the upstream client reads of upstream answers before any body: the `WWW-Authenticate`
//! parser (`upstream::parse_www_authenticate`), the token endpoint's JSON answer
//! (`token::parse_token_response`, through `upstream::fuzzing`, feature `fuzzing`, then timed
//! with `Token::new` as `fetch_token` does), the `Location` of a redirect (`upstream::resolve_location`) and where stored credentials may go
//! (`upstream::may_send_credentials`, with the realm of a parsed challenge). None may panic; a
//! token accepted is not empty and is usable for a while.
//!
//! Input: the same bytes go to every parser (a challenge, a token answer or a `Location`).
#![no_main]

use std::sync::OnceLock;

use http::Uri;
use libfuzzer_sys::fuzz_target;
use upstream::Challenge;

fn base() -> &'static Uri {
    static BASE: OnceLock<Uri> = OnceLock::new();
    BASE.get_or_init(|| {
        "https://quay.io/v2/kairos/core/manifests/v1"
            .parse()
            .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for challenge in upstream::parse_www_authenticate(text) {
            if let Challenge::Bearer { realm, .. } = challenge {
                let realm_host = realm
                    .parse::<Uri>()
                    .ok()
                    .and_then(|u| u.authority().map(|a| a.to_string()));
                if let Some(realm_host) = realm_host {
                    upstream::may_send_credentials("quay.io", &realm_host);
                }
            }
        }
        if let Ok(uri) = upstream::resolve_location(base(), text) {
            let _ = uri.to_string();
        }
    }

    // What `Upstream::fetch_token` does with the answer: parse it, then time the token.
    if let Ok((token, lifetime)) = upstream::fuzzing::parse_token_response(data) {
        assert!(!token.expose().is_empty());
        assert!(!lifetime.is_zero());
        let now = tokio::time::Instant::now();
        let timed = upstream::fuzzing::Token::new(token, lifetime, now);
        assert!(timed.use_until > now);
    }
});
