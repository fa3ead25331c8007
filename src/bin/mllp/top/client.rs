//! Reading the admin endpoint: one HTTP/1.1 GET per request, over a fresh connection (the
//! endpoint is local or a short hop away, and a fresh connection notices a restarted server
//! at once).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Where the admin endpoint is and how to ask it.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// `host:port`.
    pub(crate) authority: String,
    pub(crate) token: Option<String>,
    pub(crate) timeout: Duration,
}

impl Endpoint {
    /// `http://host:port`, `host:port` or `host:port/...` (the path is ignored).
    pub(crate) fn parse(
        url: &str,
        token: Option<String>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let rest = url.trim();
        if rest.starts_with("https://") {
            return Err(
                "https is not supported; use http:// (over SSH, forward the port)".to_owned(),
            );
        }
        let rest = rest.strip_prefix("http://").unwrap_or(rest);
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() || !authority.contains(':') {
            return Err(format!(
                "expected HOST:PORT or http://HOST:PORT, got {url:?}"
            ));
        }
        Ok(Self {
            authority: authority.to_owned(),
            token,
            timeout,
        })
    }

    /// `http://host:port`, for display.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.authority)
    }

    /// GETs `path` and parses the JSON body.
    pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, String> {
        let body = tokio::time::timeout(self.timeout, self.get(path))
            .await
            .map_err(|_| {
                format!(
                    "no answer within {}",
                    humantime::format_duration(self.timeout)
                )
            })??;
        serde_json::from_slice(&body).map_err(|e| format!("unexpected answer from {path}: {e}"))
    }

    async fn get(&self, path: &str) -> Result<Bytes, String> {
        let stream = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("http handshake failed: {e}"))?;
        let driver = tokio::spawn(connection);
        let mut request = Request::get(path).header(header::HOST, &self.authority);
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("bad request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the answer failed: {e}"))?
            .to_bytes();
        driver.abort();
        match status {
            StatusCode::OK => Ok(body),
            StatusCode::UNAUTHORIZED => {
                Err("401 unauthorized: give --token (or MLLP_ADMIN_TOKEN)".to_owned())
            }
            other => Err(format!("{path} answered {other}")),
        }
    }
}
