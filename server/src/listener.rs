//! The accept loop: TCP connections, optional TLS, HTTP/1.1 and HTTP/2 via hyper-util, connection
//! hygiene, graceful drain.
//!
//! Each accepted connection gets its own task, so a slow or hostile TLS handshake (bounded by
//! [`ConnectionSettings::handshake_timeout`]) never blocks the loop. Every request carries two
//! extensions: the client's leaf certificate as [`PeerCertificate`] and the remote address as axum's
//! `ConnectInfo<SocketAddr>`; its body is a [`GuardedBody`] (cut when late or slow, drained when
//! left unread). A connection that sends no request within
//! [`ConnectionSettings::first_request_timeout`] is closed (this covers a TLS client that completes
//! its handshake and then says nothing, where HTTP version detection would otherwise wait forever);
//! one with no request in flight for [`ConnectionSettings::idle_timeout`] is shut down gracefully
//! (HTTP/2 `GOAWAY`), whatever pings the client sends. Beyond
//! [`ConnectionSettings::max_connections`] new connections are closed at once. When the shutdown
//! future completes, the listener is closed, open connections are asked to finish their in-flight
//! requests, and whatever remains after [`DRAIN_DEADLINE`] is aborted.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::body::{BodyRules, GuardedBody};

/// Longest time open connections get to finish after shutdown begins.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(30);
/// Pause after an accept error that is not about one connection (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(250);
/// How often the refusal of connections beyond the cap is logged, at most.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Timers and caps of client connections (`[connections]` in the configuration file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// Longest time a client may take to complete the TLS handshake. Default 10 s.
    pub handshake_timeout: Duration,
    /// A connection must send its first request (HTTP/1.1 headers, or an HTTP/2 stream) this soon
    /// after it was accepted, or it is closed. Default 30 s; also hyper's HTTP/1 header-read timeout.
    pub first_request_timeout: Duration,
    /// A connection with no request in flight for this long is shut down gracefully. Default 60 s.
    pub idle_timeout: Duration,
    /// Most open connections; more are closed as soon as they are accepted. Default 1024.
    pub max_connections: usize,
    /// Most concurrent streams on one HTTP/2 connection. Default 100.
    pub max_concurrent_streams: u32,
    /// Most bytes of a request's head (HTTP/1.1: request line and headers; HTTP/2: the header
    /// list as HPACK counts it); a larger one gets `431`. Default 32 KiB, at least 8 KiB. Over
    /// HTTP/2 a header block beyond about 64 KiB has its stream refused by the h2 library
    /// instead, whatever this says.
    pub max_header_bytes: usize,
    /// How request bodies must arrive.
    pub body: BodyRules,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            first_request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_concurrent_streams: 100,
            max_header_bytes: 32 * 1024,
            body: BodyRules::default(),
        }
    }
}

/// The leaf certificate the client presented, if any; a request extension on every request.
///
/// Extract it in a handler with `Extension(peer): Extension<PeerCertificate>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCertificate(pub Option<CertificateDer<'static>>);

/// Serves `app` on `listener` until `shutdown` completes, then drains open connections.
///
/// With `tls`, connections are TLS (ALPN chooses HTTP/2 or HTTP/1.1); without it they are plain
/// HTTP, which is meant for in-process tests. Failed handshakes and accept errors are logged and
/// never end the loop, so this returns `Ok(())` once the drain is over; the `io::Result` leaves
/// room for start-up failures.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    settings: ConnectionSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let acceptor = tls.map(TlsAcceptor::from);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A timer enables hyper's HTTP/1 header-read timeout, which bounds slow-loris clients.
    // The read buffer bounds an HTTP/1 head (hyper answers 431 beyond it); hyper's own default
    // is about 400 KiB per connection. It must be at least 8 KiB (hyper panics below).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.first_request_timeout)
        .max_buf_size(settings.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.max_concurrent_streams)
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
    let (stop, stopping) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let mut refusals = Refusals::default();
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    tracing::info!(
        address = %listener.local_addr().map_or_else(|_| "unknown".to_owned(), |address| address.to_string()),
        tls = acceptor.is_some(),
        max_connections = settings.max_connections,
        "listening"
    );

    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            // Reap finished connection tasks so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        // Closed at once: the cap protects everything else the server does.
                        drop(stream);
                        refusals.record(settings.max_connections);
                        continue;
                    };
                    connections.spawn(serve_connection(Connection {
                        stream,
                        remote,
                        acceptor: acceptor.clone(),
                        builder: builder.clone(),
                        app: app.clone(),
                        settings,
                        stopping: stopping.clone(),
                        _slot: slot,
                    }));
                }
                Err(error) if is_connection_error(&error) => {
                    tracing::debug!(%error, "a connection failed before it was accepted");
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed; pausing before the next attempt");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }

    drop(listener);
    tracing::info!(connections = connections.len(), "stopped accepting; draining open connections");
    let _ = stop.send(true);
    let drained =
        tokio::time::timeout(DRAIN_DEADLINE, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            deadline_secs = DRAIN_DEADLINE.as_secs(),
            "connections still open at the drain deadline; closing them"
        );
        connections.shutdown().await;
    }
    tracing::info!("server stopped");
    Ok(())
}

