//! An in-process fake Amazon S3 for tests of the S3-backed store, so `cargo test` needs nothing
//! but the Rust toolchain.
//!
//! [`FakeS3::start`] binds `127.0.0.1:0` and serves one bucket over plain HTTP/1.1, path-style
//! (`/{bucket}/{key…}`, keys percent-decoded), from memory. It speaks the subset of the S3 REST
//! API that `object_store`'s `AmazonS3` uses, with S3's XML bodies and error codes:
//!
//! - objects: PutObject (`If-None-Match: *`, `If-Match`), CopyObject (`x-amz-copy-source`),
//!   GetObject and HeadObject (`Range` → 206 with `Content-Range` or 416; `If-Match`,
//!   `If-None-Match`, `If-Modified-Since`, `If-Unmodified-Since`), DeleteObject (204 even when
//!   absent), DeleteObjects (`POST /{bucket}?delete`, which `object_store`'s `delete` uses unless
//!   bulk delete is disabled), ListObjectsV2 (`prefix`, `delimiter`, `max-keys`, `start-after`,
//!   `continuation-token`), HeadBucket;
//! - multipart: CreateMultipartUpload, UploadPart, CompleteMultipartUpload (parts listed in
//!   ascending order, all but the last at least [`MIN_PART_SIZE`] unless
//!   [`FakeS3::set_min_part_size`] says otherwise; `If-None-Match: *`), AbortMultipartUpload,
//!   ListMultipartUploads.
//!
//! Every request needs `Authorization: AWS4-HMAC-SHA256 Credential=<access key id>/…` (or a
//! presigned `X-Amz-Credential`) naming the configured key id; the signature is not checked, but a
//! hex `x-amz-content-sha256` must match the body. Other buckets get `404 NoSuchBucket`.
//!
//! Faults ([`FakeS3::set_down`]: 503 `SlowDown`; [`FakeS3::set_unreachable`]: connections closed
//! without an answer; [`FakeS3::set_delay`]), direct access to the stored objects (including
//! [`FakeS3::overwrite`], a silent corruption), and a log of every request ([`S3Request`]) with
//! counters are all available through `&self`. Dropping the fake stops it and closes every
//! connection.
//!
//! ```text
//! let s3 = FakeS3::start("outpost").await;
//! // ... an AmazonS3 on s3.endpoint(), s3.bucket(), s3.access_key_id(), s3.secret_access_key() ...
//! assert_eq!(s3.keys("blobs/"), ["blobs/sha256/ab12"]);
//! assert_eq!(s3.count(Method::GET, "blobs/"), 1);
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{
    AsHeaderName, HeaderName, AUTHORIZATION, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_ENCODING,
    CONTENT_LANGUAGE, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_MATCH,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_UNMODIFIED_SINCE, LAST_MODIFIED, RANGE,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use percent_encoding::percent_decode_str;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The access key id [`FakeS3::start`] expects.
pub const ACCESS_KEY_ID: &str = "AKIAFAKES3OUTPOST";
/// The secret access key [`FakeS3::start`] hands out (signatures are not verified).
pub const SECRET_ACCESS_KEY: &str = "fake-s3-secret-access-key-for-outpost-tests";
/// S3's smallest size for every part of a multipart upload but the last: 5 MiB.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

const XMLNS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";
const DEFAULT_CONTENT_TYPE: &str = "binary/octet-stream";
const MAX_KEYS: usize = 1000;
const MAX_PART_NUMBER: u32 = 10_000;
const COPY_SOURCE: &str = "x-amz-copy-source";
const CONTENT_SHA256: &str = "x-amz-content-sha256";
const REQUEST_ID: &str = "x-amz-request-id";
const USER_METADATA: &str = "x-amz-meta-";
const METADATA_DIRECTIVE: &str = "x-amz-metadata-directive";

/// A running fake S3 serving one bucket; see the module documentation.
pub struct FakeS3 {
    state: Arc<State>,
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

/// One request the fake received, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Request {
    pub method: Method,
    /// The percent-decoded object key; empty for bucket-level requests (lists, bulk delete).
    pub key: String,
    /// The raw query string.
    pub query: Option<String>,
    /// The S3 operation, e.g. `GetObject`, `ListObjectsV2`, `UploadPart`; `Unknown` when the
    /// request matched none.
    pub operation: &'static str,
    /// `None` when the connection was closed without an answer ([`FakeS3::set_unreachable`]).
    pub status: Option<StatusCode>,
    /// Bytes of object data in the response body (GetObject only).
    pub body_bytes: u64,
}

impl FakeS3 {
    /// Starts serving `bucket` with [`ACCESS_KEY_ID`] and [`SECRET_ACCESS_KEY`].
    pub async fn start(bucket: &str) -> FakeS3 {
        FakeS3::start_with_credentials(bucket, ACCESS_KEY_ID, SECRET_ACCESS_KEY).await
    }

    /// Starts serving `bucket` to clients that sign with `access_key_id`.
    pub async fn start_with_credentials(
        bucket: &str,
        access_key_id: &str,
        secret_access_key: &str,
    ) -> FakeS3 {
        assert!(
            !bucket.is_empty() && !bucket.contains('/'),
            "bad bucket name {bucket:?}"
        );
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            bucket: bucket.to_owned(),
            access_key_id: access_key_id.to_owned(),
            secret_access_key: secret_access_key.to_owned(),
            endpoint: format!("http://{addr}"),
            data: Mutex::new(Data::default()),
            down: AtomicBool::new(false),
            unreachable: AtomicBool::new(false),
            delay: Mutex::new(Duration::ZERO),
            min_part_size: AtomicU64::new(MIN_PART_SIZE),
            log: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
        });
        let accept = tokio::spawn(accept_loop(listener, state.clone()));
        FakeS3 {
            state,
            addr,
            accept,
        }
    }

    /// `http://127.0.0.1:PORT`, the endpoint for path-style requests.
    pub fn endpoint(&self) -> String {
        self.state.endpoint.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn bucket(&self) -> &str {
        &self.state.bucket
    }

    pub fn access_key_id(&self) -> &str {
        &self.state.access_key_id
    }

    pub fn secret_access_key(&self) -> &str {
        &self.state.secret_access_key
    }

    /// While down, every request is answered `503 SlowDown`.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// While unreachable, new connections are closed at once and requests on open ones are
    /// dropped with their connection, never answered.
    pub fn set_unreachable(&self, unreachable: bool) {
        self.state.unreachable.store(unreachable, Ordering::SeqCst);
    }

    /// Delays every answer by `delay` (`Duration::ZERO`: none).
    pub fn set_delay(&self, delay: Duration) {
        *lock(&self.state.delay) = delay;
    }

    /// The smallest size CompleteMultipartUpload accepts for every part but the last; S3's
    /// [`MIN_PART_SIZE`] by default.
    pub fn set_min_part_size(&self, bytes: u64) {
        self.state.min_part_size.store(bytes, Ordering::SeqCst);
    }

    /// The stored keys starting with `prefix`, sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let data = lock(&self.state.data);
        data.objects
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// The bytes stored under `key`.
    pub fn object(&self, key: &str) -> Option<Bytes> {
        let data = lock(&self.state.data);
        data.objects.get(key).map(|object| object.bytes.clone())
    }

    /// The ETag (quoted) of `key`.
    pub fn etag(&self, key: &str) -> Option<String> {
        let data = lock(&self.state.data);
        data.objects.get(key).map(|object| object.etag.clone())
    }

    /// Stores `bytes` under `key` as a PutObject would; returns the ETag.
    pub fn insert(&self, key: &str, bytes: impl Into<Bytes>) -> String {
        let object = Object::new(bytes.into(), stored_headers(&HeaderMap::new()));
        let etag = object.etag.clone();
        lock(&self.state.data)
            .objects
            .insert(key.to_owned(), object);
        etag
    }

    /// Replaces the bytes of `key` but keeps its ETag, content type and modification time: a
    /// silent corruption. Panics when `key` is absent.
    pub fn overwrite(&self, key: &str, bytes: impl Into<Bytes>) {
        let mut data = lock(&self.state.data);
        let object = data
            .objects
            .get_mut(key)
            .unwrap_or_else(|| panic!("overwrite: no object {key:?}"));
        object.bytes = bytes.into();
    }

    /// Deletes `key`; whether it existed.
    pub fn remove(&self, key: &str) -> bool {
        lock(&self.state.data).objects.remove(key).is_some()
    }

    /// Multipart uploads created and neither completed nor aborted.
    pub fn uploads_in_progress(&self) -> usize {
        lock(&self.state.data).uploads.len()
    }

    /// Every request since the start or the last [`FakeS3::reset_counters`].
    pub fn requests(&self) -> Vec<S3Request> {
        lock(&self.state.log).clone()
    }

    /// Requests with `method` on keys starting with `key_prefix` (`""`: bucket-level ones too).
    pub fn count(&self, method: Method, key_prefix: &str) -> usize {
        let log = lock(&self.state.log);
        log.iter()
            .filter(|r| r.method == method && r.key.starts_with(key_prefix))
            .count()
    }

    /// Requests of one S3 operation, e.g. `"UploadPart"`.
    pub fn count_operation(&self, operation: &str) -> usize {
        let log = lock(&self.state.log);
        log.iter().filter(|r| r.operation == operation).count()
    }

    /// Bytes of object data sent in GetObject bodies for keys starting with `key_prefix`.
    pub fn bytes_served(&self, key_prefix: &str) -> u64 {
        let log = lock(&self.state.log);
        log.iter()
            .filter(|r| r.key.starts_with(key_prefix))
            .map(|r| r.body_bytes)
            .sum()
    }

    /// Forgets the requests seen so far.
    pub fn reset_counters(&self) {
        lock(&self.state.log).clear();
    }
}

