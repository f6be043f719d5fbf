//! `salient explore`: a page in the browser where a learner draws a digit and
//! watches the gradient flow back through the network.
//!
//! The numbers come from the library ([`crate::saliency`] and
//! [`crate::saliency::trace`]) through the JSON endpoints of [`api`]; this
//! module only runs the HTTP server (the `tiny_http` crate parses HTTP) and
//! keeps it safe:
//!
//! - it binds to `127.0.0.1` unless told otherwise, and then answers only
//!   requests addressed to that host (a web page elsewhere cannot reach it by
//!   renaming a domain to `127.0.0.1`);
//! - request bodies are bounded before they are read ([`api::MAX_JSON_BYTES`],
//!   [`api::MAX_UPLOAD_BYTES`]), decoded images by `--max-pixels`;
//! - the routes are fixed and the page is compiled in: no request names a file;
//! - a request that fails gets a status and `{"error": ...}`; a bug that panics
//!   while answering gets a 500, and the server goes on.
//!
//! ```no_run
//! use salient::explore::{api::Explorer, Server};
//! use salient::model::Sequential;
//!
//! let model = Sequential::tutorial([1, 28, 28], 10, 0)?;
//! let explorer = Explorer::new(model, "untrained".into(), None)?;
//! let server = Server::bind("127.0.0.1:0", explorer)?;
//! println!("open http://{}/", server.addr());
//! server.run(); // answers requests until the process ends
//! # Ok::<(), salient::Error>(())
//! ```

pub mod api;

use std::io::Read;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use api::{Explorer, Reply};

/// A bound explorer server.
pub struct Server {
    http: Arc<tiny_http::Server>,
    addr: SocketAddr,
    explorer: Explorer,
}

/// A server answering on its own thread; [`stop`](Running::stop) ends it.
pub struct Running {
    http: Arc<tiny_http::Server>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` (`127.0.0.1:8000`; port 0 picks a free one).
    pub fn bind(addr: &str, explorer: Explorer) -> Result<Server> {
        let http = tiny_http::Server::http(addr).map_err(|e| {
            Error::invalid(
                "explore",
                format!("cannot listen on {addr}: {e} (pick another port with --port, or --port 0 for any free one)"),
            )
        })?;
        let addr = http.server_addr().to_ip().ok_or_else(|| {
            Error::invalid("explore", format!("{addr} is not an IP address and port"))
        })?;
        Ok(Server {
            http: Arc::new(http),
            addr,
            explorer,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers requests, one at a time, until the server is unblocked.
    pub fn run(&self) {
        for request in self.http.incoming_requests() {
            answer(&self.explorer, self.addr, request);
        }
    }

    /// Answers requests on a thread of its own.
    pub fn spawn(self) -> Running {
        let http = Arc::clone(&self.http);
        let addr = self.addr;
        let thread = std::thread::spawn(move || self.run());
        Running {
            http,
            addr,
            thread: Some(thread),
        }
    }
}

impl Running {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops answering and waits for the thread to end.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        self.http.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shut();
    }
}

/// Whether a request's `Host` header names the server as bound: on a
/// loopback address, `127.0.0.1`, `localhost` or `[::1]` with its port.
fn host_allowed(host: Option<&str>, bound: SocketAddr) -> bool {
    if !bound.ip().is_loopback() {
        return true;
    }
    let Some(host) = host else { return false };
    let port = bound.port();
    ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .any(|name| host.eq_ignore_ascii_case(&format!("{name}:{port}")))
}

/// Reads one request's body within its route's bound and sends the answer.
fn answer(explorer: &Explorer, bound: SocketAddr, mut request: tiny_http::Request) {
    let method = request.method().as_str().to_string();
    let url = request.url().to_string();
    let host = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Host"))
        .map(|h| h.value.as_str().to_string());
    let limit = match url.starts_with("/api/image") {
        true => api::MAX_UPLOAD_BYTES,
        false => api::MAX_JSON_BYTES,
    };
    let reply = if !host_allowed(host.as_deref(), bound) {
        Reply::error(
            403,
            &format!(
                "this server answers requests to 127.0.0.1:{} only",
                bound.port()
            ),
        )
    } else if request.body_length().is_some_and(|n| n > limit) {
        too_large(limit)
    } else {
        let mut body = Vec::new();
        match request
            .as_reader()
            .take(limit as u64 + 1)
            .read_to_end(&mut body)
        {
            Err(e) => Reply::error(400, &format!("cannot read the request body: {e}")),
            Ok(_) if body.len() > limit => too_large(limit),
            Ok(_) => catch_unwind(AssertUnwindSafe(|| explorer.handle(&method, &url, &body)))
                .unwrap_or_else(|_| Reply::error(500, "internal error: the server caught a panic")),
        }
    };
    let header = |field: &str, value: &str| {
        tiny_http::Header::from_bytes(field.as_bytes(), value.as_bytes())
            .expect("static header names and values are valid")
    };
    let response = tiny_http::Response::from_data(reply.body)
        .with_status_code(reply.status)
        .with_header(header("Content-Type", reply.content_type))
        .with_header(header("Cache-Control", "no-store"))
        .with_header(header("X-Content-Type-Options", "nosniff"))
        .with_header(header(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data: blob:",
        ));
    // A client that went away has nobody to tell.
    let _ = request.respond(response);
}

fn too_large(limit: usize) -> Reply {
    Reply::error(
        413,
        &format!("the request body is larger than {} MiB", limit >> 20),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_bound_host_is_answered_on_loopback() {
        let bound: SocketAddr = "127.0.0.1:8123".parse().unwrap();
        assert!(host_allowed(Some("127.0.0.1:8123"), bound));
        assert!(host_allowed(Some("LOCALHOST:8123"), bound));
        assert!(!host_allowed(Some("127.0.0.1:9000"), bound));
        assert!(!host_allowed(Some("evil.example:8123"), bound));
        assert!(!host_allowed(None, bound));
        let open: SocketAddr = "0.0.0.0:8123".parse().unwrap();
        assert!(host_allowed(Some("my-laptop:8123"), open));
    }
}
