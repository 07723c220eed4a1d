//! Response bodies read from the store: bytes `[start, end)` of a blob, chunk by chunk, through
//! the store's [`BlobRead`] (which keeps the blob from being evicted while it lives).

use http_body_util::{BodyExt, StreamBody};
use storage::BlobRead;

use crate::body::Body;

/// The body of bytes `[start, end)` read through `reader`.
pub fn body(reader: Box<dyn BlobRead>, start: u64, end: u64) -> Body {
    let stream =
        futures_util::stream::unfold((reader, start), move |(mut reader, offset)| async move {
            if offset >= end {
                return None;
            }
            match reader.read(offset, end - offset).await {
                Ok(chunk) => {
                    let next = offset + chunk.len() as u64;
                    Some((Ok(http_body::Frame::data(chunk)), (reader, next)))
                }
                Err(e) => Some((Err(e.into()), (reader, end))),
            }
        });
    StreamBody::new(stream).boxed_unsync()
}
