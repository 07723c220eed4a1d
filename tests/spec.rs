//! The read API exactly as the distribution spec (v1.1) says, whatever the upstream does:
//! status, error code, body and `Link` header of each case, as table tests.

use http::StatusCode;
use outpost_tests::fake::FakeRegistry;
use outpost_tests::outpost::{external_config, Client, Outpost, Reply};

const REPO: &str = "quay.io/app";

async fn outpost_for(fake: &FakeRegistry) -> Outpost {
    Outpost::start(external_config(&fake.host(), "p", None)).await
}

async fn get(outpost: &Outpost, path: &str) -> Reply {
    Client::new().get(&outpost.url(path)).await
}

#[tokio::test]
async fn a_tag_that_cannot_exist_is_an_unknown_manifest_and_a_bad_digest_is_a_bad_request() {
    let fake = FakeRegistry::start().await;
    fake.push_seeded("p/quay.io/app", Some("v1"), 1, &[10]);
    let outpost = outpost_for(&fake).await;
    let client = Client::new();
    // (reference, status, code)
    let cases = [
        (
            "-starts-with-a-dash",
            StatusCode::NOT_FOUND,
            Some("MANIFEST_UNKNOWN"),
        ),
        (".dot", StatusCode::NOT_FOUND, Some("MANIFEST_UNKNOWN")),
        (
            &*"x".repeat(129),
            StatusCode::NOT_FOUND,
            Some("MANIFEST_UNKNOWN"),
        ),
        (
            "sha256:abc",
            StatusCode::BAD_REQUEST,
            Some("DIGEST_INVALID"),
        ),
        ("v2", StatusCode::NOT_FOUND, Some("MANIFEST_UNKNOWN")),
        ("v1", StatusCode::OK, None),
    ];
    for (reference, status, code) in cases {
        let path = format!("/v2/{REPO}/manifests/{reference}");
        let reply = get(&outpost, &path).await;
        assert_eq!(reply.status, status, "GET {path}: {:?}", reply.body);
        if let Some(code) = code {
            assert_eq!(reply.error_code(), code, "GET {path}");
        }
        let head = client.head(&outpost.url(&path)).await;
        assert_eq!(head.status, status, "HEAD {path}");
        assert!(head.body.is_empty(), "HEAD {path} has a body");
    }
    // The invalid tags were never asked upstream.
    assert!(fake
        .requests()
        .iter()
        .all(|r| !r.path.contains("dash") && !r.path.contains(".dot")));
}

/// Follows `Link` from `first` to the end: each page's tags and the `Link` it carried.
async fn pages(outpost: &Outpost, first: &str) -> Vec<(Vec<String>, Option<String>)> {
    let mut pages = Vec::new();
    let mut next = Some(first.to_owned());
    while let Some(path) = next.take() {
        let reply = get(outpost, &path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {:?}", reply.body);
        let json = reply.json();
        assert_eq!(json["name"], REPO, "{json}");
        let tags: Vec<String> = json["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect();
        let link = reply.header("link").map(str::to_owned);
        if let Some(link) = &link {
            let url = link
                .strip_prefix('<')
                .and_then(|l| l.split_once(">; rel=\"next\""))
                .map(|(url, _)| url.to_owned())
                .unwrap_or_else(|| panic!("not a next link: {link}"));
            next = Some(url);
        }
        pages.push((tags, link));
        assert!(pages.len() < 20, "endless pagination");
    }
    pages
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn tags_are_sorted_and_paged_by_outpost_behind_an_upstream_that_does_neither() {
    let fake = FakeRegistry::start().await;
    fake.push_seeded("p/quay.io/app", Some("v1"), 1, &[10]);
    // As Distribution 2.8 answers: every tag, unsorted, whatever `n` says.
    fake.tags_body(Some(
        r#"{"name":"p/quay.io/app","tags":["v3","v1","latest","v2","v10","v1"]}"#,
    ));
    let outpost = outpost_for(&fake).await;

    let all = get(&outpost, &format!("/v2/{REPO}/tags/list")).await;
    assert_eq!(
        all.json()["tags"],
        serde_json::json!(["latest", "v1", "v10", "v2", "v3"])
    );
    assert_eq!(all.header("link"), None);

    let got = pages(&outpost, &format!("/v2/{REPO}/tags/list?n=2")).await;
    let expected = [
        (
            strings(&["latest", "v1"]),
            Some(format!("</v2/{REPO}/tags/list?n=2&last=v1>; rel=\"next\"")),
        ),
        (
            strings(&["v10", "v2"]),
            Some(format!("</v2/{REPO}/tags/list?n=2&last=v2>; rel=\"next\"")),
        ),
        (strings(&["v3"]), None),
    ];
    assert_eq!(got, expected);

    // `last` alone; `n=0`; `last` past the end.
    let after = get(&outpost, &format!("/v2/{REPO}/tags/list?last=v10")).await;
    assert_eq!(after.json()["tags"], serde_json::json!(["v2", "v3"]));
    let none = get(&outpost, &format!("/v2/{REPO}/tags/list?n=0")).await;
    assert_eq!(none.json()["tags"], serde_json::json!([]));
    assert_eq!(none.header("link"), None);
    let past = get(&outpost, &format!("/v2/{REPO}/tags/list?last=zzz")).await;
    assert_eq!(past.json()["tags"], serde_json::json!([]));
}

#[tokio::test]
async fn an_upstream_that_pages_by_default_is_read_to_the_end() {
    let fake = FakeRegistry::start().await;
    for tag in ["e", "d", "c", "b", "a"] {
        fake.push_seeded("p/quay.io/app", Some(tag), 1, &[10]);
    }
    fake.tag_page_size(Some(2));
    let outpost = outpost_for(&fake).await;
    let reply = get(&outpost, &format!("/v2/{REPO}/tags/list")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json()["tags"],
        serde_json::json!(["a", "b", "c", "d", "e"])
    );
    assert_eq!(fake.requests_matching("GET", "/tags/list").len(), 3);

    // With the containerd mirror form (`?ns=`), the link keeps `ns`.
    let reply = get(&outpost, "/v2/app/tags/list?ns=quay.io&n=4").await;
    assert_eq!(
        reply.json()["tags"],
        serde_json::json!(["a", "b", "c", "d"])
    );
    assert_eq!(
        reply.header("link"),
        Some("</v2/app/tags/list?n=4&last=d&ns=quay.io>; rel=\"next\"")
    );
}

#[tokio::test]
async fn the_locally_known_tags_are_paged_the_same_way_when_the_upstream_is_down() {
    let fake = FakeRegistry::start().await;
    for tag in ["v2", "v1", "v10"] {
        fake.push_seeded("p/quay.io/app", Some(tag), 1, &[10]);
    }
    let outpost = outpost_for(&fake).await;
    for tag in ["v2", "v1", "v10"] {
        let reply = get(&outpost, &format!("/v2/{REPO}/manifests/{tag}")).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    fake.stop().await;
    let reply = get(&outpost, &format!("/v2/{REPO}/tags/list?n=2")).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert!(reply.header("warning").is_some());
    assert_eq!(reply.json()["tags"], serde_json::json!(["v1", "v10"]));
    assert_eq!(
        reply.header("link"),
        Some(format!("</v2/{REPO}/tags/list?n=2&last=v10>; rel=\"next\"").as_str())
    );
}
