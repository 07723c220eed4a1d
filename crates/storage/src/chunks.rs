//! Reading blob files in chunks for response bodies, within a memory budget.
//!
//! A [`ChunkReader`] reads on the caller's (async) thread when the page cache holds the bytes
//! (`preadv2` with `RWF_NOWAIT`, Linux) and through the [`Offload`] only when the disk must be
//! read, in chunks sized so that all readers of the process together stay within
//! [`READ_BUDGET`]; the buffers are pooled per reader, so a warm download allocates nothing per
//! chunk.

use std::fs::File;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use crate::content::{BlobRead, BoxFuture, Offload};
use crate::offload::offload;
use crate::store::Lease;

/// What all responses together spend on file read buffers, about: a lone download reads (and
/// sends) in large chunks, which costs fewer system calls per byte; concurrent downloads share
/// the budget in smaller ones, so memory grows little as clients are added (beyond 16 of them,
/// by two [`MIN_CHUNK`] buffers each).
const READ_BUDGET: usize = 2 << 20;
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

/// Reads a file in chunks: on the caller's thread when the page cache holds the bytes
/// (`preadv2` with `RWF_NOWAIT`, Linux), through the [`Offload`] when the disk must be read. A
/// warm blob, or a fill's freshly written bytes, so cost no hand-off between threads.
pub(crate) struct ChunkReader {
    file: Arc<File>,
    offload: Arc<dyn Offload>,
    /// Keeps the blob from being evicted while it is read (stored blobs only).
    _lease: Option<Lease>,
    /// Buffers whose chunks hyper has sent: a response reuses a few instead of allocating (and
    /// zeroing) one per chunk.
    pool: Arc<Mutex<Vec<Vec<u8>>>>,
    nowait: bool,
}

/// Buffers a response keeps for reuse: one being filled while hyper sends the other.
const POOLED: usize = 2;

impl ChunkReader {
    pub(crate) fn new(
        file: Arc<File>,
        offload: Arc<dyn Offload>,
        lease: Option<Lease>,
    ) -> ChunkReader {
        READERS.fetch_add(1, Ordering::Relaxed);
        ChunkReader {
            file,
            offload,
            _lease: lease,
            pool: Arc::default(),
            nowait: cfg!(target_os = "linux"),
        }
    }

    /// Reads the next chunk at `offset`, of up to `left` bytes; an error at end of file.
    async fn read_chunk(&mut self, offset: u64, left: u64) -> std::io::Result<Bytes> {
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
        let (buf, read) = offload(&*self.offload, move || {
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

/// Reads as much of `buf` at `offset` as the page cache holds, without waiting for the disk
/// (`preadv2` with `RWF_NOWAIT`, Linux; elsewhere nothing): how many bytes were read. Stops at
/// the first byte that would need the disk, or at end of file.
pub(crate) fn read_cached(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    #[cfg(target_os = "linux")]
    while done < buf.len() {
        use rustix::io::{preadv2, Errno, ReadWriteFlags};
        let mut slices = [std::io::IoSliceMut::new(&mut buf[done..])];
        match preadv2(
            file,
            &mut slices,
            offset + done as u64,
            ReadWriteFlags::NOWAIT,
        ) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(Errno::AGAIN | Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => break,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, buf, offset);
    Ok(done)
}

impl BlobRead for ChunkReader {
    fn read(&mut self, offset: u64, max: u64) -> BoxFuture<'_, std::io::Result<Bytes>> {
        Box::pin(self.read_chunk(offset, max))
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

    /// Blocking work on plain threads; futures driven to completion on the test's thread.
    fn threads() -> Arc<dyn Offload> {
        struct Threads;
        impl Offload for Threads {
            fn run(&self, job: Box<dyn FnOnce() + Send>) {
                std::thread::spawn(job);
            }
        }
        Arc::new(Threads)
    }

    trait Block: std::future::Future + Sized {
        fn block(self) -> Self::Output {
            futures_executor::block_on(self)
        }
    }
    impl<F: std::future::Future> Block for F {}

    #[test]
    fn chunk_reader_reads_what_the_file_holds_and_fails_past_its_end() {
        let mut temp = tempfile::tempfile().unwrap();
        temp.write_all(b"0123456789").unwrap();
        let mut reader = ChunkReader::new(Arc::new(temp), threads(), None);
        assert_eq!(reader.read_chunk(3, 4).block().unwrap(), "3456");
        assert_eq!(
            reader.read_chunk(7, 8).block().unwrap(),
            "789",
            "a short read at the end"
        );
        let held = reader.read_chunk(0, 10).block().unwrap(); // hyper still sending it
        assert_eq!(reader.read_chunk(2, 1).block().unwrap(), "2");
        assert_eq!(
            held, "0123456789",
            "a chunk is not overwritten while it is held"
        );
        let past = reader.read_chunk(10, 4).block().unwrap_err();
        assert_eq!(past.kind(), std::io::ErrorKind::UnexpectedEof);
        reader.nowait = false; // the blocking pool's path
        assert_eq!(reader.read_chunk(0, 2).block().unwrap(), "01");
        assert!(reader.read_chunk(10, 1).block().is_err());
    }

    #[test]
    fn chunk_reader_reads_a_file_the_page_cache_does_not_hold() {
        let bytes: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
        let mut temp = tempfile::tempfile().unwrap();
        temp.write_all(&bytes).unwrap();
        temp.sync_all().unwrap();
        // Evicts the clean pages, so the first reads find nothing cached (EAGAIN, blocking pool).
        rustix::fs::fadvise(&temp, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        let mut reader = ChunkReader::new(Arc::new(temp), threads(), None);
        let mut read = Vec::new();
        while (read.len() as u64) < bytes.len() as u64 {
            let offset = read.len() as u64;
            let chunk = reader
                .read(offset, bytes.len() as u64 - offset)
                .block()
                .unwrap();
            read.extend_from_slice(&chunk);
        }
        assert_eq!(read, bytes);
    }

    #[test]
    fn read_cached_reads_what_the_page_cache_holds_and_stops_at_the_disk() {
        let bytes: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
        let mut temp = tempfile::tempfile().unwrap();
        temp.write_all(&bytes).unwrap();
        let mut buf = vec![0; bytes.len()];
        assert_eq!(read_cached(&temp, &mut buf, 0).unwrap(), bytes.len());
        assert_eq!(buf, bytes);
        assert_eq!(
            read_cached(&temp, &mut buf, bytes.len() as u64 - 10).unwrap(),
            10,
            "stops at the end of the file"
        );
        temp.sync_all().unwrap();
        rustix::fs::fadvise(&temp, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        let read = read_cached(&temp, &mut buf, 0).unwrap();
        assert!(read < bytes.len(), "{read} bytes read without the disk");
        assert_eq!(buf[..read], bytes[..read]);
    }

    #[test]
    fn readers_share_the_read_budget() {
        assert_eq!(chunk_size_for(0), MAX_CHUNK);
        assert_eq!(chunk_size_for(1), MAX_CHUNK);
        assert_eq!(chunk_size_for(4), 256 << 10);
        assert_eq!(chunk_size_for(8), 128 << 10);
        assert_eq!(
            chunk_size_for(20),
            MIN_CHUNK,
            "20 downloads hold 20 x 2 x 64 KiB"
        );
        assert_eq!(chunk_size_for(10_000), MIN_CHUNK);
    }
}