impl Drop for FakeS3 {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

struct State {
    bucket: String,
    access_key_id: String,
    secret_access_key: String,
    endpoint: String,
    data: Mutex<Data>,
    down: AtomicBool,
    unreachable: AtomicBool,
    delay: Mutex<Duration>,
    min_part_size: AtomicU64,
    log: Mutex<Vec<S3Request>>,
    next_id: AtomicU64,
}

/// The bucket's contents.
#[derive(Default)]
struct Data {
    objects: BTreeMap<String, Object>,
    /// By upload id.
    uploads: BTreeMap<String, Upload>,
    uploads_created: u64,
    /// Completed uploads by id, with their key and ETag: S3 answers a repeated completion (a
    /// retry) with the same result.
    completed: BTreeMap<String, (String, String)>,
}

#[derive(Clone)]
struct Object {
    bytes: Bytes,
    /// `Content-Type` and the other headers S3 keeps with an object: see [`stored_headers`].
    headers: HeaderMap,
    /// Quoted, as in the `ETag` header.
    etag: String,
    /// Seconds since the epoch.
    modified: u64,
}

impl Object {
    fn new(bytes: Bytes, headers: HeaderMap) -> Object {
        let etag = format!("\"{}\"", short_hash(&bytes));
        Object {
            bytes,
            headers,
            etag,
            modified: now(),
        }
    }
}

struct Upload {
    key: String,
    headers: HeaderMap,
    initiated: u64,
    parts: BTreeMap<u32, Part>,
}

struct Part {
    bytes: Bytes,
    etag: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Accepts connections until aborted; aborting drops the `JoinSet`, which closes every open
/// connection too.
async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        if state.unreachable.load(Ordering::SeqCst) {
            drop(stream);
            continue;
        }
        let state = state.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| handle(state.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Answers one request, or fails it (hyper then closes the connection without an answer) while
/// the fake is unreachable; logs it either way.
async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let delay = *lock(&state.delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (parts, body) = req.into_parts();
    let target = Target::parse(parts.uri.path(), parts.uri.query());
    let operation = target
        .as_ref()
        .ok()
        .and_then(|t| Operation::of(&parts.method, t, &parts.headers));
    let mut record = S3Request {
        method: parts.method.clone(),
        key: target
            .as_ref()
            .map_or_else(|_| parts.uri.path().to_owned(), |t| t.key.clone()),
        query: parts.uri.query().map(str::to_owned),
        operation: operation.map_or("Unknown", Operation::name),
        status: None,
        body_bytes: 0,
    };
    if state.unreachable.load(Ordering::SeqCst) {
        lock(&state.log).push(record);
        return Err(Dropped);
    }
    let mut response = answer(&state, &parts, target, operation, body, &mut record)
        .await
        .unwrap_or_else(|e| e.into_response(parts.uri.path()));
    let id = state.next_id.fetch_add(1, Ordering::SeqCst);
    response
        .headers_mut()
        .insert(REQUEST_ID, HeaderValue::from(id));
    record.status = Some(response.status());
    lock(&state.log).push(record);
    Ok(response)
}

/// 503 while down; otherwise reads the body and serves the request.
async fn answer(
    state: &State,
    parts: &http::request::Parts,
    target: Result<Target, S3Error>,
    operation: Option<Operation>,
    body: Incoming,
    record: &mut S3Request,
) -> Reply {
    if state.down.load(Ordering::SeqCst) {
        return Err(S3Error::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SlowDown",
            "Please reduce your request rate.",
        ));
    }
    let body = body
        .collect()
        .await
        .map_err(|_| S3Error::bad_request("IncompleteBody", "The request body was cut short."))?
        .to_bytes();
    serve(state, parts, &target?, operation, body, record)
}

/// The service error that makes hyper drop a connection without answering.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fake S3 is unreachable")
    }
}

