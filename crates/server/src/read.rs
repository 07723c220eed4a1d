//! Response bodies read from files: a stored blob, or the temp file of a fill in progress.
//!
//! A [`ChunkReader`] reads on the runtime thread when the page cache holds the bytes
//! (`preadv2` with `RWF_NOWAIT`, Linux) and on the blocking pool only when the disk must be read,
//! in chunks sized so that all readers together stay within a small memory budget
//! ([`READ_BUDGET`]); the buffers are pooled per response, so a warm download allocates nothing
//! per chunk.

use std::fs::File;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};

use crate::body::Body;

/// What all responses together spend on file read buffers, about: a lone download reads (and
/// sends) in large chunks, which costs fewer system calls per byte; concurrent downloads share
/// the budget in smaller ones, so memory grows little as clients are added (beyond 32 of them,
/// by two [`MIN_CHUNK`] buffers each).
const READ_BUDGET: usize = 4 << 20;
/// The smallest and largest read, and body frame.
const MIN_CHUNK: usize = 64 << 10;
const MAX_CHUNK: usize = 512 << 10;
/// Response bodies reading files now.
static READERS: AtomicUsize = AtomicUsize::new(0);

/// The size of the next read of a response body: the budget shared by the readers, each holding
/// up to [`POOLED`] buffers, in multiples of [`MIN_CHUNK`].
fn chunk_size() -> usize {
    chunk_size_for(READERS.load(Ordering::Relaxed))
}

fn chunk_size_for(readers: usize) -> usize {
    (READ_BUDGET / (POOLED * readers.max(1))).clamp(MIN_CHUNK, MAX_CHUNK) / MIN_CHUNK * MIN_CHUNK
}

/// The body of bytes `[start, end)` of a stored blob; `keep` (the store lease) lives as long as
/// the body does.
pub fn file_body<K: Send + 'static>(file: File, start: u64, end: u64, keep: K) -> Body {
    let reader = ChunkReader::new(Arc::new(file));
    let stream = futures_util::stream::unfold(
        (reader, start, keep),
        move |(mut reader, offset, keep)| async move {
            if offset >= end {
                return None;
            }
            match reader.read(offset, end - offset).await {
                Ok(chunk) => {
                    let next = offset + chunk.len() as u64;
                    Some((Ok(http_body::Frame::data(chunk)), (reader, next, keep)))
                }
                Err(e) => Some((Err(e.into()), (reader, end, keep))),
            }
        },
    );
    StreamBody::new(stream).boxed_unsync()
}

/// Reads a file in chunks for a response body: on the runtime thread when the page cache holds
/// the bytes (`preadv2` with `RWF_NOWAIT`, Linux), on the blocking pool when the disk must be
/// read. A warm blob, or a fill's freshly written bytes, so cost no hand-off between threads.
pub struct ChunkReader {
    file: Arc<File>,
    /// Buffers whose chunks hyper has sent: a response reuses a few instead of allocating (and
    /// zeroing) one per chunk.
    pool: Arc<Mutex<Vec<Vec<u8>>>>,
    nowait: bool,
}

/// Buffers a response keeps for reuse: one being filled while hyper sends the other.
const POOLED: usize = 2;

impl ChunkReader {
    pub fn new(file: Arc<File>) -> ChunkReader {
        READERS.fetch_add(1, Ordering::Relaxed);
        ChunkReader {
            file,
            pool: Arc::default(),
            nowait: cfg!(target_os = "linux"),
        }
    }

