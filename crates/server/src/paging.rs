//! Pagination of `tags/list` and `_catalog` as the distribution spec says, whatever the
//! upstream did: names in lexical (byte) order without duplicates, at most `n` of them after
//! `last`, and a `Link: <…?n=N&last=L>; rel="next"` header when more remain. Pure.

/// One page of `names`: sorted and deduplicated, those after `last`, at most `n`; and whether
/// names remain after the page.
pub fn page(mut names: Vec<String>, n: Option<u32>, last: Option<&str>) -> (Vec<String>, bool) {
    names.sort_unstable();
    names.dedup();
    if let Some(last) = last {
        names.retain(|name| name.as_str() > last);
    }
    let mut more = false;
    if let Some(n) = n.map(|n| n as usize) {
        more = names.len() > n;
        names.truncate(n);
    }
    (names, more)
}

/// The `Link` header value for the page after `page` of `path` (`/v2/<name>/tags/list`), with
/// containerd's `ns` kept. `None` when nothing remains or the page is empty (`n=0`).
pub fn next_link(
    path: &str,
    page: &[String],
    more: bool,
    n: Option<u32>,
    ns: Option<&str>,
) -> Option<String> {
    let (true, Some(n), Some(last)) = (more, n, page.last()) else {
        return None;
    };
    let mut query = format!("n={n}&last={}", upstream::encode_query_value(last));
    if let Some(ns) = ns {
        query.push_str("&ns=");
        query.push_str(&upstream::encode_query_value(ns));
    }
    Some(format!("<{path}?{query}>; rel=\"next\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sorted_deduplicated_after_last_at_most_n() {
        let all = names(&["v2", "v10", "latest", "v1", "v2", "A"]);
        assert_eq!(
            page(all.clone(), None, None),
            (names(&["A", "latest", "v1", "v10", "v2"]), false)
        );
        assert_eq!(
            page(all.clone(), Some(2), None),
            (names(&["A", "latest"]), true)
        );
        assert_eq!(
            page(all.clone(), Some(2), Some("latest")),
            (names(&["v1", "v10"]), true)
        );
        assert!(!page(all.clone(), Some(5), None).1, "exactly n: no more");
        assert_eq!(
            page(all.clone(), Some(3), Some("v10")),
            (names(&["v2"]), false)
        );
        assert_eq!(page(all.clone(), None, Some("zzz")), (vec![], false));
        assert_eq!(page(all, Some(0), None), (vec![], true));
    }

    #[test]
    fn the_link_names_the_next_page() {
        let p = names(&["v1", "v10"]);
        assert_eq!(
            next_link("/v2/quay.io/app/tags/list", &p, true, Some(2), None).unwrap(),
            "</v2/quay.io/app/tags/list?n=2&last=v10>; rel=\"next\""
        );
        assert_eq!(
            next_link("/v2/app/tags/list", &p, true, Some(2), Some("quay.io")).unwrap(),
            "</v2/app/tags/list?n=2&last=v10&ns=quay.io>; rel=\"next\""
        );
        assert_eq!(next_link("/v2/a/tags/list", &p, false, Some(2), None), None);
        assert_eq!(next_link("/v2/a/tags/list", &[], true, Some(0), None), None);
    }
}
