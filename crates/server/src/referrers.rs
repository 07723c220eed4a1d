//! Referrers indexes (distribution-spec 1.1, `GET /v2/<name>/referrers/<digest>`): checking
//! an upstream's answer, the empty index, and the `artifactType` filter outpost applies itself,
//! so the stored (unfiltered) index answers every filter. Pure.

use bytes::Bytes;
use oci::{Digest, OCI_INDEX};
use serde_json::Value;

/// The descriptors of a referrers index, checked: a JSON object whose `manifests` is a list of
/// descriptors (`mediaType` string, `digest` valid, `size` a number); a missing or `null` list is
/// empty.
pub fn parse(bytes: &[u8]) -> Result<Vec<Value>, String> {
    let Value::Object(mut index) = serde_json::from_slice(bytes).map_err(|e| e.to_string())? else {
        return Err("not a JSON object".to_owned());
    };
    let manifests = match index.remove("manifests") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(manifests)) => manifests,
        Some(_) => return Err("`manifests` is not a list".to_owned()),
    };
    for (i, descriptor) in manifests.iter().enumerate() {
        let valid = descriptor.get("mediaType").is_some_and(Value::is_string)
            && descriptor.get("size").is_some_and(Value::is_u64)
            && descriptor
                .get("digest")
                .and_then(Value::as_str)
                .is_some_and(|d| d.parse::<Digest>().is_ok());
        if !valid {
            return Err(format!(
                "manifests[{i}] is not a descriptor (mediaType, digest, size)"
            ));
        }
    }
    Ok(manifests)
}

/// An index of `descriptors`.
fn index(descriptors: Vec<Value>) -> Bytes {
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": descriptors,
    });
    Bytes::from(index.to_string())
}

/// The index with no referrers: what a subject without any has.
pub fn empty() -> Bytes {
    index(Vec::new())
}

/// What a client asking with `artifact_type` gets of a checked index (checked by [`parse`]
/// before it was stored or served): the index as it is without a filter, else the descriptors
/// of that artifact type, and whether a filter was applied (`OCI-Filters-Applied:
/// artifactType`).
pub fn answer(bytes: &Bytes, artifact_type: Option<&str>) -> Result<(Bytes, bool), String> {
    let Some(wanted) = artifact_type else {
        return Ok((bytes.clone(), false));
    };
    let descriptors = parse(bytes)?;
    let kept = descriptors
        .into_iter()
        .filter(|d| d.get("artifactType").and_then(Value::as_str) == Some(wanted))
        .collect();
    Ok((index(kept), true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(artifact_type: &str, n: u8) -> Value {
        serde_json::json!({
            "mediaType": oci::OCI_MANIFEST,
            "digest": format!("sha256:{}", format!("{n:02x}").repeat(32)),
            "size": 100 + u64::from(n),
            "artifactType": artifact_type,
        })
    }

    #[test]
    fn filters_by_artifact_type_and_keeps_the_unfiltered_index_as_it_is() {
        let sig = "application/vnd.dev.cosign.artifact.sig.v1+json";
        let sbom = "application/spdx+json";
        let stored = Bytes::from(
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [descriptor(sig, 1), descriptor(sbom, 2), descriptor(sig, 3)],
                "annotations": {"kept": "as stored"},
            })
            .to_string(),
        );
        let (all, filtered) = answer(&stored, None).unwrap();
        assert_eq!((all, filtered), (stored.clone(), false));
        let (sigs, filtered) = answer(&stored, Some(sig)).unwrap();
        assert!(filtered);
        let sigs: Value = serde_json::from_slice(&sigs).unwrap();
        assert_eq!(
            sigs["manifests"],
            serde_json::json!([descriptor(sig, 1), descriptor(sig, 3)])
        );
        assert_eq!(sigs["mediaType"], OCI_INDEX);
        let (none, _) = answer(&stored, Some("application/other")).unwrap();
        assert_eq!(parse(&none).unwrap(), Vec::<Value>::new());
    }

    #[test]
    fn what_is_not_a_referrers_index_is_refused() {
        assert_eq!(parse(&empty()).unwrap(), Vec::<Value>::new());
        assert_eq!(
            parse(br#"{"schemaVersion":2}"#).unwrap(),
            Vec::<Value>::new()
        );
        for bad in [
            &b"[]"[..],
            b"not json",
            br#"{"manifests":{}}"#,
            br#"{"manifests":[{"mediaType":"x","size":1,"digest":"sha256:abc"}]}"#,
            br#"{"manifests":[{"mediaType":"x","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"}]}"#,
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
