//! A local HTTP server that speaks the real request and response formats of
//! the paid providers — Anthropic Messages, OpenAI chat completions and
//! embeddings, Voyage embeddings — and can be told to fail: 429 with
//! `retry-after`, 5xx, slow replies, malformed JSON, refusals, wrong
//! dimensions. It records every request and the peak of requests in flight.
//! It also runs Anthropic's Message Batches API and OpenAI's Batch API (a
//! JSON Lines file uploaded, a batch on `/v1/chat/completions`): batches
//! created, listed, asked about and ended after a set time, with results of
//! each kind (succeeded, errored, canceled, expired) in each one's format.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use embedding::local::LocalEmbedder;
use serde_json::{Value, json};

/// What the server does with the next request that reaches a route.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The provider's normal answer, after the server's latency.
    Ok,
    /// An error status with the provider's error body and an optional `retry-after` (seconds).
    Status { status: u16, retry_after: Option<u64> },
    /// An error status whose error body says `message`.
    StatusSaying(u16, String),
    /// The normal answer, after this long.
    Slow(Duration),
    /// A 200 whose body is not JSON.
    MalformedJson,
    /// A 200 with the provider's refusal.
    Refusal,
    /// Embeddings with this many dimensions.
    Dimensions(usize),
    /// The normal answer, its analysis replaced by this one.
    Analysis(Value),
    /// The normal answer as JSON text, with each `(from, to)` replaced in
    /// that text: how a reply carrying `\u0000` or an unpaired surrogate
    /// escape (valid JSON text that Rust and PostgreSQL refuse) is made.
    Tampered(Vec<(String, String)>),
    /// Embeddings, the one at this index holding 1e39 (beyond `f32`).
    Overflow(usize),
    /// A 200 whose JSON body goes on for this many bytes, with no length
    /// announced: a server that sends without end.
    Endless(usize),
}

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub route: &'static str,
    pub headers: HeaderMap,
    pub body: Value,
    pub at: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    script: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Recorded>>,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    latency: Mutex<Duration>,
    /// Until when every request gets this reply, whatever the script says.
    outage: Mutex<Option<(Instant, Reply)>>,
    batches: Mutex<Vec<MockBatch>>,
    /// When the server started, in seconds: the prefix of its batch ids.
    started: u64,
    /// Files uploaded to the OpenAI routes, by id.
    files: Mutex<std::collections::HashMap<String, Vec<u8>>>,
    /// The Messages API answers 403: only batches are taken.
    batches_only: std::sync::atomic::AtomicBool,
    /// The results of the next batch requests, in the order they are submitted; after them, `Succeeded`.
    batch_script: Mutex<VecDeque<BatchLine>>,
    /// How long a batch is in progress.
    batch_duration: Mutex<Duration>,
    /// How long a batch's creation takes to be answered (it exists from the start).
    create_delay: Mutex<Duration>,
}

/// What the batch API makes of one request of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchLine {
    /// An analysis, as the Messages API would answer.
    Succeeded,
    /// `errored`, with Anthropic's error type (`invalid_request_error`, `overloaded_error`, …).
    Errored(&'static str),
    Canceled,
    Expired,
    /// A line that is not a result (not JSON).
    Garbled,
}

#[derive(Debug, Clone)]
struct MockBatch {
    id: String,
    created_at: chrono::DateTime<chrono::Utc>,
    ends_at: Instant,
    /// Each request's custom id.
    custom_ids: Vec<String>,
    /// Each request's result line.
    lines: Vec<String>,
    /// Counts by result type.
    counts: [u64; 4],
    /// OpenAI's: the error file's lines (the output file's are `lines`) and
    /// the batch's metadata label; `None`, Anthropic's.
    openai: Option<(Vec<String>, Option<String>)>,
}

impl MockBatch {
    fn ended(&self) -> bool {
        Instant::now() >= self.ends_at
    }

