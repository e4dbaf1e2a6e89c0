//! The load generator's HTTP client: one keep-alive HTTP/1.1 connection per closed-loop
//! client (hyper's connection API, no pool, no redirects, no proxies), so that the bench
//! spends as little of the shared CPU as it can on itself. A broken connection is
//! re-opened before the next request.

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;

/// Where the load goes and with which credentials; shared by every connection.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    host: HeaderValue,
    auth: HeaderValue,
}

impl Endpoint {
    /// `base` is `http://host:port`; the host is resolved once, here.
    pub async fn new(base: &str, auth: HeaderValue) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(base).with_context(|| format!("'{base}' is not a URL"))?;
        anyhow::ensure!(
            url.scheme() == "http",
            "the bench speaks plain http, not {}",
            url.scheme()
        );
        let host = url.host_str().context("the base URL has no host")?;
        let port = url.port_or_known_default().unwrap_or(80);
        let addr = tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("cannot resolve {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?;
        let host = HeaderValue::from_str(&format!("{host}:{port}"))
            .context("the host is not a valid header value")?;
        Ok(Self { addr, host, auth })
    }
}

/// A response: its status, its `Location` header, its body.
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub body: Bytes,
}

/// One client's connection.
pub struct Conn {
    endpoint: Endpoint,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            sender: None,
        }
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = tokio::net::TcpStream::connect(self.endpoint.addr)
            .await
            .with_context(|| format!("cannot connect to {}", self.endpoint.addr))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Send one request and read the whole answer. `body` makes it a JSON POST.
    pub async fn send(&mut self, path: &str, body: Option<String>) -> anyhow::Result<Answer> {
        let mut sender = match self.sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        sender.ready().await?;
        let builder = Request::builder()
            .method(if body.is_some() {
                Method::POST
            } else {
                Method::GET
            })
            .uri(path)
            .header(HOST, self.endpoint.host.clone())
            .header(AUTHORIZATION, self.endpoint.auth.clone());
        let req = match body {
            Some(b) => builder
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(Full::new(Bytes::from(b)))?,
            None => builder.body(Full::new(Bytes::new()))?,
        };
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get(hyper::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.into_body().collect().await?.to_bytes();
        self.sender = Some(sender);
        Ok(Answer {
            status,
            location,
            body,
        })
    }
}
