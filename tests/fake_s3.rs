//! Self-test of the in-process fake S3 (`outpost_tests::s3::FakeS3`), driven with plain hyper
//! HTTP/1 requests carrying a dummy SigV4 `Authorization` header: objects, ranges, conditional
//! writes, listing, multipart uploads, bulk delete, credentials, faults and the test controls;
//! then with object_store's own S3 client, whose XML and header parsing the fake must satisfy.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::client::{
    ClientOptions, HttpClient, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody,
    HttpResponse, HttpResponseBody, HttpService,
};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, RetryConfig,
};
use outpost_tests::s3::{FakeS3, MIN_PART_SIZE};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tokio::net::TcpStream;

const BUCKET: &str = "outpost";

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap()
    }

    /// The text of every `<tag>` in the body, in order.
    fn all(&self, tag: &str) -> Vec<String> {
        let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
        self.text()
            .split(&open)
            .skip(1)
            .map(|s| s.split(&close).next().unwrap().to_owned())
            .collect()
    }

    fn one(&self, tag: &str) -> String {
        self.all(tag).into_iter().next().unwrap_or_default()
    }
}

fn auth(key_id: &str) -> String {
    let scope = "20250101/us-east-1/s3/aws4_request";
    format!("AWS4-HMAC-SHA256 Credential={key_id}/{scope}, SignedHeaders=host, Signature=00")
}

/// One request on a fresh connection; `Authorization` is added unless given in `headers`.
async fn try_send(
    s3: &FakeS3,
    method: Method,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(s3.addr()).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(target)
        .header("host", s3.addr().to_string());
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("authorization"))
    {
        request = request.header("authorization", auth(s3.access_key_id()));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::copy_from_slice(body)))?)
        .await?;
    let (parts, body) = response.into_parts();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await?.to_bytes(),
    })
}

async fn send(
    s3: &FakeS3,
    method: Method,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    try_send(s3, method, target, headers, body).await.unwrap()
}

/// PutObject; `key` is percent-encoded (but for `/`) like object_store does.
async fn put(s3: &FakeS3, key: &str, body: &[u8]) -> Reply {
    const KEY: &AsciiSet = &NON_ALPHANUMERIC.remove(b'/');
    let target = format!("/{BUCKET}/{}", utf8_percent_encode(key, KEY));
    send(s3, Method::PUT, &target, &[], body).await
}

async fn get(s3: &FakeS3, target: &str, headers: &[(&str, &str)]) -> Reply {
    send(s3, Method::GET, target, headers, b"").await
}