impl std::error::Error for Dropped {}

/// What a request addresses: `/{bucket}/{key}?{query}`, decoded.
struct Target {
    bucket: String,
    key: String,
    query: Query,
}

impl Target {
    fn parse(path: &str, query: Option<&str>) -> Result<Target, S3Error> {
        let path = path.strip_prefix('/').unwrap_or(path);
        let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
        Ok(Target {
            bucket: decode(bucket).ok_or_else(invalid_uri)?,
            key: decode(key).ok_or_else(invalid_uri)?,
            query: Query::parse(query.unwrap_or("")).ok_or_else(invalid_uri)?,
        })
    }
}

fn decode(s: &str) -> Option<String> {
    percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

fn invalid_uri() -> S3Error {
    S3Error::bad_request("InvalidURI", "Couldn't parse the specified URI.")
}

/// A form-urlencoded query string; a name without `=` has an empty value.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: &str) -> Option<Query> {
        let pairs = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                Some((form_decode(name)?, form_decode(value)?))
            })
            .collect::<Option<_>>()?;
        Some(Query(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

fn form_decode(s: &str) -> Option<String> {
    decode(&s.replace('+', " "))
}

/// The S3 operations the fake implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    HeadBucket,
    ListObjectsV2,
    ListMultipartUploads,
    DeleteObjects,
    PutObject,
    CopyObject,
    GetObject,
    HeadObject,
    DeleteObject,
    CreateMultipartUpload,
    UploadPart,
    CompleteMultipartUpload,
    AbortMultipartUpload,
}

impl Operation {
    fn of(method: &Method, target: &Target, headers: &HeaderMap) -> Option<Operation> {
        let q = &target.query;
        let op = if target.key.is_empty() {
            match *method {
                Method::HEAD => Operation::HeadBucket,
                Method::GET if q.has("uploads") => Operation::ListMultipartUploads,
                Method::GET => Operation::ListObjectsV2,
                Method::POST if q.has("delete") => Operation::DeleteObjects,
                _ => return None,
            }
        } else {
            match *method {
                Method::PUT if q.has("uploadId") => Operation::UploadPart,
                Method::PUT if headers.contains_key(COPY_SOURCE) => Operation::CopyObject,
                Method::PUT => Operation::PutObject,
                Method::GET => Operation::GetObject,
                Method::HEAD => Operation::HeadObject,
                Method::DELETE if q.has("uploadId") => Operation::AbortMultipartUpload,
                Method::DELETE => Operation::DeleteObject,
                Method::POST if q.has("uploads") => Operation::CreateMultipartUpload,
                Method::POST if q.has("uploadId") => Operation::CompleteMultipartUpload,
                _ => return None,
            }
        };
        Some(op)
    }

    fn name(self) -> &'static str {
        match self {
            Operation::HeadBucket => "HeadBucket",
            Operation::ListObjectsV2 => "ListObjectsV2",
            Operation::ListMultipartUploads => "ListMultipartUploads",
            Operation::DeleteObjects => "DeleteObjects",
            Operation::PutObject => "PutObject",
            Operation::CopyObject => "CopyObject",
            Operation::GetObject => "GetObject",
            Operation::HeadObject => "HeadObject",
            Operation::DeleteObject => "DeleteObject",
            Operation::CreateMultipartUpload => "CreateMultipartUpload",
            Operation::UploadPart => "UploadPart",
            Operation::CompleteMultipartUpload => "CompleteMultipartUpload",
            Operation::AbortMultipartUpload => "AbortMultipartUpload",
        }
    }
}

type Reply = Result<Response<Full<Bytes>>, S3Error>;

/// Checks credentials, bucket and payload hash, then runs the operation.
fn serve(
    state: &State,
    parts: &http::request::Parts,
    target: &Target,
    operation: Option<Operation>,
    body: Bytes,
    record: &mut S3Request,
) -> Reply {
    check_credentials(state, &parts.headers, &target.query)?;
    if target.bucket != state.bucket {
        return Err(no_such_bucket());
    }
    check_payload_hash(&parts.headers, &body)?;
    let Some(operation) = operation else {
        return Err(S3Error::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "The specified method is not allowed against this resource.",
        ));
    };
    let (key, q, headers) = (target.key.as_str(), &target.query, &parts.headers);
    match operation {
        Operation::HeadBucket => Ok(empty(StatusCode::OK)),
        Operation::ListObjectsV2 => list_objects(state, q),
        Operation::ListMultipartUploads => list_uploads(state, q),
        Operation::DeleteObjects => delete_objects(state, &body),
        Operation::PutObject => put_object(state, key, headers, body),
        Operation::CopyObject => copy_object(state, key, headers),
        Operation::GetObject => get_object(state, key, headers, false, record),
        Operation::HeadObject => get_object(state, key, headers, true, record),
        Operation::DeleteObject => {
            lock(&state.data).objects.remove(key);
            Ok(empty(StatusCode::NO_CONTENT))
        }
        Operation::CreateMultipartUpload => create_upload(state, key, headers),
        Operation::UploadPart => upload_part(state, key, q, headers, body),
        Operation::CompleteMultipartUpload => complete_upload(state, key, q, headers, &body),
        Operation::AbortMultipartUpload => abort_upload(state, key, q),
    }
}

