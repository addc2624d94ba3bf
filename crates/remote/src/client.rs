//! One JSON-over-HTTPS client with a timeout per call, and the errors a
//! call can end in (and which are worth retrying).

use std::fmt;
use std::time::{Duration, SystemTime};

use domain::retry::Retriable;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use serde_json::Value;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ApiError {
    #[error("{provider} answered HTTP {status}: {message}")]
    Status { provider: &'static str, status: u16, message: String, retry_after: Option<Duration> },
    #[error("{provider} did not answer within {timeout:?}")]
    Timeout { provider: &'static str, timeout: Duration },
    #[error("{provider} could not be reached: {message}")]
    Transport { provider: &'static str, message: String },
    #[error("{provider} returned a malformed reply: {reason}")]
    Malformed { provider: &'static str, reason: String },
    #[error("the request to {provider} could not be built: {message}")]
    Request { provider: &'static str, message: String },
}

impl Retriable for ApiError {
    /// Throttling, server errors (including Anthropic's 529 "overloaded"),
    /// timeouts and lost connections are worth another try.
    fn is_retriable(&self) -> bool {
        match self {
            Self::Status { status, .. } => matches!(status, 408 | 409 | 425 | 429 | 500..=599),
            Self::Timeout { .. } | Self::Transport { .. } => true,
            Self::Malformed { .. } | Self::Request { .. } => false,
        }
    }

    /// How long the provider asked us to wait, when it did.
    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Overloaded or rate-limited (429, Anthropic's 529, 503), a gateway
    /// that lost the provider (502, 504), no answer in time, no connection.
    /// A 500 is not among them: it may be the request's, and its retries
    /// are counted.
    fn is_outage(&self) -> bool {
        match self {
            Self::Status { status, .. } => matches!(status, 429 | 502 | 503 | 504 | 529),
            Self::Timeout { .. } | Self::Transport { .. } => true,
            Self::Malformed { .. } | Self::Request { .. } => false,
        }
    }

    /// 401 and 403 (the key), 404 (the model or the route), and a 400 that
    /// names the model. Other 400s may be one input's fault (an image the
    /// provider cannot read) and stay the item's.
    fn is_configuration_fault(&self) -> bool {
        match self {
            Self::Status { status: 401 | 403 | 404, .. } => true,
            Self::Status { status: 400, message, .. } => message.to_lowercase().contains("model"),
            _ => false,
        }
    }
}

/// A JSON API over HTTPS with one timeout per call.
#[derive(Debug, Clone)]
pub struct JsonClient {
    provider: &'static str,
    timeout: Duration,
    http: reqwest::Client,
}

/// A successful reply: its JSON body and headers.
#[derive(Debug, Clone)]
pub struct JsonReply {
    pub body: Value,
    pub headers: HeaderMap,
}

impl JsonReply {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    }
}

/// The longest provider reply read, bytes: 64 MiB. A vision reply is a few
/// KiB; an embeddings reply for 1000 texts of 1024 dimensions (Voyage's
/// most a request) is about 20 MiB of JSON.
pub const MAX_REPLY_BYTES: usize = 64 << 20;

/// Longest error body kept in a message.
const MAX_ERROR_CHARS: usize = 300;

impl JsonClient {
    pub fn new(provider: &'static str, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("collections-pipeline/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client with a TLS backend builds");
        Self { provider, timeout, http }
    }

    /// The provider it calls, as errors name it.
    pub fn provider(&self) -> &'static str {
        self.provider
    }

    /// POSTs `body` as JSON with `headers`; a non-2xx status, a timeout, a
    /// lost connection or a body that is not JSON is an [`ApiError`].
    pub async fn post(&self, url: &str, headers: &[(&str, &str)], body: &Value) -> Result<JsonReply, ApiError> {
        let request = self.http.post(url).headers(self.headers(headers)?).json(body);
        self.json_reply(self.send(request).await?).await
    }

    /// POSTs a body already serialised as JSON (a batch of requests too big
    /// to hold twice, as a tree and as text), as [`JsonClient::post`].
    pub async fn post_json_text(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<JsonReply, ApiError> {
        let request = self
            .http
            .post(url)
            .headers(self.headers(headers)?)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.json_reply(self.send(request).await?).await
    }

    /// POSTs a `multipart/form-data` form of text `fields` and one file
    /// (`file_field`, named `filename`, holding `content`), as OpenAI's file
    /// upload takes it; the reply as [`JsonClient::post`].
    pub async fn post_multipart(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        fields: &[(&str, &str)],
        (file_field, filename, content): (&str, &str, Vec<u8>),
    ) -> Result<JsonReply, ApiError> {
        let boundary = format!("collections-{}", uuid_like());
        let mut body = Vec::with_capacity(content.len() + 512);
        for (name, value) in fields {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                    .as_bytes(),
            );
        }
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{file_field}\"; filename=\"{filename}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(&content);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let request = self
            .http
            .post(url)
            .headers(self.headers(headers)?)
            .header(reqwest::header::CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
            .body(body);
        self.json_reply(self.send(request).await?).await
    }

    /// GETs a JSON document, as [`JsonClient::post`].
    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Result<JsonReply, ApiError> {
        let request = self.http.get(url).headers(self.headers(headers)?);
        self.json_reply(self.send(request).await?).await
    }

    /// GETs a JSON Lines document (a batch's results), read a line at a
    /// time: however long it is, one line is held at once.
    pub async fn get_lines(&self, url: &str, headers: &[(&str, &str)]) -> Result<JsonLines, ApiError> {
        let request = self.http.get(url).headers(self.headers(headers)?);
        let response = self.send(request).await?;
        Ok(JsonLines { provider: self.provider, client: self.clone(), response, pending: Vec::new(), done: false })
    }

    /// `headers` as sensitive header values; the value is never shown (it may be a key).
    fn headers(&self, headers: &[(&str, &str)]) -> Result<HeaderMap, ApiError> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            let bad = |e: &dyn fmt::Display| ApiError::Request {
                provider: self.provider,
                message: format!("header {name} is not a valid HTTP header value ({e})"),
            };
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(&e))?;
            let mut value = HeaderValue::from_str(value).map_err(|e| bad(&e))?;
            value.set_sensitive(true);
            map.insert(header, value);
        }
        Ok(map)
    }

    /// Sends `request`; a non-2xx status is an error with the body's message.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, ApiError> {
        let response = request.send().await.map_err(|e| self.send_error(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let headers = response.headers().clone();
        let text = self.read_capped(response).await?;
        Err(ApiError::Status {
            provider: self.provider,
            status: status.as_u16(),
            message: error_message(&text),
            retry_after: retry_after(&headers, SystemTime::now()),
        })
    }

    /// A successful reply's JSON body, cleaned of what PostgreSQL would refuse.
    async fn json_reply(&self, response: reqwest::Response) -> Result<JsonReply, ApiError> {
        let headers = response.headers().clone();
        let text = self.read_capped(response).await?;
        let body = parse_clean(self.provider, &text)?;
        Ok(JsonReply { body, headers })
    }

    /// The reply's body, read up to [`MAX_REPLY_BYTES`]: a longer one (a
    /// server sending without end) fails its request, not the process.
    async fn read_capped(&self, mut response: reqwest::Response) -> Result<String, ApiError> {
        let too_long = |bytes: u64| ApiError::Malformed {
            provider: self.provider,
            reason: format!("the reply is over {MAX_REPLY_BYTES} bytes (at least {bytes})"),
        };
        if let Some(length) = response.content_length().filter(|&n| n > MAX_REPLY_BYTES as u64) {
            return Err(too_long(length));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.send_error(e))? {
            if body.len() + chunk.len() > MAX_REPLY_BYTES {
                return Err(too_long((body.len() + chunk.len()) as u64));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    fn send_error(&self, e: reqwest::Error) -> ApiError {
        if e.is_timeout() {
            ApiError::Timeout { provider: self.provider, timeout: self.timeout }
        } else {
            // Without the URL: it may carry a key in some providers' schemes.
            ApiError::Transport { provider: self.provider, message: e.without_url().to_string() }
        }
    }
}

/// `text` as JSON, with what PostgreSQL would refuse taken out (lone
/// surrogate escapes, control characters), whatever the reply is used for.
fn parse_clean(provider: &'static str, text: &str) -> Result<Value, ApiError> {
    let fixed = domain::text::replace_lone_surrogates(text);
    let mut body: Value = serde_json::from_str(&fixed).map_err(|e| ApiError::Malformed {
        provider,
        reason: format!("the body is not JSON ({e}): {}", truncate(text)),
    })?;
    let cleaned = domain::text::clean_json(&mut body);
    if cleaned > 0 || matches!(fixed, std::borrow::Cow::Owned(_)) {
        tracing::info!(provider, strings = cleaned, "removed control characters or unpaired surrogates from a reply");
    }
    Ok(body)
}

/// A JSON Lines reply, read a line at a time ([`JsonClient::get_lines`]).
#[derive(Debug)]
pub struct JsonLines {
    provider: &'static str,
    client: JsonClient,
    response: reqwest::Response,
    /// Bytes read past the last whole line.
    pending: Vec<u8>,
    done: bool,
}

impl JsonLines {
    /// The next line's JSON (blank lines passed over); `None` at the end. A
    /// line that is not JSON is an error of its own: the lines after it
    /// still come. A line over [`MAX_REPLY_BYTES`] ends the reading.
    pub async fn next(&mut self) -> Option<Result<Value, ApiError>> {
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line);
                if text.trim().is_empty() {
                    continue;
                }
                return Some(parse_clean(self.provider, text.trim()));
            }
            if self.done {
                let rest = std::mem::take(&mut self.pending);
                let text = String::from_utf8_lossy(&rest);
                return (!text.trim().is_empty()).then(|| parse_clean(self.provider, text.trim()));
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => {
                    if self.pending.len() + chunk.len() > MAX_REPLY_BYTES {
                        self.done = true;
                        self.pending.clear();
                        return Some(Err(ApiError::Malformed {
                            provider: self.provider,
                            reason: format!("a line of the reply is over {MAX_REPLY_BYTES} bytes"),
                        }));
                    }
                    self.pending.extend_from_slice(&chunk);
                }
                Ok(None) => self.done = true,
                Err(e) => {
                    self.done = true;
                    self.pending.clear();
                    return Some(Err(self.client.send_error(e)));
                }
            }
        }
    }
}

/// A boundary no file content is likely to hold: the time in nanoseconds.
fn uuid_like() -> String {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{nanos:x}")
}

fn truncate(text: &str) -> String {
    let mut out: String = text.chars().take(MAX_ERROR_CHARS).collect();
    if text.chars().count() > MAX_ERROR_CHARS {
        out.push('…');
    }
    out
}

/// The message of an error body: Anthropic and OpenAI put it at
/// `error.message`, Voyage at `detail`; otherwise the body itself.
fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let found = parsed.as_ref().and_then(|v| {
        let kind = v.pointer("/error/type").and_then(Value::as_str);
        let message = v.pointer("/error/message").or_else(|| v.get("detail")).or_else(|| v.get("message"))?;
        let message = message.as_str().map(str::to_owned).unwrap_or_else(|| message.to_string());
        Some(match kind {
            Some(kind) => format!("{kind}: {message}"),
            None => message,
        })
    });
    truncate(found.as_deref().unwrap_or(body.trim()))
}

/// `retry-after` in seconds or as an HTTP date; also OpenAI's
/// `retry-after-ms`. A wait too long to represent is `Duration::MAX`.
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let seconds = |s: f64| (s >= 0.0).then(|| Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX));
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return seconds(ms / 1000.0);
    }
    let value = text(RETRY_AFTER.as_str())?;
    if let Ok(s) = value.parse::<f64>() {
        return seconds(s);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriable_statuses() {
        let status = |status| ApiError::Status { provider: "p", status, message: String::new(), retry_after: None };
        assert!(status(429).is_retriable() && status(503).is_retriable() && status(529).is_retriable());
        assert!(!status(400).is_retriable() && !status(401).is_retriable() && !status(404).is_retriable());
        assert!(!ApiError::Malformed { provider: "p", reason: "x".into() }.is_retriable());
        assert!(ApiError::Timeout { provider: "p", timeout: Duration::from_secs(1) }.is_retriable());
    }

    #[test]
    fn overloads_timeouts_and_lost_connections_are_outages_and_a_500_is_not() {
        let status = |status| ApiError::Status { provider: "p", status, message: String::new(), retry_after: None };
        for outage in [
            status(429),
            status(502),
            status(503),
            status(504),
            status(529),
            ApiError::Timeout { provider: "p", timeout: Duration::from_secs(1) },
            ApiError::Transport { provider: "p", message: "connection refused".into() },
        ] {
            assert!(outage.is_outage() && outage.is_retriable(), "{outage}");
        }
        for not in [status(500), status(400), status(401), ApiError::Malformed { provider: "p", reason: "x".into() }] {
            assert!(!not.is_outage(), "{not}");
        }
    }

    #[test]
    fn retry_after_in_seconds_dates_and_milliseconds() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(2)));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&httpdate::fmt_http_date(now + Duration::from_secs(30))).unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        h.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_millis(1500)));
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
        // Absurd values neither panic nor shorten the wait.
        for (absurd, read) in [("1e20", Some(Duration::MAX)), ("inf", Some(Duration::MAX)), ("NaN", None), ("-3", None)]
        {
            let h = HeaderMap::from_iter([(RETRY_AFTER, HeaderValue::from_static(absurd))]);
            assert_eq!(retry_after(&h, now), read, "{absurd}");
        }
    }

    #[test]
    fn error_messages_from_each_provider() {
        assert_eq!(
            error_message(r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#),
            "overloaded_error: Overloaded"
        );
        assert_eq!(error_message(r#"{"error":{"message":"Rate limit reached","type":null}}"#), "Rate limit reached");
        assert_eq!(error_message(r#"{"detail":"Invalid model"}"#), "Invalid model");
        assert_eq!(error_message("<html>bad gateway</html>"), "<html>bad gateway</html>");
    }

    #[test]
    fn the_key_the_model_and_the_route_are_configuration_faults_and_nothing_else() {
        let status = |status: u16, message: &str| ApiError::Status {
            provider: "anthropic",
            status,
            message: message.to_owned(),
            retry_after: None,
        };
        for fault in [
            status(401, "authentication_error: invalid x-api-key"),
            status(403, "permission_error"),
            status(404, "not_found_error: model: claude-nope"),
            status(400, "invalid_request_error: Model 'x' does not support images"),
        ] {
            assert!(fault.is_configuration_fault() && !fault.is_retriable(), "{fault}");
        }
        for item_or_outage in [
            status(400, "invalid_request_error: image exceeds 5 MB maximum"),
            status(429, "rate_limit_error"),
            status(529, "overloaded_error"),
            ApiError::Timeout { provider: "voyage", timeout: Duration::from_secs(1) },
        ] {
            assert!(!item_or_outage.is_configuration_fault(), "{item_or_outage}");
        }
    }
}
