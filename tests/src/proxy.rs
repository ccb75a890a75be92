//! A TCP proxy that a test can cut and restore, to take a dependency (PostgreSQL, a signer)
//! away from a running server and bring it back on the same address.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

struct Running {
    stop: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    accept: JoinHandle<()>,
}

/// Forwards `127.0.0.1:<port>` to an upstream address while it is not cut.
pub struct TcpProxy {
    address: SocketAddr,
    upstream: SocketAddr,
    running: Mutex<Option<Running>>,
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buffer = [0_u8; 16 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(count) => {
                if to.write_all(&buffer[..count]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

fn serve(listener: TcpListener, upstream: SocketAddr) -> Running {
    let stop = Arc::new(AtomicBool::new(false));
    let connections: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
    listener.set_nonblocking(true).expect("non-blocking listener");
    let accept = {
        let (stop, connections) = (stop.clone(), connections.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                if let (Ok(client_copy), Ok(server_copy)) = (client.try_clone(), server.try_clone())
                    && let Ok(mut list) = connections.lock()
                {
                    list.push(client_copy);
                    list.push(server_copy);
                }
                let (client_read, server_read) = (client.try_clone(), server.try_clone());
                if let (Ok(client_read), Ok(server_read)) = (client_read, server_read) {
                    std::thread::spawn(move || pump(client_read, server));
                    std::thread::spawn(move || pump(server_read, client));
                }
            }
        })
    };
    Running { stop, connections, accept }
}

impl TcpProxy {
    /// Starts forwarding from a free local port to `upstream`.
    pub fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let address = listener.local_addr().expect("proxy address");
        TcpProxy { address, upstream, running: Mutex::new(Some(serve(listener, upstream))) }
    }

    /// The local address clients connect to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops accepting and closes every open connection: the upstream is gone for clients.
    pub fn cut(&self) {
        let running = self.running.lock().expect("proxy state").take();
        if let Some(running) = running {
            running.stop.store(true, Ordering::SeqCst);
            let _ = running.accept.join();
            for stream in running.connections.lock().expect("connections").drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }

    /// Listens again on the same address.
    pub fn restore(&self) {
        let mut running = self.running.lock().expect("proxy state");
        if running.is_none() {
            let listener = TcpListener::bind(self.address).expect("re-bind proxy on the same port");
            *running = Some(serve(listener, self.upstream));
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
    }
}