/// The access key id of a SigV4 `Authorization` header (or presigned query) must be ours.
fn check_credentials(state: &State, headers: &HeaderMap, query: &Query) -> Result<(), S3Error> {
    let credential = match query.get("X-Amz-Credential") {
        Some(credential) => Some(credential),
        None => headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("AWS4-HMAC-SHA256 Credential=")),
    };
    let Some(key_id) = credential.and_then(|c| c.split_once('/')).map(|(id, _)| id) else {
        return Err(S3Error::new(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Access Denied: no AWS4-HMAC-SHA256 credential",
        ));
    };
    if key_id != state.access_key_id {
        return Err(S3Error::new(
            StatusCode::FORBIDDEN,
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
        ));
    }
    Ok(())
}

/// A signed payload (`x-amz-content-sha256` in hex, not `UNSIGNED-PAYLOAD`) must match the body.
fn check_payload_hash(headers: &HeaderMap, body: &[u8]) -> Result<(), S3Error> {
    let Some(claimed) = headers.get(CONTENT_SHA256).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    if claimed.len() != 64 || !claimed.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(());
    }
    if !claimed.eq_ignore_ascii_case(&hex::encode(sha256(body))) {
        return Err(S3Error::bad_request(
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        ));
    }
    Ok(())
}

fn put_object(state: &State, key: &str, headers: &HeaderMap, body: Bytes) -> Reply {
    let object = Object::new(body, stored_headers(headers));
    let etag = object.etag.clone();
    let mut data = lock(&state.data);
    check_write_preconditions(headers, data.objects.get(key))?;
    data.objects.insert(key.to_owned(), object);
    Ok(with_etag(empty(StatusCode::OK), &etag))
}

/// CopyObject within the bucket; the source is `[/]bucket/key` percent-encoded.
fn copy_object(state: &State, key: &str, headers: &HeaderMap) -> Reply {
    let source = headers
        .get(COPY_SOURCE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split('?').next().unwrap_or(s))
        .and_then(decode)
        .ok_or_else(|| S3Error::bad_request("InvalidArgument", "Bad x-amz-copy-source"))?;
    let source = source.strip_prefix('/').unwrap_or(&source);
    let Some((bucket, source_key)) = source.split_once('/') else {
        return Err(S3Error::bad_request(
            "InvalidArgument",
            "Bad x-amz-copy-source",
        ));
    };
    if bucket != state.bucket {
        return Err(no_such_bucket());
    }
    let mut data = lock(&state.data);
    let mut object = data
        .objects
        .get(source_key)
        .cloned()
        .ok_or_else(no_such_key)?;
    check_write_preconditions(headers, data.objects.get(key))?;
    object.modified = now();
    if header_str(headers, METADATA_DIRECTIVE) == Some("REPLACE") {
        object.headers = stored_headers(headers);
    }
    let mut xml = Xml::new("CopyObjectResult");
    xml.text("LastModified", &rfc3339(object.modified))
        .text("ETag", &object.etag);
    data.objects.insert(key.to_owned(), object);
    Ok(xml_response(StatusCode::OK, xml.finish("CopyObjectResult")))
}

/// The request headers S3 keeps with an object and sends back with it: `Content-Type` (by
/// default `binary/octet-stream`), `Cache-Control`, `Content-Disposition`, `Content-Encoding`,
/// `Content-Language` and user metadata (`x-amz-meta-*`).
fn stored_headers(request: &HeaderMap) -> HeaderMap {
    const KEPT: [HeaderName; 4] = [
        CACHE_CONTROL,
        CONTENT_DISPOSITION,
        CONTENT_ENCODING,
        CONTENT_LANGUAGE,
    ];
    let mut stored = HeaderMap::new();
    let content_type = request
        .get(CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static(DEFAULT_CONTENT_TYPE));
    stored.insert(CONTENT_TYPE, content_type);
    for (name, value) in request {
        if KEPT.contains(name) || name.as_str().starts_with(USER_METADATA) {
            stored.insert(name.clone(), value.clone());
        }
    }
    stored
}

/// Conditional writes: `If-None-Match: *` fails when the key exists, `If-Match` when its ETag
/// differs (and, as on S3, with 404 when it does not exist).
fn check_write_preconditions(
    headers: &HeaderMap,
    existing: Option<&Object>,
) -> Result<(), S3Error> {
    if let Some(value) = header_str(headers, &IF_NONE_MATCH) {
        if value.trim() == "*" && existing.is_some() {
            return Err(precondition_failed());
        }
    }
    if let Some(value) = header_str(headers, &IF_MATCH) {
        let existing = existing.ok_or_else(no_such_key)?;
        if !etag_matches(value, &existing.etag) {
            return Err(precondition_failed());
        }
    }
    Ok(())
}

/// Whether an `If-Match`/`If-None-Match` list names `etag` (quotes and `W/` ignored) or is `*`.
fn etag_matches(list: &str, etag: &str) -> bool {
    list.split(',').map(str::trim).any(|candidate| {
        candidate == "*"
            || candidate.trim_start_matches("W/").trim_matches('"') == etag.trim_matches('"')
    })
}