#[tokio::test]
async fn objects_put_get_head_delete() {
    let s3 = FakeS3::start(BUCKET).await;
    assert!(s3.endpoint().starts_with("http://127.0.0.1:"));
    let reply = send(
        &s3,
        Method::PUT,
        "/outpost/blobs/sha256%3Aab/a%20b%2Bc",
        &[
            ("content-type", "application/json"),
            ("x-amz-meta-media-type", "a/b"),
        ],
        b"hello world",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let etag = reply.header("etag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert_eq!(s3.keys(""), ["blobs/sha256:ab/a b+c"]);

    let reply = get(&s3, "/outpost/blobs/sha256:ab/a%20b%2Bc", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "hello world");
    assert_eq!(reply.header("etag"), etag);
    assert_eq!(reply.header("content-type"), "application/json");
    assert_eq!(reply.header("x-amz-meta-media-type"), "a/b");
    assert_eq!(reply.header("content-length"), "11");
    assert!(reply.header("last-modified").ends_with(" GMT"));

    let reply = send(
        &s3,
        Method::HEAD,
        "/outpost/blobs/sha256:ab/a%20b%2Bc",
        &[],
        b"",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-length"), "11");
    assert_eq!(reply.header("etag"), etag);
    assert!(reply.body.is_empty());

    let copy = [("x-amz-copy-source", "/outpost/blobs/sha256%3Aab/a%20b%2Bc")];
    let reply = send(&s3, Method::PUT, "/outpost/copy", &copy, b"").await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = get(&s3, "/outpost/copy", &[]).await;
    assert_eq!(reply.body, "hello world");
    assert_eq!(reply.header("x-amz-meta-media-type"), "a/b");
    assert!(s3.remove("copy"));

    let reply = get(
        &s3,
        "/outpost/blobs/sha256:ab/a%20b%2Bc",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_MODIFIED);
    let reply = get(
        &s3,
        "/outpost/blobs/sha256:ab/a%20b%2Bc",
        &[("if-match", "\"other\"")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::PRECONDITION_FAILED);

    for _ in 0..2 {
        let reply = send(
            &s3,
            Method::DELETE,
            "/outpost/blobs/sha256:ab/a%20b%2Bc",
            &[],
            b"",
        )
        .await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
    }
    let reply = get(&s3, "/outpost/blobs/sha256:ab/a%20b%2Bc", &[]).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.one("Code"), "NoSuchKey");
    let reply = send(&s3, Method::HEAD, "/outpost/missing", &[], b"").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn ranges() {
    let s3 = FakeS3::start(BUCKET).await;
    put(&s3, "k", b"0123456789").await;
    for (range, content_range, body) in [
        ("bytes=2-5", "bytes 2-5/10", "2345"),
        ("bytes=7-", "bytes 7-9/10", "789"),
        ("bytes=-3", "bytes 7-9/10", "789"),
        ("bytes=5-100", "bytes 5-9/10", "56789"),
    ] {
        let reply = get(&s3, "/outpost/k", &[("range", range)]).await;
        assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(reply.header("content-range"), content_range);
        assert_eq!(reply.body, body);
    }
    let reply = get(&s3, "/outpost/k", &[("range", "bytes=10-")]).await;
    assert_eq!(reply.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(reply.one("Code"), "InvalidRange");
    assert_eq!(reply.header("content-range"), "bytes */10");
}

#[tokio::test]
async fn conditional_puts() {
    let s3 = FakeS3::start(BUCKET).await;
    let create = [("if-none-match", "*")];
    let first = send(&s3, Method::PUT, "/outpost/k", &create, b"one").await;
    assert_eq!(first.status, StatusCode::OK);
    let again = send(&s3, Method::PUT, "/outpost/k", &create, b"two").await;
    assert_eq!(again.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(again.one("Code"), "PreconditionFailed");
    assert_eq!(s3.object("k").unwrap(), "one");

    let stale = send(
        &s3,
        Method::PUT,
        "/outpost/k",
        &[("if-match", "\"x\"")],
        b"two",
    )
    .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    let etag = first.header("etag");
    let update = send(
        &s3,
        Method::PUT,
        "/outpost/k",
        &[("if-match", etag)],
        b"two",
    )
    .await;
    assert_eq!(update.status, StatusCode::OK);
    assert_eq!(s3.object("k").unwrap(), "two");
    let absent = send(
        &s3,
        Method::PUT,
        "/outpost/new",
        &[("if-match", etag)],
        b"x",
    )
    .await;
    assert_eq!(absent.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn listing() {
    let s3 = FakeS3::start(BUCKET).await;
    for key in ["a/1", "a/2", "a/b/3", "a/b/4", "a/c", "b/1", "x&y<z"] {
        put(&s3, key, key.as_bytes()).await;
    }
    let reply = get(&s3, "/outpost?list-type=2", &[]).await;
    assert_eq!(
        reply.all("Key"),
        ["a/1", "a/2", "a/b/3", "a/b/4", "a/c", "b/1", "x&amp;y&lt;z"]
    );
    assert_eq!(reply.one("KeyCount"), "7");
    assert_eq!(reply.one("IsTruncated"), "false");
    assert_eq!(reply.all("Size")[0], "3");
    assert!(reply.one("LastModified").ends_with(".000Z"));
    assert_eq!(reply.one("StorageClass"), "STANDARD");

    // Pagination under a prefix.
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let mut target = "/outpost?list-type=2&prefix=a%2F&max-keys=2".to_owned();
        if let Some(token) = &token {
            target.push_str(&format!("&continuation-token={token}"));
        }
        let reply = get(&s3, &target, &[]).await;
        assert!(reply.all("Key").len() <= 2);
        keys.extend(reply.all("Key"));
        if reply.one("IsTruncated") == "false" {
            break;
        }
        token = Some(reply.one("NextContinuationToken"));
    }
    assert_eq!(keys, ["a/1", "a/2", "a/b/3", "a/b/4", "a/c"]);

    // Delimiter: common prefixes count against max-keys and are not repeated across pages.
    let reply = get(&s3, "/outpost?list-type=2&delimiter=%2F&prefix=a%2F", &[]).await;
    assert_eq!(reply.all("Key"), ["a/1", "a/2", "a/c"]);
    assert_eq!(reply.all("Prefix"), ["a/", "a/b/"]);
    assert_eq!(reply.one("KeyCount"), "4");
    let page = get(
        &s3,
        "/outpost?list-type=2&delimiter=/&prefix=a/&max-keys=3",
        &[],
    )
    .await;
    assert_eq!(page.all("Key"), ["a/1", "a/2"]);
    assert_eq!(page.one("IsTruncated"), "true");
    let target = format!(
        "/outpost?list-type=2&delimiter=/&prefix=a/&continuation-token={}",
        page.one("NextContinuationToken")
    );
    let rest = get(&s3, &target, &[]).await;
    assert_eq!(rest.all("Key"), ["a/c"]);
    assert_eq!(rest.all("Prefix"), ["a/"]);

    let reply = get(&s3, "/outpost?list-type=2&delimiter=/", &[]).await;
    assert_eq!(reply.all("Key"), ["x&amp;y&lt;z"]);
    assert_eq!(reply.all("Prefix"), ["", "a/", "b/"]);
    let reply = get(&s3, "/outpost?list-type=2&start-after=a%2Fc", &[]).await;
    assert_eq!(reply.all("Key"), ["b/1", "x&amp;y&lt;z"]);
    let reply = get(&s3, "/outpost?list-type=2&continuation-token=zz", &[]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn bulk_delete() {
    let s3 = FakeS3::start(BUCKET).await;
    put(&s3, "a&b", b"1").await;
    put(&s3, "c", b"2").await;
    put(&s3, "keep", b"3").await;
    let objects: String = ["a&amp;b", "c", "never"]
        .iter()
        .map(|key| format!("<Object><Key>{key}</Key></Object>"))
        .collect();
    let body =
        format!("<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">{objects}</Delete>");
    let reply = send(&s3, Method::POST, "/outpost?delete", &[], body.as_bytes()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.all("Key"), ["a&amp;b", "c", "never"]);
    assert_eq!(s3.keys(""), ["keep"]);
}

#[tokio::test]
async fn multipart_uploads() {
    let s3 = FakeS3::start(BUCKET).await;
    let create = send(&s3, Method::POST, "/outpost/big?uploads", &[], b"").await;
    assert_eq!(create.status, StatusCode::OK);
    assert_eq!(create.one("Bucket"), BUCKET);
    assert_eq!(create.one("Key"), "big");
    let id = create.one("UploadId");
    assert_eq!(s3.uploads_in_progress(), 1);

    let uploads = get(&s3, "/outpost?uploads&prefix=b", &[]).await;
    assert_eq!(uploads.all("UploadId"), [id.as_str()]);
    assert_eq!(uploads.one("Key"), "big");
    assert!(uploads.one("Initiated").ends_with('Z'));
    assert!(get(&s3, "/outpost?uploads&prefix=z", &[])
        .await
        .all("Upload")
        .is_empty());

    let mut etags = Vec::new();
    for (number, body) in [(2, &b"world"[..]), (1, &b"hello "[..])] {
        let target = format!("/outpost/big?partNumber={number}&uploadId={id}");
        let reply = send(&s3, Method::PUT, &target, &[], body).await;
        assert_eq!(reply.status, StatusCode::OK);
        etags.push((number, reply.header("etag").to_owned()));
    }
    etags.sort();
    let xml: String = etags
        .iter()
        .map(|(n, e)| {
            format!(
                "<Part><ETag>{}</ETag><PartNumber>{n}</PartNumber></Part>",
                e.replace('"', "&quot;")
            )
        })
        .collect();
    let xml = format!("<CompleteMultipartUpload>{xml}</CompleteMultipartUpload>");
    let complete = format!("/outpost/big?uploadId={id}");

    // S3's 5 MiB minimum for all parts but the last, then relaxed for the test.
    let reply = send(&s3, Method::POST, &complete, &[], xml.as_bytes()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.one("Code"), "EntityTooSmall");
    s3.set_min_part_size(0);
    let unknown = xml.replace("<PartNumber>1<", "<PartNumber>3<");
    let reply = send(&s3, Method::POST, &complete, &[], unknown.as_bytes()).await;
    assert_eq!(reply.one("Code"), "InvalidPart");
    let reply = send(&s3, Method::POST, &complete, &[], xml.as_bytes()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let etag = reply.one("ETag");
    assert!(etag.ends_with("-2&quot;"), "{etag}");
    assert_eq!(s3.object("big").unwrap(), "hello world");
    assert_eq!(s3.uploads_in_progress(), 0);
    // A retried completion gets the same answer, as on S3.
    let reply = send(&s3, Method::POST, &complete, &[], xml.as_bytes()).await;
    assert_eq!((reply.status, reply.one("ETag")), (StatusCode::OK, etag));

    // If-None-Match: * on completion, and abort.
    let id = send(&s3, Method::POST, "/outpost/big?uploads", &[], b"")
        .await
        .one("UploadId");
    let part = send(
        &s3,
        Method::PUT,
        &format!("/outpost/big?partNumber=1&uploadId={id}"),
        &[],
        b"x",
    )
    .await;
    let part = format!(
        "<Part><PartNumber>1</PartNumber><ETag>{}</ETag></Part>",
        part.header("etag")
    );
    let xml = format!("<CompleteMultipartUpload>{part}</CompleteMultipartUpload>");
    let complete = format!("/outpost/big?uploadId={id}");
    let reply = send(
        &s3,
        Method::POST,
        &complete,
        &[("if-none-match", "*")],
        xml.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(s3.object("big").unwrap(), "hello world");
    let reply = send(&s3, Method::DELETE, &complete, &[], b"").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(s3.uploads_in_progress(), 0);
    let reply = send(&s3, Method::DELETE, &complete, &[], b"").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.one("Code"), "NoSuchUpload");
    assert_eq!(MIN_PART_SIZE, 5 << 20);
}

#[tokio::test]
async fn credentials_and_buckets() {
    let s3 = FakeS3::start(BUCKET).await;
    let wrong = auth("AKIAWRONG");
    let reply = get(&s3, "/outpost/k", &[("authorization", &wrong)]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.one("Code"), "InvalidAccessKeyId");
    let reply = get(&s3, "/outpost/k", &[("authorization", "Bearer x")]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.one("Code"), "AccessDenied");
    let reply = get(&s3, "/elsewhere/k", &[]).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.one("Code"), "NoSuchBucket");
    let hash = [("x-amz-content-sha256", &"0".repeat(64)[..])];
    let reply = send(&s3, Method::PUT, "/outpost/k", &hash, b"x").await;
    assert_eq!(reply.one("Code"), "XAmzContentSHA256Mismatch");
    assert!(s3.keys("").is_empty());
}

#[tokio::test]
async fn faults() {
    let s3 = FakeS3::start(BUCKET).await;
    put(&s3, "k", b"v").await;
    s3.set_down(true);
    let reply = get(&s3, "/outpost/k", &[]).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.one("Code"), "SlowDown");
    s3.set_down(false);

    // Unreachable: new connections are closed, and an open one at its next request.
    let stream = TcpStream::connect(s3.addr()).await.unwrap();
    let (mut open, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = || {
        Request::get("/outpost/k")
            .header("authorization", auth(s3.access_key_id()))
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    let response = open.send_request(request()).await.unwrap();
    response.into_body().collect().await.unwrap();
    s3.set_unreachable(true);
    assert!(try_send(&s3, Method::GET, "/outpost/k", &[], b"")
        .await
        .is_err());
    assert!(open.send_request(request()).await.is_err());
    assert_eq!(s3.requests().last().unwrap().status, None);
    s3.set_unreachable(false);
    assert_eq!(get(&s3, "/outpost/k", &[]).await.status, StatusCode::OK);

    s3.set_delay(Duration::from_millis(200));
    let start = Instant::now();
    assert_eq!(get(&s3, "/outpost/k", &[]).await.body, "v");
    assert!(start.elapsed() >= Duration::from_millis(200));

    // Dropped: the port closes.
    let addr = s3.addr();
    drop(s3);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn controls() {
    let s3 = FakeS3::start(BUCKET).await;
    let etag = put(&s3, "blobs/a", b"good").await.header("etag").to_owned();
    s3.insert("blobs/b", "bb");
    s3.insert("other", "o");
    assert_eq!(s3.keys("blobs/"), ["blobs/a", "blobs/b"]);

    s3.overwrite("blobs/a", "evil");
    let reply = get(&s3, "/outpost/blobs/a", &[]).await;
    assert_eq!(
        (reply.body.as_ref(), reply.header("etag")),
        (&b"evil"[..], &etag[..])
    );
    get(&s3, "/outpost/blobs/a", &[("range", "bytes=1-2")]).await;
    get(&s3, "/outpost/other", &[]).await;
    send(&s3, Method::HEAD, "/outpost/blobs/b", &[], b"").await;

    assert_eq!(s3.count(Method::GET, "blobs/"), 2);
    assert_eq!(s3.count(Method::HEAD, ""), 1);
    assert_eq!(s3.count(Method::PUT, ""), 1);
    assert_eq!(s3.count_operation("GetObject"), 3);
    assert_eq!(s3.bytes_served("blobs/"), 6);
    assert_eq!(s3.bytes_served(""), 7);
    let last = s3.requests().pop().unwrap();
    assert_eq!(
        (last.operation, last.status),
        ("HeadObject", Some(StatusCode::OK))
    );

    s3.reset_counters();
    assert!(s3.requests().is_empty());
    assert!(s3.remove("blobs/b"));
    assert!(!s3.remove("blobs/b"));
    assert_eq!(s3.object("blobs/b"), None);
    assert_eq!(
        get(&s3, "/outpost/blobs/b", &[]).await.status,
        StatusCode::NOT_FOUND
    );
}

/// The plain-HTTP hyper client object_store talks through here (outpost's own lives in
/// `crates/shared`; this one keeps the fake's check independent of it).
#[derive(Debug)]
struct Connector;

type HyperClient = Client<HttpConnector, HttpRequestBody>;

#[derive(Debug)]
struct Service(HyperClient);

impl object_store::client::HttpConnector for Connector {
    fn connect(&self, _: &ClientOptions) -> object_store::Result<HttpClient> {
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(HttpClient::new(Service(client)))
    }
}

#[async_trait::async_trait]
impl HttpService for Service {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let response = self
            .0
            .request(request)
            .await
            .map_err(|e| HttpError::new(HttpErrorKind::Request, e))?;
        Ok(response.map(|body| {
            HttpResponseBody::new(body.map_err(|e| HttpError::new(HttpErrorKind::Interrupted, e)))
        }))
    }
}

fn amazon_s3(s3: &FakeS3) -> AmazonS3 {
    AmazonS3Builder::new()
        .with_endpoint(s3.endpoint())
        .with_region("us-east-1")
        .with_bucket_name(s3.bucket())
        .with_access_key_id(s3.access_key_id())
        .with_secret_access_key(s3.secret_access_key())
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .with_retry(RetryConfig {
            max_retries: 0,
            ..RetryConfig::default()
        })
        .with_http_connector(Connector)
        .build()
        .unwrap()
}

/// Seconds from `last_modified` to now: the fake's dates parse and are right.
fn age(last_modified: i64) -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    now.as_secs()
        .abs_diff(u64::try_from(last_modified).unwrap())
}

/// object_store's own S3 client against the fake: every call outpost makes parses.
#[tokio::test]
async fn object_store_client() {
    let s3 = FakeS3::start(BUCKET).await;
    let store = amazon_s3(&s3);
    let path = Path::from("blobs/sha256:ab/x y");
    let media_type = Attribute::Metadata("media-type".into());
    let options = PutOptions {
        attributes: Attributes::from_iter([(media_type.clone(), "a/b")]),
        ..PutOptions::default()
    };
    let payload = PutPayload::from_static(b"0123456789");
    let put = store.put_opts(&path, payload, options).await.unwrap();
    assert_eq!(s3.keys(""), ["blobs/sha256:ab/x y"]);
    assert_eq!(put.e_tag, s3.etag(path.as_ref()));

    let got = store.get(&path).await.unwrap();
    assert_eq!(got.attributes.get(&media_type).unwrap().as_ref(), "a/b");
    assert_eq!(got.bytes().await.unwrap(), "0123456789");
    let range = store.get_range(&path, 2..5).await.unwrap();
    assert_eq!(range, "234");
    let tail = GetOptions {
        range: Some(GetRange::Offset(7)),
        ..GetOptions::default()
    };
    let got = store.get_opts(&path, tail).await.unwrap();
    assert_eq!((got.range.clone(), got.meta.size), (7..10, 10));
    assert_eq!(got.bytes().await.unwrap(), "789");
    let head = store.head(&path).await.unwrap();
    assert_eq!((head.size, head.e_tag.clone()), (10, put.e_tag.clone()));
    assert!(age(head.last_modified.timestamp()) < 60);

    let listed: Vec<_> = store
        .list(Some(&Path::from("blobs")))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((&listed[0].location, listed[0].size), (&path, 10));
    assert_eq!(listed[0].e_tag, put.e_tag);
    assert!(age(listed[0].last_modified.timestamp()) < 60);
    let top = store.list_with_delimiter(None).await.unwrap();
    assert_eq!(top.common_prefixes, [Path::from("blobs")]);

    let create = PutOptions::from(PutMode::Create);
    let again = store
        .put_opts(&path, PutPayload::from_static(b"x"), create.clone())
        .await;
    assert!(
        matches!(again, Err(object_store::Error::AlreadyExists { .. })),
        "{again:?}"
    );
    let lease = Path::from("leases/a");
    store
        .put_opts(&lease, PutPayload::from_static(b"x"), create)
        .await
        .unwrap();

    let big = Path::from("blobs/big");
    let first = vec![1u8; MIN_PART_SIZE as usize];
    let mut upload = store.put_multipart(&big).await.unwrap();
    upload
        .put_part(PutPayload::from(first.clone()))
        .await
        .unwrap();
    upload
        .put_part(PutPayload::from_static(b"end"))
        .await
        .unwrap();
    upload.complete().await.unwrap();
    let stored = s3.object("blobs/big").unwrap();
    assert_eq!(
        (stored.len(), &stored[..first.len()]),
        (first.len() + 3, &first[..])
    );
    assert_eq!(s3.uploads_in_progress(), 0);
    assert_eq!(s3.count_operation("UploadPart"), 2);
    let mut upload = store
        .put_multipart(&Path::from("blobs/aborted"))
        .await
        .unwrap();
    upload
        .put_part(PutPayload::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(s3.uploads_in_progress(), 1);
    upload.abort().await.unwrap();
    assert_eq!(s3.uploads_in_progress(), 0);

    store.delete(&path).await.unwrap();
    assert_eq!(s3.object(path.as_ref()), None);
    assert_eq!(s3.count_operation("DeleteObjects"), 1);
    let missing = store.get(&path).await;
    assert!(
        matches!(missing, Err(object_store::Error::NotFound { .. })),
        "{missing:?}"
    );
    s3.set_down(true);
    assert!(store.head(&big).await.is_err());
}
