//! Tests of the plugin server over a real Unix socket (raw HTTP/1.1, as dockerd's plugin client speaks it) and of
//! the daemon client against a fake daemon socket.

use std::os::unix::fs::PermissionsExt;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::*;
use crate::testing::{APP_V1, TestDaemon, TestVerifier, data, policy};

/// Sends one request and returns the status code and the body.
async fn send(socket: &Path, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut stream = UnixStream::connect(socket).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    let (mut reader, mut writer) = stream.split();
    let write = async {
        // The server may answer (413) before reading everything; a broken pipe then is expected.
        let _ignored = writer.write_all(head.as_bytes()).await;
        let _ignored = writer.write_all(body).await;
    };
    let mut answer = Vec::new();
    let read = reader.read_to_end(&mut answer);
    let ((), read) = tokio::join!(write, read);
    read.unwrap();
    let text = String::from_utf8(answer).unwrap();
    let status = text.get(9..12).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

#[tokio::test]
async fn the_plugin_speaks_the_protocol_over_its_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("plugins/tufa.sock");
    let listener = bind_socket(&socket).await.unwrap();
    assert_eq!(std::fs::metadata(dir.path().join("plugins")).unwrap().permissions().mode() & 0o777, 0o755);
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o660);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve_listener(
        listener,
        PolicyHandle::new(policy()),
        Arc::new(TestVerifier::new()),
        Arc::new(TestDaemon::new()),
        async {
            let _ignored = stopped.await;
        },
    ));

    assert_eq!(send(&socket, "POST", "/Plugin.Activate", b"").await, (200, r#"{"Implements":["authz"]}"#.to_owned()));
    assert_eq!(
        send(&socket, "POST", "/AuthZPlugin.AuthZReq", &data("authz/create_privileged.json")).await,
        (
            200,
            r#"{"Allow":false,"Msg":"tufa: --privileged is not allowed by run-options.privileged","Err":""}"#
                .to_owned()
        )
    );
    assert_eq!(
        send(&socket, "POST", "/AuthZPlugin.AuthZReq", &data("authz/pull_tag.json")).await,
        (200, r#"{"Allow":true,"Msg":"","Err":""}"#.to_owned())
    );
    let response = br#"{"RequestMethod":"POST","RequestUri":"/v1.41/containers/create","ResponseStatusCode":201}"#;
    assert_eq!(
        send(&socket, "POST", "/AuthZPlugin.AuthZRes", response).await,
        (200, r#"{"Allow":true,"Msg":"","Err":""}"#.to_owned())
    );
    assert_eq!(
        send(&socket, "POST", "/AuthZPlugin.AuthZReq", b"{\"RequestUri\": 5}").await,
        (
            400,
            r#"{"Err":"the AuthZReq body is not valid: invalid type: integer `5`, expected a string at line 1 column 16"}"#
                .to_owned()
        )
    );
    assert_eq!(
        send(&socket, "POST", "/AuthZPlugin.AuthZReq", &vec![b' '; MAX_REQUEST_BYTES + 1]).await,
        (413, format!(r#"{{"Err":"the request body is larger than {MAX_REQUEST_BYTES} bytes"}}"#))
    );
    assert_eq!(
        send(&socket, "POST", "/VolumeDriver.Create", b"{}").await,
        (404, r#"{"Err":"unknown plugin endpoint /VolumeDriver.Create"}"#.to_owned())
    );
    assert_eq!(
        send(&socket, "GET", "/Plugin.Activate", b"").await,
        (405, r#"{"Err":"/Plugin.Activate takes POST"}"#.to_owned())
    );

    stop.send(()).unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn the_socket_path_is_handled_with_care() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("tufa.sock");
    // A socket nobody listens on any more is replaced.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let listener = bind_socket(&socket).await.unwrap();
    // One that is served is not.
    assert_eq!(
        bind_socket(&socket).await.map(|_| ()).map_err(|error| error.to_string()),
        Err(format!("{} is in use by a running process", socket.display()))
    );
    drop(listener);
    let file = dir.path().join("file");
    std::fs::write(&file, b"keep me").unwrap();
    assert_eq!(
        bind_socket(&file).await.map(|_| ()).map_err(|error| error.to_string()),
        Err(format!("{} exists and is not a socket; refusing to replace it", file.display()))
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

#[tokio::test]
async fn serve_plugin_removes_its_socket_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let config = PluginConfig { socket: dir.path().join("tufa.sock"), docker_socket: dir.path().join("docker.sock") };
    let (stop, stopped) = oneshot::channel::<()>();
    let server =
        tokio::spawn(serve_plugin(config.clone(), PolicyHandle::new(policy()), Arc::new(TestVerifier::new()), async {
            let _ignored = stopped.await;
        }));
    while !config.socket.exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The daemon socket does not exist: a create by tag cannot be checked against the local image, so it is denied.
    let (status, body) =
        send(&config.socket, "POST", "/AuthZPlugin.AuthZReq", &data("authz/create_trusted_tag.json")).await;
    assert_eq!(status, 200);
    let answer: AuthzResponse = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer.msg,
        format!(
            "tufa: image registry.example.com/team/app:v1 is not trusted: trust could not be decided: the Docker daemon \
             could not be asked about the image: cannot connect to {}: No such file or directory (os error 2) \
             (run-options.fail-open is off)",
            config.docker_socket.display()
        )
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(!config.socket.exists(), "the socket is removed");
}

/// A fake Docker daemon: `GET /images/{name}/json` for one image, 404 otherwise, 500 for "broken"; `GET
/// /networks/{id}` for the host network (by ID), an overlay and one answer without a driver.
async fn fake_daemon(listener: UnixListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { return };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                let path = request.uri().path().to_owned();
                let (status, body) = match path.as_str() {
                    "/images/registry.example.com/team/app:v1/json" | "/images/3fd9065eaf02/json" => (
                        StatusCode::OK,
                        format!(
                            r#"{{"Id":"sha256:3fd9065eaf02feaf94d68376da52541925650b81698c53c6824d92ff63f98353","RepoTags":["registry.example.com/team/app:v1"],"RepoDigests":["registry.example.com/team/app@{APP_V1}"],"Os":"linux"}}"#
                        ),
                    ),
                    "/images/broken/json" => (StatusCode::INTERNAL_SERVER_ERROR, r#"{"message":"boom"}"#.to_owned()),
                    "/images/name%20with%20space/json" => {
                        (StatusCode::OK, r#"{"RepoTags":null,"RepoDigests":[]}"#.to_owned())
                    }
                    "/networks/tv84yaq74tb7s76ghu5a29qiz" => (
                        StatusCode::OK,
                        r#"{"Name":"host","Id":"tv84yaq74tb7s76ghu5a29qiz","Scope":"local","Driver":"host","IPAM":{"Driver":"default","Config":[]}}"#.to_owned(),
                    ),
                    "/networks/ingress" => (StatusCode::OK, r#"{"Name":"ingress","Scope":"swarm","Driver":"overlay"}"#.to_owned()),
                    "/networks/odd" => (StatusCode::OK, r#"{"Name":"odd"}"#.to_owned()),
                    path if path.starts_with("/networks/") => {
                        (StatusCode::NOT_FOUND, r#"{"message":"network absent not found"}"#.to_owned())
                    }
                    _ => (StatusCode::NOT_FOUND, r#"{"message":"No such image"}"#.to_owned()),
                };
                let mut response = Response::new(Full::new(Bytes::from(body)));
                *response.status_mut() = status;
                Ok::<_, Infallible>(response)
            });
            let _ignored =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

#[tokio::test]
async fn the_daemon_client_reads_repo_tags_and_digests() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    tokio::spawn(fake_daemon(UnixListener::bind(&socket).unwrap()));
    let client = UnixDaemonClient::new(socket);
    let names =
        Some(vec!["registry.example.com/team/app:v1".to_owned(), format!("registry.example.com/team/app@{APP_V1}")]);
    assert_eq!(client.image_repo_digests("registry.example.com/team/app:v1").await, Ok(names.clone()));
    assert_eq!(client.image_repo_digests("3fd9065eaf02").await, Ok(names));
    assert_eq!(client.image_repo_digests("absent").await, Ok(None));
    assert_eq!(client.image_repo_digests("name with space").await, Ok(Some(vec![])));
    assert_eq!(
        client.image_repo_digests("broken").await,
        Err(r#"the daemon answered 500 Internal Server Error: {"message":"boom"}"#.to_owned())
    );
}

#[tokio::test]
async fn the_daemon_client_reads_network_drivers() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    tokio::spawn(fake_daemon(UnixListener::bind(&socket).unwrap()));
    let client = UnixDaemonClient::new(socket);
    assert_eq!(client.network_driver("tv84yaq74tb7s76ghu5a29qiz").await, Ok(Some("host".to_owned())));
    assert_eq!(client.network_driver("ingress").await, Ok(Some("overlay".to_owned())));
    assert_eq!(client.network_driver("absent").await, Ok(None));
    assert_eq!(client.network_driver("odd").await, Err("the daemon's network answer has no Driver".to_owned()));
}