    /// OpenAI's Batch object.
    fn openai_json(&self) -> Value {
        let ended = self.ended();
        let [succeeded, ..] = self.counts;
        let total = self.custom_ids.len() as u64;
        let (errors, label) = self.openai.clone().unwrap_or_default();
        let file = |kind: &str, lines: usize| {
            if ended && lines > 0 { Value::from(format!("file-{kind}-{}", self.id)) } else { Value::Null }
        };
        json!({
            "id": self.id, "object": "batch", "endpoint": "/v1/chat/completions", "completion_window": "24h",
            "input_file_id": format!("file-in-{}", self.id),
            "status": if ended { "completed" } else { "in_progress" },
            "output_file_id": file("out", self.lines.len()), "error_file_id": file("err", errors.len()),
            "created_at": self.created_at.timestamp(),
            "expires_at": (self.created_at + chrono::TimeDelta::hours(24)).timestamp(),
            "request_counts": {"total": total, "completed": if ended { succeeded } else { 0 },
                               "failed": if ended { total - succeeded } else { 0 }},
            "metadata": match label { Some(label) => json!({"collections_batch": label}), None => Value::Null },
            "errors": null,
        })
    }

    fn json(&self, base: &str) -> Value {
        if self.openai.is_some() {
            return self.openai_json();
        }
        let ended = Instant::now() >= self.ends_at;
        let [succeeded, errored, canceled, expired] = self.counts;
        let processing = if ended { 0 } else { succeeded + errored + canceled + expired };
        let done = |n: u64| if ended { n } else { 0 };
        json!({
            "id": self.id, "type": "message_batch",
            "processing_status": if ended { "ended" } else { "in_progress" },
            "request_counts": {"processing": processing, "succeeded": done(succeeded), "errored": done(errored),
                               "canceled": done(canceled), "expired": done(expired)},
            "created_at": self.created_at.to_rfc3339(),
            "expires_at": (self.created_at + chrono::TimeDelta::hours(24)).to_rfc3339(),
            "ended_at": if ended { Value::from(chrono::Utc::now().to_rfc3339()) } else { Value::Null },
            "archived_at": null, "cancel_initiated_at": null,
            "results_url": if ended { Value::from(format!("{base}/v1/messages/batches/{}/results", self.id)) } else { Value::Null },
        })
    }
}

/// A running mock server. Its base URLs go into the providers' settings.
#[derive(Debug, Clone)]
pub struct MockProviders {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl MockProviders {
    pub async fn start() -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// As [`MockProviders::start`], on `addr`.
    pub async fn start_on(addr: SocketAddr) -> Self {
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let inner = Arc::new(Inner { started, ..Inner::default() });
        let app = Router::new()
            .route("/anthropic/v1/messages", post(anthropic))
            .route("/anthropic/v1/messages/batches", post(create_batch).get(list_batches))
            .route("/anthropic/v1/messages/batches/{id}", get(retrieve_batch))
            .route("/anthropic/v1/messages/batches/{id}/results", get(batch_results))
            .route("/openai/v1/files", post(openai_upload))
            .route("/openai/v1/files/{id}/content", get(openai_file))
            .route("/openai/v1/batches", post(openai_create_batch).get(list_batches))
            .route("/openai/v1/batches/{id}", get(retrieve_batch))
            .route("/openai/v1/chat/completions", post(openai_chat))
            .route("/openai/v1/embeddings", post(openai_embeddings))
            .route("/voyage/v1/embeddings", post(voyage))
            // A batch is up to 256 MB (Anthropic), an upload up to 200 MB (OpenAI).
            .layer(axum::extract::DefaultBodyLimit::max(256 << 20))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.expect("binding the mock server");
        let addr = listener.local_addr().expect("a bound address");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("the mock server runs") });
        Self { addr, inner }
    }

    pub fn anthropic_url(&self) -> String {
        format!("http://{}/anthropic", self.addr)
    }

    pub fn openai_url(&self) -> String {
        format!("http://{}/openai/v1", self.addr)
    }

    pub fn voyage_url(&self) -> String {
        format!("http://{}/voyage/v1", self.addr)
    }

    /// Queues replies for the next requests (any route), in order; after them, `Ok`.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.script.lock().expect("script lock").extend(replies);
    }

    /// Every request (any route) gets `reply` for the next `lasting`: an
    /// outage, e.g. `529 overloaded_error` for a minute. Then the script
    /// goes on.
    pub fn outage(&self, reply: Reply, lasting: Duration) {
        *self.inner.outage.lock().expect("outage lock") = Some((Instant::now() + lasting, reply));
    }

    /// How long every `Ok` reply takes.
    pub fn set_latency(&self, latency: Duration) {
        *self.inner.latency.lock().expect("latency lock") = latency;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.requests.lock().expect("requests lock").clone()
    }

    /// The most requests that were being answered at once.
    pub fn peak_in_flight(&self) -> usize {
        self.inner.peak.load(Ordering::SeqCst)
    }

    /// The results of the next batch requests, in submission order; after them, `Succeeded`.
    pub fn batch_script(&self, lines: impl IntoIterator<Item = BatchLine>) {
        self.inner.batch_script.lock().expect("batch lock").extend(lines);
    }

    /// How long each batch created from now on is in progress.
    pub fn set_batch_duration(&self, duration: Duration) {
        *self.inner.batch_duration.lock().expect("batch lock") = duration;
    }

    /// How long a batch's creation takes to be answered; the batch exists
    /// from when the request arrives (an answer a client may never read).
    pub fn set_create_delay(&self, delay: Duration) {
        *self.inner.create_delay.lock().expect("batch lock") = delay;
    }

    /// From now on the synchronous Messages API answers 403 (a permission
    /// error: a run that calls it stops), only the batch API works.
    pub fn batches_only(&self) {
        self.inner.batches_only.store(true, Ordering::SeqCst);
    }

    /// The custom ids of each batch created, in order.
    pub fn batches(&self) -> Vec<Vec<String>> {
        self.inner.batches.lock().expect("batch lock").iter().map(|b| b.custom_ids.clone()).collect()
    }

    pub fn reset(&self) {
        self.inner.requests.lock().expect("requests lock").clear();
        self.inner.peak.store(0, Ordering::SeqCst);
        self.inner.script.lock().expect("script lock").clear();
        *self.inner.outage.lock().expect("outage lock") = None;
    }
}

