//! Tiny HTTP servers for the lab's backends: one thread per backend address and TCP port,
//! inside the backend namespace (the thread joins it with `setns` before binding). Every
//! request gets `200 OK` and a one-line body naming the backend, so a client can tell which
//! real server answered; `GET /bytes/N` gets instead the N bytes of [`bulk_body`] (at most
//! [`BULK_CAPACITY`]), for bulk transfers through the lab. The threads live in the `sim` process, so a killed lab leaves no
//! server behind.
//!
//! Not here: anything beyond one request per connection (HTTP/1.0 style, `Connection:
//! close`), UDP services.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, anyhow};
use nix::sched::{CloneFlags, setns};

/// How often an idle server checks whether to stop.
const ACCEPT_POLL: Duration = Duration::from_millis(20);
/// A client has this long to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest request header read.
const REQUEST_CAPACITY: usize = 8192;
/// Largest body `GET /bytes/N` serves (larger requests get this many bytes).
pub const BULK_CAPACITY: usize = 256 << 20;
/// Time a client has to take a response (bulk bodies included).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Running servers; [`Servers::stop`] ends them.
#[derive(Debug)]
pub struct Servers {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

/// Join a named network namespace (this thread only).
pub fn enter_namespace(ns: &str) -> anyhow::Result<()> {
    let file = std::fs::File::open(format!("/run/netns/{ns}"))
        .with_context(|| format!("opening network namespace {ns}"))?;
    setns(&file, CloneFlags::CLONE_NEWNET).with_context(|| format!("setns into {ns}"))
}

/// The body of `GET /bytes/{length}`: a fixed pattern of printable bytes, so a client can
/// check a bulk transfer byte for byte.
pub fn bulk_body(length: usize) -> Vec<u8> {
    const PATTERN: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\n";
    PATTERN.iter().copied().cycle().take(length).collect()
}

/// The length a request line asks for with `GET /bytes/N`, if it does.
fn bulk_length(request: &[u8]) -> Option<usize> {
    let line = request.split(|&b| b == b'\r' || b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let path = line.strip_prefix("GET ")?.split(' ').next()?;
    let length: usize = path.strip_prefix("/bytes/")?.parse().ok()?;
    Some(length.min(BULK_CAPACITY))
}

/// The body a backend answers with.
pub fn body(name: &str, address: SocketAddr) -> String {
    format!("lbsim inline lab: backend {name} {address}\n")
}

impl Servers {
    /// Start one server per `(name, address)` in namespace `ns`; returns once all listen.
    pub fn start(ns: &str, services: &[(String, SocketAddr)]) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut servers = Self {
            stop: stop.clone(),
            handles: Vec::new(),
        };
        for (name, address) in services.iter().cloned() {
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let (ns, stop) = (ns.to_string(), stop.clone());
            let handle = std::thread::spawn(move || {
                let bound = enter_namespace(&ns).and_then(|()| {
                    let listener = TcpListener::bind(address)
                        .with_context(|| format!("binding {address} in {ns}"))?;
                    listener.set_nonblocking(true)?;
                    Ok(listener)
                });
                match bound {
                    Ok(listener) => {
                        let _ = ready_tx.send(Ok(()));
                        serve(&listener, &stop, &body(&name, address));
                    }
                    Err(error) => {
                        let _ = ready_tx.send(Err(format!("{error:#}")));
                    }
                }
            });
            servers.handles.push(handle);
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(message)) => return Err(anyhow!(message)),
                Err(_) => return Err(anyhow!("server thread for {address} ended early")),
            }
        }
        Ok(servers)
    }

    /// Stop every server and wait for them.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.halt();
    }
}

fn serve(listener: &TcpListener, stop: &AtomicBool, body: &str) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                // One bad client must not end the server.
                let _ = answer(stream, body);
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(ACCEPT_POLL);
            }
            Err(_) => std::thread::sleep(ACCEPT_POLL),
        }
    }
}

fn answer(mut stream: TcpStream, body: &str) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    let mut request = Vec::new();
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < REQUEST_CAPACITY {
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            break;
        }
        request.extend_from_slice(&chunk[..read]);
    }
    let body = match bulk_length(&request) {
        Some(length) => bulk_body(length),
        None => body.as_bytes().to_vec(),
    };
    let header = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.set_write_timeout(Some(RESPONSE_TIMEOUT))?;
    stream.write_all(header.as_bytes())?;
    stream.write_all(&body)?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_requests_are_recognised_and_capped() {
        assert_eq!(
            bulk_length(b"GET /bytes/2000000 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(2_000_000)
        );
        assert_eq!(
            bulk_length(b"GET /bytes/99999999999 HTTP/1.1\r\n\r\n"),
            Some(BULK_CAPACITY)
        );
        assert_eq!(bulk_length(b"GET / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(bulk_length(b"GET /bytes/x HTTP/1.1\r\n\r\n"), None);
        let body = bulk_body(70);
        assert_eq!(body.len(), 70);
        assert_eq!(&body[..3], b"012");
        assert_eq!(&body[62..65], b"\n01");
    }
}