fn header_str(headers: &HeaderMap, name: impl AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// GetObject, or HeadObject (the same headers, no body).
fn get_object(
    state: &State,
    key: &str,
    headers: &HeaderMap,
    head: bool,
    record: &mut S3Request,
) -> Reply {
    let object = lock(&state.data)
        .objects
        .get(key)
        .cloned()
        .ok_or_else(no_such_key)?;
    match read_precondition(headers, &object) {
        Some(StatusCode::NOT_MODIFIED) => {
            return Ok(object_headers(empty(StatusCode::NOT_MODIFIED), &object))
        }
        Some(_) => return Err(precondition_failed()),
        None => {}
    }
    let size = object.bytes.len() as u64;
    let range = match header_str(headers, &RANGE).map(|r| ByteRange::parse(r, size)) {
        None | Some(ByteRange::Ignored) => None,
        Some(ByteRange::Unsatisfiable) => {
            let mut error = S3Error::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "InvalidRange",
                "The requested range is not satisfiable",
            );
            error.header = Some((CONTENT_RANGE, value(format!("bytes */{size}"))));
            return Err(error);
        }
        Some(ByteRange::Satisfiable(range)) => Some(range),
    };
    let (status, body) = match &range {
        Some(r) => (
            StatusCode::PARTIAL_CONTENT,
            object.bytes.slice(r.start as usize..r.end as usize),
        ),
        None => (StatusCode::OK, object.bytes.clone()),
    };
    let length = body.len() as u64;
    let mut response = if head {
        empty(status)
    } else {
        record.body_bytes = length;
        Response::new(Full::new(body))
    };
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    headers.extend(object.headers.clone());
    headers.insert("accept-ranges", HeaderValue::from_static("bytes"));
    if let Some(r) = range {
        let content_range = format!("bytes {}-{}/{size}", r.start, r.end - 1);
        headers.insert(CONTENT_RANGE, value(content_range));
    }
    Ok(object_headers(response, &object))
}

/// The outcome of conditional read headers, in RFC 9110's order: 412, 304 or go ahead (`None`).
fn read_precondition(headers: &HeaderMap, object: &Object) -> Option<StatusCode> {
    if let Some(list) = header_str(headers, &IF_MATCH) {
        if !etag_matches(list, &object.etag) {
            return Some(StatusCode::PRECONDITION_FAILED);
        }
    } else if let Some(date) = header_str(headers, &IF_UNMODIFIED_SINCE).and_then(parse_http_date) {
        if object.modified > date {
            return Some(StatusCode::PRECONDITION_FAILED);
        }
    }
    if let Some(list) = header_str(headers, &IF_NONE_MATCH) {
        if etag_matches(list, &object.etag) {
            return Some(StatusCode::NOT_MODIFIED);
        }
    } else if let Some(date) = header_str(headers, &IF_MODIFIED_SINCE).and_then(parse_http_date) {
        if object.modified <= date {
            return Some(StatusCode::NOT_MODIFIED);
        }
    }
    None
}

/// A `Range` header resolved against an object's size.
#[derive(Debug, PartialEq, Eq)]
enum ByteRange {
    /// Absent from S3's point of view (malformed, or several ranges): the whole object.
    Ignored,
    Unsatisfiable,
    Satisfiable(Range<u64>),
}

impl ByteRange {
    /// `bytes=a-b`, `bytes=a-` or `bytes=-n`.
    fn parse(header: &str, size: u64) -> ByteRange {
        let Some(spec) = header.trim().strip_prefix("bytes=") else {
            return ByteRange::Ignored;
        };
        if spec.contains(',') {
            return ByteRange::Ignored;
        }
        let Some((first, last)) = spec.split_once('-') else {
            return ByteRange::Ignored;
        };
        let (first, last) = (first.trim(), last.trim());
        if first.is_empty() {
            return match last.parse::<u64>() {
                Ok(0) => ByteRange::Unsatisfiable,
                Ok(_) if size == 0 => ByteRange::Unsatisfiable,
                Ok(n) => ByteRange::Satisfiable(size - n.min(size)..size),
                Err(_) => ByteRange::Ignored,
            };
        }
        let Ok(first) = first.parse::<u64>() else {
            return ByteRange::Ignored;
        };
        let end = if last.is_empty() {
            size
        } else {
            match last.parse::<u64>() {
                Ok(last) if last >= first => last.saturating_add(1).min(size),
                _ => return ByteRange::Ignored,
            }
        };
        if first >= size {
            return ByteRange::Unsatisfiable;
        }
        ByteRange::Satisfiable(first..end)
    }
}

fn object_headers(mut response: Response<Full<Bytes>>, object: &Object) -> Response<Full<Bytes>> {
    let headers = response.headers_mut();
    headers.insert(LAST_MODIFIED, value(rfc1123(object.modified)));
    with_etag(response, &object.etag)
}

/// ListObjectsV2.
fn list_objects(state: &State, q: &Query) -> Reply {
    if q.get("list-type") != Some("2") {
        return Err(S3Error::new(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "Only ListObjectsV2 (list-type=2) is implemented",
        ));
    }
    let params = ListParams::parse(q)?;
    let (entries, truncated) = {
        let data = lock(&state.data);
        params.entries(&data.objects)
    };
    let mut xml = Xml::new("ListBucketResult");
    xml.text("Name", &state.bucket)
        .text("Prefix", &params.prefix)
        .text("MaxKeys", &params.max_keys.to_string())
        .text("KeyCount", &entries.len().to_string())
        .text("IsTruncated", &truncated.to_string());
    if let Some(delimiter) = &params.delimiter {
        xml.text("Delimiter", delimiter);
    }
    if let Some(start_after) = &params.start_after {
        xml.text("StartAfter", start_after);
    }
    if let Some(token) = q.get("continuation-token") {
        xml.text("ContinuationToken", token);
    }
    if let (true, Some(last)) = (truncated, entries.last()) {
        xml.text("NextContinuationToken", &last.token());
    }
    for entry in &entries {
        if let Entry::Object(key, object) = entry {
            xml.open("Contents")
                .text("Key", key)
                .text("LastModified", &rfc3339(object.modified))
                .text("ETag", &object.etag)
                .text("Size", &object.bytes.len().to_string())
                .text("StorageClass", "STANDARD")
                .close("Contents");
        }
    }
    for entry in &entries {
        if let Entry::Prefix(prefix) = entry {
            xml.open("CommonPrefixes")
                .text("Prefix", prefix)
                .close("CommonPrefixes");
        }
    }
    Ok(xml_response(StatusCode::OK, xml.finish("ListBucketResult")))
}

struct ListParams {
    prefix: String,
    delimiter: Option<String>,
    max_keys: usize,
    start_after: Option<String>,
    resume: Option<Resume>,
}

/// Where a continuation token resumes: after this key, or after every key under this common
/// prefix.
enum Resume {
    Key(String),
    Prefix(String),
}

enum Entry {
    Object(String, Object),
    Prefix(String),
}