/// Counts a request in flight until dropped.
struct InFlight(Arc<Inner>);

impl InFlight {
    fn enter(inner: &Arc<Inner>) -> Self {
        let now = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        inner.peak.fetch_max(now, Ordering::SeqCst);
        Self(inner.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Records the request and decides the reply; `Ok` and `Slow` wait first.
async fn begin(inner: &Arc<Inner>, route: &'static str, headers: HeaderMap, body: &Value) -> (InFlight, Reply) {
    let guard = InFlight::enter(inner);
    inner.requests.lock().expect("requests lock").push(Recorded {
        route,
        headers,
        body: body.clone(),
        at: Instant::now(),
    });
    let out = inner.outage.lock().expect("outage lock").clone().filter(|(until, _)| Instant::now() < *until);
    let reply = match out {
        Some((_, reply)) => reply,
        None => inner.script.lock().expect("script lock").pop_front().unwrap_or(Reply::Ok),
    };
    let wait = match &reply {
        Reply::Slow(d) => *d,
        Reply::Ok
        | Reply::Refusal
        | Reply::Dimensions(_)
        | Reply::Analysis(_)
        | Reply::Tampered(_)
        | Reply::Overflow(_) => *inner.latency.lock().expect("latency lock"),
        _ => Duration::ZERO,
    };
    tokio::time::sleep(wait).await;
    (guard, reply)
}

/// The status, `retry-after` and message of an error reply.
fn status_of(reply: &Reply) -> (u16, Option<u64>, String) {
    match reply {
        Reply::Status { status, retry_after } => (*status, *retry_after, format!("mock {status}")),
        Reply::StatusSaying(status, message) => (*status, None, message.clone()),
        other => unreachable!("{other:?} is not an error reply"),
    }
}

/// OpenAI's error reply: `{"error": {"message", "type", "code"}}`.
fn openai_error(status: u16, retry_after: Option<u64>, message: &str, kind: &str) -> Response {
    error(status, retry_after, json!({"error": {"message": message, "type": kind, "code": null}}))
}

fn error(status: u16, retry_after: Option<u64>, body: Value) -> Response {
    let mut response = (StatusCode::from_u16(status).expect("a valid status"), Json(body)).into_response();
    if let Some(seconds) = retry_after {
        response.headers_mut().insert("retry-after", seconds.to_string().parse().expect("a header value"));
    }
    response
}

/// A JSON string of `bytes` bytes, streamed in chunks with no content-length.
fn endless(bytes: usize) -> Response {
    let chunk = bytes::Bytes::from(vec![b'x'; 1 << 16]);
    let chunks = std::iter::once(bytes::Bytes::from_static(b"{\"pad\": \""))
        .chain(std::iter::repeat_n(chunk, bytes.div_ceil(1 << 16)))
        .map(Ok::<_, std::convert::Infallible>);
    let body = axum::body::Body::from_stream(futures::stream::iter(chunks));
    (StatusCode::OK, [("content-type", "application/json")], body).into_response()
}

fn malformed() -> Response {
    (StatusCode::OK, [("content-type", "application/json")], "{\"id\": \"broken").into_response()
}

/// A canned analysis that names the request, so stored rows can be told apart.
fn analysis(n: usize) -> Value {
    json!({
        "category": "nature",
        "summary": format!("A mountain lake at dawn, request {n}."),
        "description": "Calm water reflecting pine trees and a snowy peak.",
        "tags": ["lake", "mountain", "dawn"],
        "objects": ["lake", "trees", "mountain"],
        "colors": ["blue", "green"],
        "text": [],
        "scene": "outdoor lake",
        "style": "photo",
        "people_count": 0,
    })
}

/// A 200 whose JSON text is `reply`'s with `replacements` made in it.
fn tampered(reply: &Value, replacements: &[(String, String)], headers: [(&'static str, String); 1]) -> Response {
    let mut text = reply.to_string();
    for (from, to) in replacements {
        text = text.replace(from.as_str(), to);
    }
    let mut response = (StatusCode::OK, [("content-type", "application/json")], text).into_response();
    for (name, value) in headers {
        response.headers_mut().insert(name, value.parse().expect("a header value"));
    }
    response
}

async fn anthropic(State(inner): State<Arc<Inner>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if inner.batches_only.load(Ordering::SeqCst) {
        return anthropic_error(&Reply::StatusSaying(403, "this server takes message batches only".into()));
    }
    let n = inner.requests.lock().expect("requests lock").len();
    let (_guard, reply) = begin(&inner, "anthropic", headers, &body).await;
    match reply {
        Reply::Ok
        | Reply::Slow(_)
        | Reply::Dimensions(_)
        | Reply::Overflow(_)
        | Reply::Analysis(_)
        | Reply::Tampered(_) => {
            let tool = body["tool_choice"]["name"].as_str().unwrap_or("record_analysis");
            let input = if let Reply::Analysis(a) = &reply { a.clone() } else { analysis(n) };
            let message = json!({
                "id": format!("msg_{n:04}"), "type": "message", "role": "assistant", "model": body["model"],
                "content": [{"type": "tool_use", "id": format!("toolu_{n:04}"), "name": tool, "input": input}],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 1600, "output_tokens": 120}
            });
            let headers = [("request-id", format!("req_{n:04}"))];
            match &reply {
                Reply::Tampered(replacements) => tampered(&message, replacements, headers),
                _ => (headers, Json(message)).into_response(),
            }
        }
        Reply::Refusal => Json(json!({
            "id": "msg_refused", "type": "message", "role": "assistant", "model": body["model"],
            "content": [{"type": "text", "text": "I can't help with analysing this image."}],
            "stop_reason": "refusal", "usage": {"input_tokens": 1600, "output_tokens": 12}
        }))
        .into_response(),
        Reply::Status { .. } | Reply::StatusSaying(..) => anthropic_error(&reply),
        Reply::MalformedJson => malformed(),
        Reply::Endless(bytes) => endless(bytes),
    }
}

async fn openai_chat(State(inner): State<Arc<Inner>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let n = inner.requests.lock().expect("requests lock").len();
    let (_guard, reply) = begin(&inner, "openai-chat", headers, &body).await;
    let message = match &reply {
        Reply::Ok | Reply::Slow(_) | Reply::Dimensions(_) | Reply::Overflow(_) | Reply::Tampered(_) => {
            json!({"role": "assistant", "content": analysis(n).to_string(), "refusal": null})
        }
        Reply::Analysis(a) => json!({"role": "assistant", "content": a.to_string(), "refusal": null}),
        Reply::Refusal => {
            json!({"role": "assistant", "content": null, "refusal": "I'm sorry, I can't help with that."})
        }
        Reply::Status { .. } | Reply::StatusSaying(..) => {
            let (status, retry_after, message) = status_of(&reply);
            return openai_error(status, retry_after, &message, "server_error");
        }
        Reply::MalformedJson => return malformed(),
        Reply::Endless(bytes) => return endless(*bytes),
    };
    let completion = json!({
        "id": format!("chatcmpl-{n:04}"), "object": "chat.completion", "model": body["model"],
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 900, "completion_tokens": 110, "total_tokens": 1010}
    });
    let headers = [("x-request-id", format!("req_{n:04}"))];
    match &reply {
        Reply::Tampered(replacements) => tampered(&completion, replacements, headers),
        _ => (headers, Json(completion)).into_response(),
    }
}

fn texts(body: &Value) -> Vec<String> {
    match &body["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().map(|v| v.as_str().unwrap_or_default().to_owned()).collect(),
        _ => Vec::new(),
    }
}

/// Vectors as the offline embedder makes them, so ranking in tests means
/// something: of the size the request asks for (Voyage's `output_dimension`,
/// OpenAI's `dimensions`), else 1024; or, to test the checks, of `wrong` size.
fn embeddings(body: &Value, wrong: Option<usize>) -> Vec<Value> {
    let asked = body.get("output_dimension").or_else(|| body.get("dimensions")).and_then(Value::as_u64);
    let size = asked.map_or(embedding::DEFAULT_DIMENSIONS, |d| d as usize);
    texts(body)
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let mut vector = LocalEmbedder::embed_text_in(text, size);
            if let Some(d) = wrong {
                vector.resize(d, 0.0);
            }
            json!({"object": "embedding", "index": index, "embedding": vector})
        })
        .collect()
}

async fn embeddings_reply(inner: Arc<Inner>, route: &'static str, headers: HeaderMap, body: Value) -> Response {
    let (_guard, reply) = begin(&inner, route, headers, &body).await;
    let data = match reply {
        Reply::Ok | Reply::Slow(_) | Reply::Refusal | Reply::Analysis(_) | Reply::Tampered(_) => {
            embeddings(&body, None)
        }
        Reply::Dimensions(d) => embeddings(&body, Some(d)),
        Reply::Overflow(at) => {
            let mut data = embeddings(&body, None);
            data[at]["embedding"][0] = json!(1e39);
            data
        }
        Reply::Status { .. } | Reply::StatusSaying(..) => {
            let (status, retry_after, message) = status_of(&reply);
            return match route {
                "voyage" => error(status, retry_after, json!({"detail": message})),
                _ => openai_error(status, retry_after, &message, "server_error"),
            };
        }
        Reply::MalformedJson => return malformed(),
        Reply::Endless(bytes) => return endless(bytes),
    };
    Json(json!({"object": "list", "data": data, "model": body["model"], "usage": {"total_tokens": 42}})).into_response()
}

async fn voyage(State(inner): State<Arc<Inner>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    embeddings_reply(inner, "voyage", headers, body).await
}

async fn openai_embeddings(State(inner): State<Arc<Inner>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    embeddings_reply(inner, "openai-embeddings", headers, body).await
}

/// The base URL of the mock's Anthropic API, as a client reached it.
fn anthropic_base(headers: &HeaderMap) -> String {
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    format!("http://{host}/anthropic")
}

/// Anthropic's error for a scripted error reply.
fn anthropic_error(reply: &Reply) -> Response {
    let (status, retry_after, message) = status_of(reply);
    // Anthropic's error types, by status.
    let kind = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    error(status, retry_after, json!({"type": "error", "error": {"type": kind, "message": message}}))
}

/// `POST /v1/messages/batches`: each request's result decided now (by the
/// batch script), served once the batch's time is up.
async fn create_batch(State(inner): State<Arc<Inner>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let base = anthropic_base(&headers);
    let (_guard, reply) = begin(&inner, "anthropic-batch-create", headers, &body).await;
    if matches!(reply, Reply::Status { .. } | Reply::StatusSaying(..)) {
        return anthropic_error(&reply);
    }
    let Some(requests) = body["requests"].as_array().filter(|r| !r.is_empty()) else {
        return anthropic_error(&Reply::StatusSaying(400, "requests: a non-empty list is required".into()));
    };
    let mut counts = [0u64; 4];
    let mut lines = Vec::with_capacity(requests.len());
    let mut custom_ids = Vec::with_capacity(requests.len());
    for request in requests {
        let (Some(custom_id), Some(_)) = (request["custom_id"].as_str(), request["params"]["messages"].as_array())
        else {
            return anthropic_error(&Reply::StatusSaying(400, "each request needs a custom_id and params".into()));
        };
        let line = next_line(&inner);
        let n = inner.requests.lock().expect("requests lock").len() * 1000 + lines.len();
        let result = match line {
            BatchLine::Succeeded => {
                counts[0] += 1;
                let tool = request["params"]["tool_choice"]["name"].as_str().unwrap_or("record_analysis");
                json!({"type": "succeeded", "message": {
                    "id": format!("msg_b{n:06}"), "type": "message", "role": "assistant",
                    "model": request["params"]["model"],
                    "content": [{"type": "tool_use", "id": format!("toolu_b{n:06}"), "name": tool, "input": analysis(n)}],
                    "stop_reason": "tool_use", "stop_sequence": null,
                    "usage": {"input_tokens": 1600, "output_tokens": 120}}})
            }
            BatchLine::Errored(kind) => {
                counts[1] += 1;
                json!({"type": "errored", "error": {"type": "error", "error": {"type": kind, "message": format!("mock {kind}")}}})
            }
            BatchLine::Canceled => {
                counts[2] += 1;
                json!({"type": "canceled"})
            }
            BatchLine::Expired | BatchLine::Garbled => {
                counts[3] += 1;
                json!({"type": "expired"})
            }
        };
        custom_ids.push(custom_id.to_owned());
        lines.push(match line {
            BatchLine::Garbled => format!("{{\"custom_id\": \"{custom_id}\", \"result\": "),
            _ => json!({"custom_id": custom_id, "result": result}).to_string(),
        });
    }
    let batch = add_batch(&inner, "msgbatch", Results { custom_ids, lines, counts, openai: None });
    let delay = *inner.create_delay.lock().expect("batch lock");
    tokio::time::sleep(delay).await;
    Json(batch.json(&base)).into_response()
}

fn find_batch(inner: &Inner, id: &str) -> Option<MockBatch> {
    inner.batches.lock().expect("batch lock").iter().find(|b| b.id == id).cloned()
}

fn no_batch(id: &str) -> Response {
    anthropic_error(&Reply::StatusSaying(404, format!("no message batch {id}")))
}

/// `GET /v1/messages/batches/{id}`.
async fn retrieve_batch(State(inner): State<Arc<Inner>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let base = anthropic_base(&headers);
    let (_guard, reply) = begin(&inner, "anthropic-batch-get", headers, &Value::Null).await;
    if matches!(reply, Reply::Status { .. } | Reply::StatusSaying(..)) {
        return anthropic_error(&reply);
    }
    match find_batch(&inner, &id) {
        Some(batch) => Json(batch.json(&base)).into_response(),
        None => no_batch(&id),
    }
}

/// `GET /v1/messages/batches` (Anthropic) or `/v1/batches` (OpenAI): that
/// provider's batches, newest first, one page.
async fn list_batches(State(inner): State<Arc<Inner>>, uri: axum::http::Uri, headers: HeaderMap) -> Response {
    let base = anthropic_base(&headers);
    let openai = uri.path().starts_with("/openai");
    let route = if openai { "openai-batch-list" } else { "anthropic-batch-list" };
    let (_guard, _) = begin(&inner, route, headers, &Value::Null).await;
    let data: Vec<Value> = inner
        .batches
        .lock()
        .expect("batch lock")
        .iter()
        .rev()
        .filter(|b| b.openai.is_some() == openai)
        .map(|b| b.json(&base))
        .collect();
    let (first, last) = (data.first().map(|b| b["id"].clone()), data.last().map(|b| b["id"].clone()));
    Json(json!({"data": data, "has_more": false, "first_id": first, "last_id": last})).into_response()
}

/// `GET /v1/messages/batches/{id}/results`: JSON Lines, once the batch has ended.
async fn batch_results(State(inner): State<Arc<Inner>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let (_guard, _) = begin(&inner, "anthropic-batch-results", headers, &Value::Null).await;
    match find_batch(&inner, &id) {
        Some(batch) if batch.ended() => {
            let mut text = batch.lines.join("\n");
            text.push('\n');
            (StatusCode::OK, [("content-type", "application/binary")], text).into_response()
        }
        Some(_) => anthropic_error(&Reply::StatusSaying(400, format!("message batch {id} has not ended"))),
        None => no_batch(&id),
    }
}

/// The next scripted result of a batch request.
fn next_line(inner: &Inner) -> BatchLine {
    inner.batch_script.lock().expect("batch lock").pop_front().unwrap_or(BatchLine::Succeeded)
}

/// What a new batch will answer (the fields of [`MockBatch`] of the same names).
struct Results {
    custom_ids: Vec<String>,
    lines: Vec<String>,
    counts: [u64; 4],
    openai: Option<(Vec<String>, Option<String>)>,
}

/// Records a batch the provider now holds, ending after the set duration
/// (with an id unique across runs of the server).
fn add_batch(inner: &Inner, prefix: &str, results: Results) -> MockBatch {
    let mut batches = inner.batches.lock().expect("batch lock");
    let Results { custom_ids, lines, counts, openai } = results;
    let batch = MockBatch {
        id: format!("{prefix}_{:x}{:04}", inner.started, batches.len() + 1),
        created_at: chrono::Utc::now(),
        ends_at: Instant::now() + *inner.batch_duration.lock().expect("batch lock"),
        custom_ids,
        lines,
        counts,
        openai,
    };
    batches.push(batch.clone());
    batch
}

/// `POST /v1/files` (multipart: `purpose`, `file`): the file kept under a new id.
async fn openai_upload(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: bytes::Bytes) -> Response {
    let boundary = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("boundary=").nth(1))
        .map(str::to_owned);
    let (_guard, reply) = begin(&inner, "openai-file-upload", headers, &Value::Null).await;
    if matches!(reply, Reply::Status { .. } | Reply::StatusSaying(..)) {
        let (status, retry_after, message) = status_of(&reply);
        return openai_error(status, retry_after, &message, "server_error");
    }
    let bad = |message: &str| openai_error(400, None, message, "invalid_request_error");
    let Some(boundary) = boundary else { return bad("not multipart/form-data") };
    let text = String::from_utf8_lossy(&body);
    let delimiter = format!("--{boundary}");
    let mut purpose = None;
    let mut file = None;
    for part in text.split(delimiter.as_str()) {
        let Some((head, content)) = part.split_once("\r\n\r\n") else { continue };
        let content = content.strip_suffix("\r\n").unwrap_or(content);
        if head.contains("name=\"purpose\"") {
            purpose = Some(content.to_owned());
        } else if head.contains("name=\"file\"") {
            file = Some(content.as_bytes().to_vec());
        }
    }
    let (Some(purpose), Some(file)) = (purpose, file) else { return bad("purpose and file are required") };
    if purpose != "batch" {
        return bad("this mock takes files for batches only");
    }
    let mut files = inner.files.lock().expect("files lock");
    let id = format!("file-{:x}{:04}", inner.started, files.len() + 1);
    let bytes = file.len();
    files.insert(id.clone(), file);
    Json(json!({"id": id, "object": "file", "bytes": bytes, "purpose": "batch", "filename": "batch.jsonl"}))
        .into_response()
}