/// Connections refused at the cap, logged at most once per [`REFUSAL_LOG_INTERVAL`].
#[derive(Default)]
struct Refusals {
    since_log: u64,
    logged_at: Option<Instant>,
}

impl Refusals {
    fn record(&mut self, cap: usize) {
        self.since_log = self.since_log.saturating_add(1);
        let now = Instant::now();
        if self.logged_at.is_some_and(|logged| now.saturating_duration_since(logged) < REFUSAL_LOG_INTERVAL) {
            return;
        }
        tracing::warn!(
            max_connections = cap,
            refused = self.since_log,
            "connection cap reached: closing new connections at once (logged at most once a minute)"
        );
        self.since_log = 0;
        self.logged_at = Some(now);
    }
}

/// Errors that concern a single connection, not the listener.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// One accepted connection and what serving it needs.
struct Connection {
    stream: TcpStream,
    remote: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    builder: auto::Builder<TokioExecutor>,
    app: Router,
    settings: ConnectionSettings,
    stopping: watch::Receiver<bool>,
    /// The connection's place under the cap, given back when the connection ends.
    _slot: OwnedSemaphorePermit,
}

async fn serve_connection(connection: Connection) {
    let Connection { stream, remote, acceptor, builder, app, settings, stopping, _slot } = connection;
    let accepted = Instant::now();
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%remote, %error, "cannot set TCP_NODELAY");
    }
    let Some(acceptor) = acceptor else {
        serve_http(stream, remote, PeerCertificate(None), &builder, app, settings, accepted, stopping).await;
        return;
    };
    let tls = match tokio::time::timeout(settings.handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%remote, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, timeout_ms = settings.handshake_timeout.as_millis(), "TLS handshake timed out");
            return;
        }
    };
    let peer =
        tls.get_ref().1.peer_certificates().and_then(|chain| chain.first()).map(|leaf| leaf.clone().into_owned());
    serve_http(tls, remote, PeerCertificate(peer), &builder, app, settings, accepted, stopping).await;
}

/// Requests on one connection: how many are in flight, how many there have been, and since when
/// (milliseconds after the connection was accepted) none has been in flight.
struct Activity {
    accepted: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    idle_since_ms: AtomicU64,
}

/// What the connection's timer decided.
enum Due {
    /// No request arrived in time: close the connection.
    NoRequest,
    /// Nothing in flight for the idle timeout: shut the connection down gracefully.
    Idle,
    /// Check again at this moment.
    Later(Instant),
}

impl Activity {
    fn new(accepted: Instant) -> Arc<Self> {
        Arc::new(Self {
            accepted,
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
        })
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.requests.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    fn due(&self, settings: &ConnectionSettings, now: Instant) -> Due {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return Due::Later(now + settings.idle_timeout);
        }
        if self.requests.load(Ordering::SeqCst) == 0 {
            let deadline = self.accepted + settings.first_request_timeout;
            return if now >= deadline { Due::NoRequest } else { Due::Later(deadline) };
        }
        let idle_since = self.accepted + Duration::from_millis(self.idle_since_ms.load(Ordering::SeqCst));
        let deadline = idle_since + settings.idle_timeout;
        if now >= deadline { Due::Idle } else { Due::Later(deadline) }
    }
}

/// One request in flight; it ends when its response body has been sent or dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            let since = Instant::now().saturating_duration_since(self.0.accepted);
            self.0.idle_since_ms.store(u64::try_from(since.as_millis()).unwrap_or(u64::MAX), Ordering::SeqCst);
        }
    }
}