impl Entry {
    /// The opaque continuation token that resumes after this entry.
    fn token(&self) -> String {
        match self {
            Entry::Object(key, _) => hex::encode(format!("k{key}")),
            Entry::Prefix(prefix) => hex::encode(format!("p{prefix}")),
        }
    }
}

impl ListParams {
    fn parse(q: &Query) -> Result<ListParams, S3Error> {
        let max_keys = match q.get("max-keys") {
            None => MAX_KEYS,
            Some(n) => n
                .parse::<usize>()
                .map_err(|_| S3Error::bad_request("InvalidArgument", "Invalid max-keys"))?
                .min(MAX_KEYS),
        };
        let resume = q
            .get("continuation-token")
            .map(|token| {
                let token = hex::decode(token)
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok());
                match token.as_deref().map(|t| t.split_at_checked(1)) {
                    Some(Some(("k", key))) => Ok(Resume::Key(key.to_owned())),
                    Some(Some(("p", prefix))) => Ok(Resume::Prefix(prefix.to_owned())),
                    _ => Err(S3Error::bad_request(
                        "InvalidArgument",
                        "The continuation token provided is incorrect",
                    )),
                }
            })
            .transpose()?;
        Ok(ListParams {
            prefix: q.get("prefix").unwrap_or("").to_owned(),
            delimiter: q
                .get("delimiter")
                .filter(|d| !d.is_empty())
                .map(str::to_owned),
            max_keys,
            start_after: q.get("start-after").map(str::to_owned),
            resume,
        })
    }

    /// One page of objects and common prefixes in key order; whether more follow.
    fn entries(&self, objects: &BTreeMap<String, Object>) -> (Vec<Entry>, bool) {
        let mut entries = Vec::new();
        let candidates = objects
            .range(self.prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&self.prefix))
            .filter(|(key, _)| self.after_start(key));
        for (key, object) in candidates {
            let entry = match self.common_prefix(key) {
                Some(prefix) => {
                    if matches!(entries.last(), Some(Entry::Prefix(last)) if *last == prefix) {
                        continue;
                    }
                    Entry::Prefix(prefix)
                }
                None => Entry::Object(key.clone(), object.clone()),
            };
            if entries.len() == self.max_keys {
                return (entries, self.max_keys > 0);
            }
            entries.push(entry);
        }
        (entries, false)
    }

    fn after_start(&self, key: &str) -> bool {
        if self.start_after.as_deref().is_some_and(|s| key <= s) {
            return false;
        }
        match &self.resume {
            Some(Resume::Key(last)) => key > last.as_str(),
            Some(Resume::Prefix(last)) => key > last.as_str() && !key.starts_with(last.as_str()),
            None => true,
        }
    }

    /// With a delimiter, the prefix of `key` up to and including the first delimiter after
    /// the listed prefix.
    fn common_prefix(&self, key: &str) -> Option<String> {
        let delimiter = self.delimiter.as_deref()?;
        let rest = &key[self.prefix.len()..];
        let end = self.prefix.len() + rest.find(delimiter)? + delimiter.len();
        Some(key[..end].to_owned())
    }
}

/// DeleteObjects: `<Delete><Object><Key>…</Key></Object>…</Delete>`.
fn delete_objects(state: &State, body: &[u8]) -> Reply {
    let body = std::str::from_utf8(body).map_err(|_| malformed_xml())?;
    let keys = elements(body, "Object")
        .into_iter()
        .map(|object| first_element(object, "Key").and_then(unescape))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(malformed_xml)?;
    let quiet = first_element(body, "Quiet").is_some_and(|q| q.trim() == "true");
    let mut data = lock(&state.data);
    let mut xml = Xml::new("DeleteResult");
    for key in keys {
        data.objects.remove(&key);
        if !quiet {
            xml.open("Deleted").text("Key", &key).close("Deleted");
        }
    }
    Ok(xml_response(StatusCode::OK, xml.finish("DeleteResult")))
}

fn create_upload(state: &State, key: &str, headers: &HeaderMap) -> Reply {
    let mut data = lock(&state.data);
    data.uploads_created += 1;
    let upload_id = short_hash(
        format!(
            "{}/{key}/{}/{}",
            state.endpoint,
            data.uploads_created,
            nanos()
        )
        .as_bytes(),
    );
    data.uploads.insert(
        upload_id.clone(),
        Upload {
            key: key.to_owned(),
            headers: stored_headers(headers),
            initiated: now(),
            parts: BTreeMap::new(),
        },
    );
    let mut xml = Xml::new("InitiateMultipartUploadResult");
    xml.text("Bucket", &state.bucket)
        .text("Key", key)
        .text("UploadId", &upload_id);
    Ok(xml_response(
        StatusCode::OK,
        xml.finish("InitiateMultipartUploadResult"),
    ))
}

/// The upload `uploadId` names, which must be for `key`.
fn upload_mut<'a>(data: &'a mut Data, key: &str, q: &Query) -> Result<&'a mut Upload, S3Error> {
    q.get("uploadId")
        .and_then(|id| data.uploads.get_mut(id))
        .filter(|upload| upload.key == key)
        .ok_or_else(no_such_upload)
}

fn upload_part(state: &State, key: &str, q: &Query, headers: &HeaderMap, body: Bytes) -> Reply {
    if headers.contains_key(COPY_SOURCE) {
        return Err(S3Error::new(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "UploadPartCopy is not implemented",
        ));
    }
    let number = q
        .get("partNumber")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| (1..=MAX_PART_NUMBER).contains(n))
        .ok_or_else(|| {
            S3Error::bad_request(
                "InvalidArgument",
                "Part number must be an integer between 1 and 10000, inclusive",
            )
        })?;
    let mut data = lock(&state.data);
    let upload = upload_mut(&mut data, key, q)?;
    let etag = format!("\"{}\"", short_hash(&body));
    upload.parts.insert(
        number,
        Part {
            bytes: body,
            etag: etag.clone(),
        },
    );
    Ok(with_etag(empty(StatusCode::OK), &etag))
}