/// `POST /v1/batches`: the uploaded file's requests, each result decided now (by the batch script).
async fn openai_create_batch(State(inner): State<Arc<Inner>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let (_guard, reply) = begin(&inner, "openai-batch-create", headers, &body).await;
    let bad = |message: String| openai_error(400, None, &message, "invalid_request_error");
    if matches!(reply, Reply::Status { .. } | Reply::StatusSaying(..)) {
        let (status, retry_after, message) = status_of(&reply);
        return openai_error(status, retry_after, &message, "server_error");
    }
    if body["endpoint"] != "/v1/chat/completions" || body["completion_window"] != "24h" {
        return bad(format!(
            "endpoint {} and window {} are not served here",
            body["endpoint"], body["completion_window"]
        ));
    }
    let file_id = body["input_file_id"].as_str().unwrap_or_default();
    let Some(file) = inner.files.lock().expect("files lock").get(file_id).cloned() else {
        return bad(format!("no file {file_id}"));
    };
    let (mut custom_ids, mut lines, mut errors, mut counts) = (Vec::new(), Vec::new(), Vec::new(), [0u64; 4]);
    for request in String::from_utf8_lossy(&file).lines().filter(|l| !l.trim().is_empty()) {
        let Ok(request) = serde_json::from_str::<Value>(request) else { return bad("a line is not JSON".into()) };
        let (Some(custom_id), true) =
            (request["custom_id"].as_str(), request["url"] == "/v1/chat/completions" && request["method"] == "POST")
        else {
            return bad("each line needs a custom_id, method POST and url /v1/chat/completions".into());
        };
        custom_ids.push(custom_id.to_owned());
        let n = custom_ids.len();
        let failed = |status: u64, kind: &str| {
            json!({"id": format!("batch_req_{n}"), "custom_id": custom_id, "error": null,
                   "response": {"status_code": status, "request_id": format!("req_b{n}"),
                                "body": {"error": {"message": format!("mock {kind}"), "type": kind}}}})
            .to_string()
        };
        let not_run = |code: &str| {
            json!({"id": format!("batch_req_{n}"), "custom_id": custom_id, "response": null,
                   "error": {"code": code, "message": format!("mock {code}")}})
            .to_string()
        };
        match next_line(&inner) {
            BatchLine::Succeeded => {
                counts[0] += 1;
                let completion = json!({
                    "id": format!("chatcmpl-b{n:04}"), "object": "chat.completion", "model": request["body"]["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": analysis(n).to_string(), "refusal": null}}],
                    "usage": {"prompt_tokens": 900, "completion_tokens": 110, "total_tokens": 1010}});
                lines.push(
                    json!({"id": format!("batch_req_{n}"), "custom_id": custom_id, "error": null,
                           "response": {"status_code": 200, "request_id": format!("req_b{n}"), "body": completion}})
                    .to_string(),
                );
            }
            BatchLine::Errored(kind) => {
                counts[1] += 1;
                errors.push(failed(if kind == "invalid_request_error" { 400 } else { 500 }, kind));
            }
            BatchLine::Canceled => {
                counts[2] += 1;
                errors.push(not_run("batch_cancelled"));
            }
            BatchLine::Expired => {
                counts[3] += 1;
                errors.push(not_run("batch_expired"));
            }
            BatchLine::Garbled => {
                counts[3] += 1;
                lines.push(format!("{{\"custom_id\": \"{custom_id}\", \"response\": "));
            }
        }
    }
    let label = body["metadata"]["collections_batch"].as_str().map(str::to_owned);
    let batch = add_batch(&inner, "batch", Results { custom_ids, lines, counts, openai: Some((errors, label)) });
    let delay = *inner.create_delay.lock().expect("batch lock");
    tokio::time::sleep(delay).await;
    Json(batch.openai_json()).into_response()
}

/// `GET /v1/files/{id}/content`: an uploaded file, or an ended batch's output or error file.
async fn openai_file(State(inner): State<Arc<Inner>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let (_guard, _) = begin(&inner, "openai-file-content", headers, &Value::Null).await;
    let served = |lines: &[String]| {
        let mut text = lines.join("\n");
        text.push('\n');
        (StatusCode::OK, [("content-type", "application/octet-stream")], text).into_response()
    };
    for (prefix, errors) in [("file-out-", false), ("file-err-", true)] {
        if let Some(batch) = id.strip_prefix(prefix).and_then(|batch| find_batch(&inner, batch)) {
            if !batch.ended() {
                break;
            }
            let (error_lines, _) = batch.openai.clone().unwrap_or_default();
            return served(if errors { &error_lines } else { &batch.lines });
        }
    }
    match inner.files.lock().expect("files lock").get(&id) {
        Some(bytes) => (StatusCode::OK, bytes.clone()).into_response(),
        None => openai_error(404, None, &format!("no file {id}"), "invalid_request_error"),
    }
}
