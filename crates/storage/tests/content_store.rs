//! The conformance suite of [`ContentStore`] (the checks are in `checks/mod.rs`) run against
//! the embedded store. Add an implementation with one `content_store_suite!` line at the
//! bottom; every check then runs against it. The stores' blocking work runs on plain threads
//! (see [`Threads`]).

mod checks;

use std::path::Path;
use std::sync::Arc;

use storage::{ContentStore, Embedded, Offload, Store};

/// Blocking store work on a thread of its own.
struct Threads;

impl Offload for Threads {
    fn run(&self, job: Box<dyn FnOnce() + Send>) {
        std::thread::spawn(job);
    }
}

/// A new, empty embedded store in `dir`.
fn embedded(dir: &Path) -> Arc<dyn ContentStore> {
    Arc::new(Embedded::new(Store::open(dir).unwrap(), Arc::new(Threads)))
}

/// Runs every check of the suite against the stores `$make` (a `fn(&Path)`) creates.
macro_rules! content_store_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;

            fn run(check: fn(Arc<dyn ContentStore>)) {
                let dir = tempfile::tempdir().unwrap();
                check($make(dir.path()));
            }

            #[test]
            fn space_is_reported_as_the_file_system_has_it() {
                run(checks::space_is_reported_as_the_file_system_has_it)
            }
            #[test]
            fn absent_blobs_are_none() {
                run(checks::absent_blobs_are_none)
            }
            #[test]
            fn put_checks_the_digest_and_keeps_the_media_type() {
                run(checks::put_checks_the_digest_and_keeps_the_media_type)
            }
            #[test]
            fn a_written_blob_reads_back_whole_and_in_ranges() {
                run(checks::a_written_blob_reads_back_whole_and_in_ranges)
            }
            #[test]
            fn followers_read_a_write_as_it_arrives() {
                run(checks::followers_read_a_write_as_it_arrives)
            }
            #[test]
            fn wrong_bytes_are_never_stored() {
                run(checks::wrong_bytes_are_never_stored)
            }
            #[test]
            fn an_abandoned_write_stores_nothing() {
                run(checks::an_abandoned_write_stores_nothing)
            }
            #[test]
            fn tags_and_repositories() {
                run(checks::tags_and_repositories)
            }
            #[test]
            fn referrers_records_beside_tags() {
                run(checks::referrers_records_beside_tags)
            }
            #[test]
            fn eviction_removes_least_recently_used_but_never_a_blob_being_read() {
                run(checks::eviction_removes_least_recently_used_but_never_a_blob_being_read)
            }
        }
    };
}

content_store_suite!(embedded_store, embedded);