/// A response body that keeps its request counted as in flight until it is done.
struct TrackedBody {
    body: axum::body::Body,
    _in_flight: InFlight,
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[expect(clippy::too_many_arguments, reason = "the pieces of one connection, passed once from serve_connection")]
async fn serve_http<S>(
    stream: S,
    remote: SocketAddr,
    peer: PeerCertificate,
    builder: &auto::Builder<TokioExecutor>,
    app: Router,
    settings: ConnectionSettings,
    accepted: Instant,
    mut stopping: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new(accepted);
    let tracker = activity.clone();
    let service = tower::service_fn(move |request: axum::http::Request<Incoming>| {
        let in_flight = tracker.begin();
        let mut request = request.map(|body| GuardedBody::new(body, settings.body));
        request.extensions_mut().insert(peer.clone());
        request.extensions_mut().insert(ConnectInfo(remote));
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await?;
            Ok::<_, Infallible>(response.map(|body| axum::body::Body::new(TrackedBody { body, _in_flight: in_flight })))
        }
    });
    let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    let mut connection = pin!(connection);
    // Once a graceful shutdown has begun, the moment the connection is dropped if it has not ended.
    let mut closing: Option<Instant> = None;
    let mut check = Instant::now();
    loop {
        let wake = closing.unwrap_or(check);
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(error) = ended {
                    // Clients that hang up mid-request land here; that is routine.
                    tracing::debug!(%remote, %error, "connection ended with an error");
                }
                return;
            }
            changed = stopping.changed(), if closing.is_none() => {
                if changed.is_err() || *stopping.borrow() {
                    connection.as_mut().graceful_shutdown();
                    // The server's drain deadline ends whatever is left.
                    closing = Some(Instant::now() + DRAIN_DEADLINE);
                }
            }
            () = tokio::time::sleep_until(wake) => {
                if closing.is_some() {
                    tracing::debug!(%remote, "connection did not finish after a graceful shutdown; closing it");
                    return;
                }
                match activity.due(&settings, Instant::now()) {
                    Due::NoRequest => {
                        tracing::debug!(%remote, "no request in time; closing the connection");
                        return;
                    }
                    Due::Idle => {
                        tracing::debug!(%remote, "connection idle; shutting it down");
                        connection.as_mut().graceful_shutdown();
                        closing = Some(Instant::now() + settings.idle_timeout);
                    }
                    Due::Later(next) => check = next,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{GeneratedTls, client_config, ensure_generated, server_config};
    use axum::Extension;
    use axum::http::StatusCode;
    use axum::routing::{get, post};
    use http_body_util::BodyExt;
    use rustls_pki_types::ServerName;
    use std::path::Path;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::oneshot;
    use tokio_rustls::TlsConnector;

    fn app() -> Router {
        Router::new()
            .route("/", get(|| async { "hello" }))
            .route(
                "/peer",
                get(|Extension(peer): Extension<PeerCertificate>, ConnectInfo(remote): ConnectInfo<SocketAddr>| async move {
                    let length = peer.0.map_or(0, |cert| cert.len());
                    format!("cert={length} ip={}", remote.ip())
                }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "slow done"
                }),
            )
            // Answers without reading the body, as every early rejection does.
            .route("/reject", post(|| async { (StatusCode::BAD_REQUEST, "rejected") }))
            // Reads the whole body and reports its length, or why it was cut.
            .route(
                "/read",
                post(|body: axum::body::Body| async move {
                    match body.collect().await {
                        Ok(collected) => (StatusCode::OK, format!("read {}", collected.to_bytes().len())),
                        Err(error) => match crate::body::cut_reason(error.into_inner().as_ref()) {
                            Some(cut) => (StatusCode::REQUEST_TIMEOUT, cut.to_string()),
                            None => (StatusCode::BAD_REQUEST, "unreadable".to_owned()),
                        },
                    }
                }),
            )
    }

    struct Running {
        address: SocketAddr,
        stop: oneshot::Sender<()>,
        task: tokio::task::JoinHandle<io::Result<()>>,
    }

    async fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Running {
        start_with(tls, ConnectionSettings::default()).await
    }

    async fn start_with(tls: Option<Arc<rustls::ServerConfig>>, settings: ConnectionSettings) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, tls, app(), settings, async move {
            let _ = stopped.await;
        }));
        Running { address, stop, task }
    }

    /// Sends one HTTP/1.1 request and returns the whole response, or the error that ended the read.
    async fn request<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, path: &str) -> io::Result<String> {
        let text = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(text.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok(String::from_utf8_lossy(&response).into_owned())
    }

    /// A TLS client trusting the generated CA, offering only HTTP/1.1 so the raw requests above work.
    fn connector(ca: &Path, identity: Option<(&Path, &Path)>) -> TlsConnector {
        let mut config = (*client_config(ca, identity).unwrap()).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(config))
    }

    async fn tls_request(address: SocketAddr, connector: &TlsConnector, name: &str, path: &str) -> io::Result<String> {
        let tcp = TcpStream::connect(address).await?;
        let server_name = ServerName::try_from(name.to_owned()).unwrap();
        let mut stream = connector.connect(server_name, tcp).await?;
        request(&mut stream, path).await
    }

    /// The certificate error inside a failed TLS request (tokio-rustls wraps it in an I/O error).
    fn certificate_error(result: io::Result<String>) -> rustls::CertificateError {
        let error = result.expect_err("the TLS request succeeded");
        match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::InvalidCertificate(certificate)) => certificate.clone(),
            _ => panic!("expected a certificate error, got {error:?}"),
        }
    }

    fn generated() -> (tempfile::TempDir, GeneratedTls) {
        let dir = tempfile::tempdir().unwrap();
        let tls = ensure_generated(dir.path(), &["tufa.test".into()]).unwrap();
        (dir, tls)
    }

    #[tokio::test]
    async fn plain_http_serves_without_a_peer_certificate() {
        let server = start(None).await;
        let mut stream = TcpStream::connect(server.address).await.unwrap();
        let response = request(&mut stream, "/peer").await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(response.ends_with("cert=0 ip=127.0.0.1"), "{response}");
        server.stop.send(()).unwrap();
        server.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn generated_certificate_verifies_against_the_ca_over_tls() {
        let (_dir, tls) = generated();
        let server = start(Some(server_config(&tls.cert, &tls.key, None).unwrap())).await;
        let connector = connector(&tls.ca_cert, None);
        for name in ["localhost", "127.0.0.1", "tufa.test"] {
            let response = tls_request(server.address, &connector, name, "/").await.unwrap();
            assert!(response.starts_with("HTTP/1.1 200 OK"), "{name}: {response}");
            assert!(response.ends_with("hello"), "{response}");
        }
        // A name the certificate does not carry fails verification.
        match certificate_error(tls_request(server.address, &connector, "other.test", "/").await) {
            rustls::CertificateError::NotValidForNameContext { expected, .. } => {
                assert_eq!(expected, ServerName::try_from("other.test").unwrap());
            }
            other => panic!("expected a name mismatch, got {other:?}"),
        }

        // With both protocols offered, ALPN picks HTTP/2.
        let tcp = TcpStream::connect(server.address).await.unwrap();
        let h2 = TlsConnector::from(client_config(&tls.ca_cert, None).unwrap());
        let stream = h2.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        drop(stream);

        server.stop.send(()).unwrap();
        server.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn failed_handshakes_do_not_stop_the_loop() {
        let (_dir, tls) = generated();
        let server = start(Some(server_config(&tls.cert, &tls.key, None).unwrap())).await;
        // Plain HTTP at a TLS port, and a connection that closes without a word.
        let mut plain = TcpStream::connect(server.address).await.unwrap();
        let _ = request(&mut plain, "/").await;
        drop(TcpStream::connect(server.address).await.unwrap());
        // A client that does not trust the server's CA.
        let (_other_dir, other) = generated();
        let untrusting = connector(&other.ca_cert, None);
        // Both CAs are named "Tufa local CA", so the client finds an issuer by name whose key
        // did not sign the server's certificate.
        assert_eq!(
            certificate_error(tls_request(server.address, &untrusting, "localhost", "/").await),
            rustls::CertificateError::BadSignature
        );

        let response = tls_request(server.address, &connector(&tls.ca_cert, None), "localhost", "/").await.unwrap();
        assert!(response.ends_with("hello"), "{response}");
        server.stop.send(()).unwrap();
        server.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn mutual_tls_rejects_clients_without_a_certificate_and_exposes_the_peer() {
        let (_dir, tls) = generated();
        // A client CA and a client certificate issued by it.
        let client_dir = tempfile::tempdir().unwrap();
        let client_ca_key = rcgen::KeyPair::generate().unwrap();
        let mut client_ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        client_ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let client_ca = rcgen::CertifiedIssuer::self_signed(client_ca_params, client_ca_key).unwrap();
        let client_key = rcgen::KeyPair::generate().unwrap();
        let mut client_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client_params.signed_by(&client_key, &client_ca).unwrap();
        let client_ca_file = client_dir.path().join("client-ca.crt");
        let client_cert_file = client_dir.path().join("client.crt");
        let client_key_file = client_dir.path().join("client.key");
        std::fs::write(&client_ca_file, client_ca.pem()).unwrap();
        std::fs::write(&client_cert_file, client_cert.pem()).unwrap();
        std::fs::write(&client_key_file, client_key.serialize_pem()).unwrap();

        let config = server_config(&tls.cert, &tls.key, Some(&client_ca_file)).unwrap();
        let server = start(Some(config)).await;

        // TLS 1.3 lets the client finish its side of the handshake; the refusal shows on first use.
        let anonymous = connector(&tls.ca_cert, None);
        if let Ok(response) = tls_request(server.address, &anonymous, "localhost", "/peer").await {
            assert!(!response.contains("200 OK"), "served without a client cert: {response}");
        }

        let authenticated = connector(&tls.ca_cert, Some((&client_cert_file, &client_key_file)));
        let response = tls_request(server.address, &authenticated, "localhost", "/peer").await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(response.ends_with(&format!("cert={} ip=127.0.0.1", client_cert.der().len())), "{response}");

        // A certificate from a CA the server does not trust is refused too.
        let stranger_key = rcgen::KeyPair::generate().unwrap();
        let stranger = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap().self_signed(&stranger_key).unwrap();
        let stranger_cert_file = client_dir.path().join("stranger.crt");
        let stranger_key_file = client_dir.path().join("stranger.key");
        std::fs::write(&stranger_cert_file, stranger.pem()).unwrap();
        std::fs::write(&stranger_key_file, stranger_key.serialize_pem()).unwrap();
        let stranger_connector = connector(&tls.ca_cert, Some((&stranger_cert_file, &stranger_key_file)));
        if let Ok(response) = tls_request(server.address, &stranger_connector, "localhost", "/peer").await {
            assert!(!response.contains("200 OK"), "served a stranger: {response}");
        }

        server.stop.send(()).unwrap();
        server.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn shutdown_finishes_in_flight_requests_and_stops_accepting() {
        let (_dir, tls) = generated();
        let server = start(Some(server_config(&tls.cert, &tls.key, None).unwrap())).await;
        let connector = connector(&tls.ca_cert, None);
        let address = server.address;
        let in_flight = tokio::spawn(async move { tls_request(address, &connector, "localhost", "/slow").await });
        // Let the request reach the handler, then shut down while it sleeps.
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.stop.send(()).unwrap();
        let started = std::time::Instant::now();
        server.task.await.unwrap().unwrap();
        assert!(started.elapsed() < Duration::from_secs(5), "drain took {:?}", started.elapsed());

        let response = in_flight.await.unwrap().unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(response.ends_with("slow done"), "{response}");
        let refused = TcpStream::connect(address).await.expect_err("still accepting after shutdown");
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused, "{refused:?}");
    }

    #[tokio::test]
    async fn shutdown_closes_idle_keep_alive_connections_promptly() {
        let server = start(None).await;
        let mut idle = TcpStream::connect(server.address).await.unwrap();
        idle.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
        let mut first = [0u8; 17];
        idle.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"HTTP/1.1 200 OK\r\n");
        server.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server.task).await.unwrap().unwrap().unwrap();
    }

    /// Short timers, so that the hygiene tests run in well under a second each.
    fn quick() -> ConnectionSettings {
        ConnectionSettings {
            handshake_timeout: Duration::from_millis(300),
            first_request_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(400),
            max_connections: 1024,
            max_concurrent_streams: 7,
            max_header_bytes: 16 * 1024,
            body: BodyRules {
                timeout: Duration::from_secs(5),
                min_rate: 1000,
                rate_grace: Duration::from_millis(300),
                drain_max_bytes: 1 << 20,
                drain_timeout: Duration::from_secs(5),
            },
        }
    }

    /// Reads until the server closes the connection; returns what arrived and how long it took.
    async fn until_closed<S: AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> (Vec<u8>, Duration) {
        let started = std::time::Instant::now();
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            match tokio::time::timeout(limit, stream.read(&mut buffer)).await {
                Ok(Ok(0) | Err(_)) => return (received, started.elapsed()),
                Ok(Ok(count)) => received.extend_from_slice(&buffer[..count]),
                Err(_) => panic!("the connection was still open after {limit:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_client_that_never_starts_the_tls_handshake_is_closed_at_the_handshake_timeout() {
        let (_dir, tls) = generated();
        let server = start_with(Some(server_config(&tls.cert, &tls.key, None).unwrap()), quick()).await;
        let mut silent = TcpStream::connect(server.address).await.unwrap();
        let (received, took) = until_closed(&mut silent, Duration::from_secs(5)).await;
        assert!(received.is_empty(), "{received:?}");
        assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(3), "{took:?}");
    }

    #[tokio::test]
    async fn a_tls_client_that_sends_no_request_is_closed_at_the_first_request_timeout() {
        let (_dir, tls) = generated();
        let server = start_with(Some(server_config(&tls.cert, &tls.key, None).unwrap()), quick()).await;
        // Both protocols offered: the server must detect the HTTP version, which waits for bytes.
        let tcp = TcpStream::connect(server.address).await.unwrap();
        let connector = TlsConnector::from(client_config(&tls.ca_cert, None).unwrap());
        let mut stream = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
        let (received, took) = until_closed(&mut stream, Duration::from_secs(5)).await;
        assert!(received.is_empty(), "{received:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    #[tokio::test]
    async fn a_slow_body_is_cut_and_answered() {
        let server = start_with(None, quick()).await;
        let mut stream = TcpStream::connect(server.address).await.unwrap();
        stream
            .write_all(b"POST /read HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n0123456789")
            .await
            .unwrap();
        // Ten bytes a second, well under the 1000 the server wants after its 300 ms grace; the
        // response is read while the client is still sending.
        let (mut reader, mut writer) = stream.into_split();
        let trickle = tokio::spawn(async move {
            for _ in 0..50 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if writer.write_all(b"x").await.is_err() {
                    break;
                }
            }
        });
        let (received, took) = until_closed(&mut reader, Duration::from_secs(10)).await;
        trickle.abort();
        let text = String::from_utf8_lossy(&received);
        assert!(text.starts_with("HTTP/1.1 408 Request Timeout"), "{text}");
        assert!(text.ends_with("the request body arrived at less than 1000 bytes per second"), "{text}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    #[tokio::test]
    async fn a_body_that_is_not_complete_in_time_is_cut() {
        let mut settings = quick();
        settings.body.min_rate = 0;
        settings.body.timeout = Duration::from_millis(500);
        let server = start_with(None, settings).await;
        let mut stream = TcpStream::connect(server.address).await.unwrap();
        stream.write_all(b"POST /read HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\n01234").await.unwrap();
        let started = std::time::Instant::now();
        let (received, _) = until_closed(&mut stream, Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&received);
        assert!(text.starts_with("HTTP/1.1 408 Request Timeout"), "{text}");
        assert!(text.ends_with("the request body was not complete within 0 s"), "{text}");
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        // A body that arrives in time is read whole.
        let mut stream = TcpStream::connect(server.address).await.unwrap();
        stream
            .write_all(
                b"POST /read HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789",
            )
            .await
            .unwrap();
        let (received, _) = until_closed(&mut stream, Duration::from_secs(5)).await;
        assert!(String::from_utf8_lossy(&received).ends_with("read 10"), "{received:?}");
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_are_closed_at_once() {
        let mut settings = quick();
        settings.max_connections = 2;
        settings.first_request_timeout = Duration::from_secs(30);
        let server = start_with(None, settings).await;
        let first = TcpStream::connect(server.address).await.unwrap();
        let _second = TcpStream::connect(server.address).await.unwrap();
        // Let the loop accept both before the third arrives.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut third = TcpStream::connect(server.address).await.unwrap();
        let (received, took) = until_closed(&mut third, Duration::from_secs(5)).await;
        assert!(received.is_empty(), "{received:?}");
        assert!(took < Duration::from_millis(500), "{took:?}");
        // A freed place is usable again.
        drop(first);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut fourth = TcpStream::connect(server.address).await.unwrap();
        let response = request(&mut fourth, "/").await.unwrap();
        assert!(response.ends_with("hello"), "{response}");
    }

    /// Raw HTTP/2 frames, enough to see exactly what the server sends (GOAWAY, RST_STREAM).
    mod h2 {
        use super::*;

        pub(super) const DATA: u8 = 0;
        pub(super) const HEADERS: u8 = 1;
        pub(super) const RST_STREAM: u8 = 3;
        pub(super) const SETTINGS: u8 = 4;
        pub(super) const PING: u8 = 6;
        pub(super) const GOAWAY: u8 = 7;

        #[derive(Debug)]
        pub(super) struct Frame {
            pub(super) kind: u8,
            pub(super) flags: u8,
            pub(super) stream: u32,
            pub(super) payload: Vec<u8>,
        }

        pub(super) async fn write(stream: &mut TcpStream, kind: u8, flags: u8, id: u32, payload: &[u8]) {
            let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
            frame.extend_from_slice(&[kind, flags]);
            frame.extend_from_slice(&id.to_be_bytes());
            frame.extend_from_slice(payload);
            stream.write_all(&frame).await.unwrap();
        }

        pub(super) async fn read(stream: &mut TcpStream) -> Option<Frame> {
            let mut header = [0u8; 9];
            stream.read_exact(&mut header).await.ok()?;
            let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let mut payload = vec![0u8; length];
            stream.read_exact(&mut payload).await.ok()?;
            let id = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
            Some(Frame { kind: header[3], flags: header[4], stream: id, payload })
        }

        /// Connects with prior knowledge, exchanges SETTINGS, and returns the server's SETTINGS.
        pub(super) async fn connect(address: SocketAddr) -> (TcpStream, Frame) {
            let mut stream = TcpStream::connect(address).await.unwrap();
            stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
            write(&mut stream, SETTINGS, 0, 0, &[]).await;
            let settings = read(&mut stream).await.unwrap();
            assert_eq!(settings.kind, SETTINGS, "{settings:?}");
            write(&mut stream, SETTINGS, 1, 0, &[]).await;
            (stream, settings)
        }

        /// An HPACK request header block: method (static index), path and authority as literals.
        pub(super) fn request(method_index: u8, path: &str) -> Vec<u8> {
            let mut block = vec![0x80 | method_index, 0x86, 0x04, path.len() as u8];
            block.extend_from_slice(path.as_bytes());
            block.extend_from_slice(&[0x01, 9]);
            block.extend_from_slice(b"localhost");
            block
        }
    }

    #[tokio::test]
    async fn http2_advertises_the_stream_cap() {
        let server = start_with(None, quick()).await;
        let (_stream, settings) = h2::connect(server.address).await;
        let advertised: Vec<(u16, u32)> = settings
            .payload
            .chunks(6)
            .map(|entry| {
                (u16::from_be_bytes([entry[0], entry[1]]), u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]))
            })
            .collect();
        // SETTINGS_MAX_CONCURRENT_STREAMS is identifier 3, SETTINGS_MAX_HEADER_LIST_SIZE 6.
        assert!(advertised.contains(&(3, 7)), "{advertised:?}");
        assert!(advertised.contains(&(6, 16 * 1024)), "{advertised:?}");
    }

    #[tokio::test]
    async fn an_http1_head_beyond_the_bound_gets_431_and_one_within_it_is_served() {
        let server = start_with(None, quick()).await;
        for (filler, status) in [(4 * 1024, "HTTP/1.1 200 OK"), (20 * 1024, "HTTP/1.1 431 ")] {
            let mut stream = TcpStream::connect(server.address).await.unwrap();
            let head = format!(
                "GET / HTTP/1.1\r\nHost: localhost\r\nX-Filler: {}\r\nConnection: close\r\n\r\n",
                "a".repeat(filler)
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut response = Vec::new();
            let _ = stream.read_to_end(&mut response).await;
            let response = String::from_utf8_lossy(&response);
            assert!(response.starts_with(status), "{filler} bytes of header: {response}");
        }
        server.stop.send(()).unwrap();
        server.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn an_idle_http2_connection_gets_goaway_even_while_the_client_pings() {
        let server = start_with(None, quick()).await;
        let (mut stream, _) = h2::connect(server.address).await;
        // GET / (method index 2), complete in one frame.
        h2::write(&mut stream, h2::HEADERS, 0x5, 1, &h2::request(2, "/")).await;
        let started = std::time::Instant::now();
        let mut pings = tokio::time::interval(Duration::from_millis(100));
        let mut answered = 0;
        let goaway = loop {
            tokio::select! {
                _ = pings.tick() => h2::write(&mut stream, h2::PING, 0, 0, &[7; 8]).await,
                frame = h2::read(&mut stream) => {
                    let frame = frame.expect("the connection closed without GOAWAY");
                    match frame.kind {
                        h2::PING if frame.flags == 1 => answered += 1,
                        h2::GOAWAY => break frame,
                        _ => {}
                    }
                }
            }
            assert!(started.elapsed() < Duration::from_secs(5), "no GOAWAY after {:?}", started.elapsed());
        };
        assert!(answered >= 2, "the server answered {answered} pings");
        // Error NO_ERROR: a graceful close. (h2 first announces the largest stream id, then the last
        // one it processed.)
        assert_eq!(&goaway.payload[4..8], &[0, 0, 0, 0], "{goaway:?}");
        assert!(started.elapsed() >= Duration::from_millis(350), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn http2_rejections_before_the_body_is_read_arrive_without_a_stream_reset() {
        let server = start_with(None, quick()).await;
        let (mut stream, _) = h2::connect(server.address).await;
        for id in [1u32, 3, 5, 7, 9] {
            // POST /reject (method index 3) whose body follows in several frames.
            h2::write(&mut stream, h2::HEADERS, 0x4, id, &h2::request(3, "/reject")).await;
            let mut status = None;
            let mut ended = false;
            for chunk in 0..8 {
                let last = chunk == 7;
                h2::write(&mut stream, h2::DATA, u8::from(last), id, &[b'x'; 4000]).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // Everything the server sends for this stream until its response has ended.
            while !ended {
                let frame = tokio::time::timeout(Duration::from_secs(5), h2::read(&mut stream))
                    .await
                    .expect("no response in time")
                    .expect("the connection closed");
                if frame.stream != id {
                    continue;
                }
                assert_ne!(frame.kind, h2::RST_STREAM, "stream {id} was reset: {frame:?}");
                match frame.kind {
                    // HPACK static index 12 is ":status: 400".
                    h2::HEADERS => status = frame.payload.first().copied(),
                    h2::DATA => {
                        assert_eq!(frame.payload, b"rejected");
                        ended = frame.flags & 1 == 1;
                    }
                    _ => {}
                }
                ended |= frame.kind == h2::HEADERS && frame.flags & 1 == 1;
            }
            assert_eq!(status, Some(0x80 | 12), "stream {id}");
        }
        // No reset may follow the responses either.
        h2::write(&mut stream, h2::PING, 0, 0, &[1; 8]).await;
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), h2::read(&mut stream)).await.unwrap().unwrap();
            assert_ne!(frame.kind, h2::RST_STREAM, "{frame:?}");
            if frame.kind == h2::PING {
                break;
            }
        }
    }

    #[tokio::test]
    async fn http2_a_cut_body_gets_its_answer_and_the_stream_is_not_reset_under_it() {
        // An idle timer longer than the test, so that no GOAWAY comes in between.
        let server = start_with(None, ConnectionSettings { idle_timeout: Duration::from_secs(10), ..quick() }).await;
        let (mut stream, _) = h2::connect(server.address).await;
        // POST /read (method index 3) with 100 bytes of a body that never ends: under the minimum
        // rate of 1000 bytes per second once the grace period is over.
        h2::write(&mut stream, h2::HEADERS, 0x4, 1, &h2::request(3, "/read")).await;
        h2::write(&mut stream, h2::DATA, 0, 1, &[b'x'; 100]).await;
        let mut answer = Vec::new();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), h2::read(&mut stream))
                .await
                .expect("no answer in time")
                .expect("the connection closed");
            assert_ne!(frame.kind, h2::RST_STREAM, "{frame:?}");
            if frame.stream == 1 && frame.kind == h2::DATA {
                answer.extend_from_slice(&frame.payload);
                if frame.flags & 1 == 1 {
                    break;
                }
            }
        }
        assert_eq!(String::from_utf8_lossy(&answer), "the request body arrived at less than 1000 bytes per second");
        // The stream stays open for the client to end its request (a reset here is what made curl
        // drop the answer) ...
        let quiet = tokio::time::timeout(Duration::from_millis(500), h2::read(&mut stream)).await;
        assert!(quiet.is_err(), "the server sent {quiet:?} while the client could still end its request");
        // ... and once the client has ended it, nothing is reset at all.
        h2::write(&mut stream, h2::DATA, 1, 1, &[]).await;
        h2::write(&mut stream, h2::PING, 0, 0, &[2; 8]).await;
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), h2::read(&mut stream)).await.unwrap().unwrap();
            assert_ne!(frame.kind, h2::RST_STREAM, "{frame:?}");
            if frame.kind == h2::PING {
                break;
            }
        }
    }
}