/// CompleteMultipartUpload: the listed parts, ascending, each with the ETag UploadPart gave.
fn complete_upload(state: &State, key: &str, q: &Query, headers: &HeaderMap, body: &[u8]) -> Reply {
    let id = q.get("uploadId").unwrap_or_default();
    let min_part_size = state.min_part_size.load(Ordering::SeqCst);
    let mut data = lock(&state.data);
    if let Some((done, etag)) = data.completed.get(id) {
        if done == key {
            return Ok(complete_result(state, key, etag));
        }
    }
    let listed = parse_complete_body(body).ok_or_else(malformed_xml)?;
    let upload = upload_mut(&mut data, key, q)?;
    let (bytes, etags) = assemble(upload, &listed, min_part_size)?;
    let stored = upload.headers.clone();
    check_write_preconditions(headers, data.objects.get(key))?;
    data.uploads.remove(id);
    let mut object = Object::new(Bytes::from(bytes), stored);
    object.etag = format!("\"{}-{}\"", short_hash(etags.as_bytes()), listed.len());
    let response = complete_result(state, key, &object.etag);
    data.completed
        .insert(id.to_owned(), (key.to_owned(), object.etag.clone()));
    data.objects.insert(key.to_owned(), object);
    Ok(response)
}

/// The object's bytes from the listed (number, ETag) parts, and their ETags concatenated.
fn assemble(
    upload: &Upload,
    listed: &[(u32, String)],
    min_part_size: u64,
) -> Result<(Vec<u8>, String), S3Error> {
    let mut bytes = Vec::new();
    let mut etags = String::new();
    for (i, (number, etag)) in listed.iter().enumerate() {
        if i > 0 && *number <= listed[i - 1].0 {
            return Err(S3Error::bad_request(
                "InvalidPartOrder",
                "The list of parts was not in ascending order.",
            ));
        }
        let part = upload
            .parts
            .get(number)
            .filter(|part| etag_matches(etag, &part.etag))
            .ok_or_else(|| {
                S3Error::bad_request(
                    "InvalidPart",
                    "One or more of the specified parts could not be found.",
                )
            })?;
        if i + 1 < listed.len() && (part.bytes.len() as u64) < min_part_size {
            return Err(S3Error::bad_request(
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed object size.",
            ));
        }
        bytes.extend_from_slice(&part.bytes);
        etags.push_str(&part.etag);
    }
    Ok((bytes, etags))
}

fn complete_result(state: &State, key: &str, etag: &str) -> Response<Full<Bytes>> {
    let location = format!("{}/{}/{key}", state.endpoint, state.bucket);
    let mut xml = Xml::new("CompleteMultipartUploadResult");
    xml.text("Location", &location)
        .text("Bucket", &state.bucket)
        .text("Key", key)
        .text("ETag", etag);
    xml_response(StatusCode::OK, xml.finish("CompleteMultipartUploadResult"))
}

/// `<CompleteMultipartUpload><Part><PartNumber>n</PartNumber><ETag>e</ETag></Part>…`: the
/// (number, ETag) pairs in listed order; at least one.
fn parse_complete_body(body: &[u8]) -> Option<Vec<(u32, String)>> {
    let body = std::str::from_utf8(body).ok()?;
    let parts = elements(body, "Part")
        .into_iter()
        .map(|part| {
            let number = unescape(first_element(part, "PartNumber")?)?
                .trim()
                .parse()
                .ok()?;
            let etag = unescape(first_element(part, "ETag")?)?;
            Some((number, etag))
        })
        .collect::<Option<Vec<_>>>()?;
    (!parts.is_empty()).then_some(parts)
}

fn abort_upload(state: &State, key: &str, q: &Query) -> Reply {
    let mut data = lock(&state.data);
    upload_mut(&mut data, key, q)?;
    data.uploads.remove(q.get("uploadId").unwrap_or_default());
    Ok(empty(StatusCode::NO_CONTENT))
}

/// ListMultipartUploads (one page: every upload under `prefix`, by key then start).
fn list_uploads(state: &State, q: &Query) -> Reply {
    let prefix = q.get("prefix").unwrap_or("");
    let data = lock(&state.data);
    let mut uploads: Vec<_> = data
        .uploads
        .iter()
        .filter(|(_, upload)| upload.key.starts_with(prefix))
        .collect();
    uploads.sort_by(|a, b| (&a.1.key, a.1.initiated).cmp(&(&b.1.key, b.1.initiated)));
    let mut xml = Xml::new("ListMultipartUploadsResult");
    xml.text("Bucket", &state.bucket)
        .text("KeyMarker", "")
        .text("UploadIdMarker", "")
        .text("Prefix", prefix)
        .text("MaxUploads", &MAX_KEYS.to_string())
        .text("IsTruncated", "false");
    for (id, upload) in uploads {
        xml.open("Upload")
            .text("Key", &upload.key)
            .text("UploadId", id)
            .text("Initiated", &rfc3339(upload.initiated))
            .text("StorageClass", "STANDARD")
            .close("Upload");
    }
    Ok(xml_response(
        StatusCode::OK,
        xml.finish("ListMultipartUploadsResult"),
    ))
}

/// An S3 error: status and `<Error><Code>…</Code><Message>…</Message></Error>`.
#[derive(Debug)]
struct S3Error {
    status: StatusCode,
    code: &'static str,
    message: String,
    header: Option<(HeaderName, HeaderValue)>,
}

impl S3Error {
    fn new(status: StatusCode, code: &'static str, message: &str) -> S3Error {
        S3Error {
            status,
            code,
            message: message.to_owned(),
            header: None,
        }
    }