    /// Reads the next chunk at `offset`, of up to `left` bytes; an error at end of file.
    pub async fn read(&mut self, offset: u64, left: u64) -> std::io::Result<Bytes> {
        let size = chunk_size();
        let pooled = self
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        // A pooled buffer of another size (the budget moved) is dropped: zeroing a new one is
        // what reuse avoids, and it happens only when the number of readers changes.
        let mut buf = pooled
            .filter(|b| b.len() == size)
            .unwrap_or_else(|| vec![0; size]);
        let len = left.min(size as u64) as usize;
        #[cfg(target_os = "linux")]
        if self.nowait {
            use rustix::io::{preadv2, Errno, ReadWriteFlags};
            let mut slices = [std::io::IoSliceMut::new(&mut buf[..len])];
            match preadv2(&*self.file, &mut slices, offset, ReadWriteFlags::NOWAIT) {
                Ok(n) => return self.chunk(buf, n),
                Err(Errno::AGAIN) => {} // not in the page cache: read it on the blocking pool
                Err(Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => self.nowait = false,
                Err(e) => return Err(e.into()),
            }
        }
        let file = self.file.clone();
        let (buf, read) = tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            let read = file.read_at(&mut buf[..len], offset);
            (buf, read)
        })
        .await
        .map_err(std::io::Error::other)?;
        self.chunk(buf, read?)
    }

    fn chunk(&self, buf: Vec<u8>, len: usize) -> std::io::Result<Bytes> {
        if len == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the blob file ended early",
            ));
        }
        Ok(Bytes::from_owner(PooledChunk {
            buf,
            len,
            pool: self.pool.clone(),
        }))
    }
}

impl Drop for ChunkReader {
    fn drop(&mut self) {
        READERS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The first `len` bytes of a pooled buffer, as a body chunk; the buffer goes back to the pool
/// when the chunk is dropped.
struct PooledChunk {
    buf: Vec<u8>,
    len: usize,
    pool: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl AsRef<[u8]> for PooledChunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for PooledChunk {
    fn drop(&mut self) {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < POOLED {
            pool.push(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn chunk_reader_reads_what_the_file_holds_and_fails_past_its_end() {
        let mut temp = tempfile::tempfile().unwrap();
        temp.write_all(b"0123456789").unwrap();
        let mut reader = ChunkReader::new(Arc::new(temp));
        assert_eq!(reader.read(3, 4).await.unwrap(), "3456");
        assert_eq!(
            reader.read(7, 8).await.unwrap(),
            "789",
            "a short read at the end"
        );
        let held = reader.read(0, 10).await.unwrap(); // hyper still sending it
        assert_eq!(reader.read(2, 1).await.unwrap(), "2");
        assert_eq!(
            held, "0123456789",
            "a chunk is not overwritten while it is held"
        );
        let past = reader.read(10, 4).await.unwrap_err();
        assert_eq!(past.kind(), std::io::ErrorKind::UnexpectedEof);
        reader.nowait = false; // the blocking pool's path
        assert_eq!(reader.read(0, 2).await.unwrap(), "01");
        assert!(reader.read(10, 1).await.is_err());
    }

    #[tokio::test]
    async fn chunk_reader_reads_a_file_the_page_cache_does_not_hold() {
        let bytes: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
        let mut temp = tempfile::tempfile().unwrap();
        temp.write_all(&bytes).unwrap();
        temp.sync_all().unwrap();
        // Evicts the clean pages, so the first reads find nothing cached (EAGAIN, blocking pool).
        rustix::fs::fadvise(&temp, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        let mut reader = ChunkReader::new(Arc::new(temp));
        let mut read = Vec::new();
        while (read.len() as u64) < bytes.len() as u64 {
            let offset = read.len() as u64;
            let chunk = reader
                .read(offset, bytes.len() as u64 - offset)
                .await
                .unwrap();
            read.extend_from_slice(&chunk);
        }
        assert_eq!(read, bytes);
    }

    #[test]
    fn readers_share_the_read_budget() {
        assert_eq!(chunk_size_for(0), MAX_CHUNK);
        assert_eq!(chunk_size_for(1), MAX_CHUNK);
        assert_eq!(chunk_size_for(8), 256 << 10);
        assert_eq!(
            chunk_size_for(20),
            MIN_CHUNK,
            "20 downloads hold 20 x 2 x 64 KiB"
        );
        assert_eq!(chunk_size_for(10_000), MIN_CHUNK);
    }
}