    fn bad_request(code: &'static str, message: &str) -> S3Error {
        S3Error::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn into_response(self, resource: &str) -> Response<Full<Bytes>> {
        let mut xml = Xml::bare("Error");
        xml.text("Code", self.code)
            .text("Message", &self.message)
            .text("Resource", resource);
        let mut response = xml_response(self.status, xml.finish("Error"));
        if let Some((name, value)) = self.header {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

fn no_such_bucket() -> S3Error {
    S3Error::new(
        StatusCode::NOT_FOUND,
        "NoSuchBucket",
        "The specified bucket does not exist",
    )
}

fn no_such_key() -> S3Error {
    S3Error::new(
        StatusCode::NOT_FOUND,
        "NoSuchKey",
        "The specified key does not exist.",
    )
}

fn no_such_upload() -> S3Error {
    S3Error::new(
        StatusCode::NOT_FOUND,
        "NoSuchUpload",
        "The specified upload does not exist. The upload ID may be invalid, or the upload may \
         have been aborted or completed.",
    )
}

fn precondition_failed() -> S3Error {
    S3Error::new(
        StatusCode::PRECONDITION_FAILED,
        "PreconditionFailed",
        "At least one of the pre-conditions you specified did not hold",
    )
}

fn malformed_xml() -> S3Error {
    S3Error::bad_request(
        "MalformedXML",
        "The XML you provided was not well-formed or did not validate against our published schema",
    )
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

fn xml_response(status: StatusCode, xml: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(xml)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    response
}

fn with_etag(mut response: Response<Full<Bytes>>, etag: &str) -> Response<Full<Bytes>> {
    response.headers_mut().insert(ETAG, value(etag.to_owned()));
    response
}

/// A header value the fake made itself (ASCII by construction).
fn value(s: String) -> HeaderValue {
    HeaderValue::try_from(s).expect("the fake's own header values are ASCII")
}

/// An XML document written by hand, S3 style.
struct Xml(String);

impl Xml {
    /// A document whose root element is in S3's namespace.
    fn new(root: &str) -> Xml {
        Xml(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root} xmlns=\"{XMLNS}\">"
        ))
    }

    /// A document whose root element has no namespace (`Error`).
    fn bare(root: &str) -> Xml {
        Xml(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root}>"
        ))
    }

    fn open(&mut self, name: &str) -> &mut Xml {
        self.0.push_str(&format!("<{name}>"));
        self
    }

    fn close(&mut self, name: &str) -> &mut Xml {
        self.0.push_str(&format!("</{name}>"));
        self
    }

    /// `<name>text</name>`, escaped.
    fn text(&mut self, name: &str, text: &str) -> &mut Xml {
        self.0
            .push_str(&format!("<{name}>{}</{name}>", escape(text)));
        self
    }

    fn finish(mut self, root: &str) -> String {
        self.close(root);
        self.0
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Undoes XML escaping: the five named entities and numeric references.
fn unescape(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let semi = rest[amp..].find(';')? + amp;
        let entity = &rest[amp + 1..semi];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = match entity
                    .strip_prefix("#x")
                    .or_else(|| entity.strip_prefix("#X"))
                {
                    Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                    None => entity.strip_prefix('#')?.parse().ok()?,
                };
                char::from_u32(code)?
            }
        };
        out.push(c);
        rest = &rest[semi + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// The contents of every `<tag>…</tag>` in `xml` (no attributes, no nesting of the same tag).
fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let inner = &rest[start + open.len()..];
        let Some(end) = inner.find(&close) else {
            break;
        };
        found.push(&inner[..end]);
        rest = &inner[end + close.len()..];
    }
    found
}

fn first_element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    elements(xml, tag).into_iter().next()
}

fn sha256(bytes: &[u8]) -> ring::digest::Digest {
    ring::digest::digest(&ring::digest::SHA256, bytes)
}

/// 32 hex digits of SHA-256: ETags and upload ids.
fn short_hash(bytes: &[u8]) -> String {
    hex::encode(&sha256(bytes).as_ref()[..16])
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Sun, 06 Nov 1994 08:49:37 GMT`, as in `Last-Modified`.
fn rfc1123(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let (y, m, d) = civil_from_days(days);
    let weekday = WEEKDAYS[(days + 4).rem_euclid(7) as usize];
    let month = MONTHS[(m - 1) as usize];
    let (hh, mm, ss) = clock(secs);
    format!("{weekday}, {d:02} {month} {y} {hh:02}:{mm:02}:{ss:02} GMT")
}

/// `1994-11-06T08:49:37.000Z`, as in list results.
fn rfc3339(secs: u64) -> String {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let (hh, mm, ss) = clock(secs);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.000Z")
}

fn clock(secs: u64) -> (u64, u64, u64) {
    let s = secs % 86_400;
    (s / 3600, s / 60 % 60, s % 60)
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) into seconds since the epoch.
fn parse_http_date(date: &str) -> Option<u64> {
    let mut fields = date.split_whitespace();
    let _weekday = fields.next()?;
    let day: i64 = fields.next()?.parse().ok()?;
    let month_name = fields.next()?;
    let month = MONTHS.iter().position(|m| *m == month_name)? as i64 + 1;
    let year: i64 = fields.next()?.parse().ok()?;
    let mut clock = fields.next()?.split(':').map(|f| f.parse::<i64>().ok());
    let (hh, mm, ss) = (clock.next()??, clock.next()??, clock.next()??);
    if fields.next()? != "GMT" {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + hh * 3600 + mm * 60 + ss;
    u64::try_from(secs).ok()
}

/// Howard Hinnant's `civil_from_days`: (year, month 1..=12, day 1..=31).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Howard Hinnant's `days_from_civil`.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(rfc1123(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(rfc3339(784_111_777), "1994-11-06T08:49:37.000Z");
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn ranges() {
        use ByteRange::*;
        assert_eq!(ByteRange::parse("bytes=2-5", 10), Satisfiable(2..6));
        assert_eq!(ByteRange::parse("bytes=7-", 10), Satisfiable(7..10));
        assert_eq!(ByteRange::parse("bytes=-3", 10), Satisfiable(7..10));
        assert_eq!(ByteRange::parse("bytes=-30", 10), Satisfiable(0..10));
        assert_eq!(ByteRange::parse("bytes=5-100", 10), Satisfiable(5..10));
        assert_eq!(ByteRange::parse("bytes=10-", 10), Unsatisfiable);
        assert_eq!(ByteRange::parse("bytes=5-2", 10), Ignored);
        assert_eq!(ByteRange::parse("bytes=0-1,4-5", 10), Ignored);
    }

    #[test]
    fn xml_escaping() {
        let text = "a&b<c>\"d'é";
        assert_eq!(unescape(&escape(text)).as_deref(), Some(text));
        assert_eq!(unescape("&#34;x&#x22;").as_deref(), Some("\"x\""));
        assert_eq!(unescape("&bogus;"), None);
    }
}
