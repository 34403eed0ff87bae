//! A TCP proxy in front of the S3 server that can refuse or drop
//! connections, or answer 403.

use super::*;

// ---------------------------------------------------------------------------
// A TCP proxy that can refuse or drop connections

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Mode {
    /// Passes bytes both ways.
    Forward = 0,
    /// Not listening: connections are refused.
    Refuse = 1,
    /// Accepts connections and closes them at once.
    Drop = 2,
    /// Answers every request `403 Forbidden` (as S3 does to expired
    /// credentials), keeping the connection.
    Forbid = 3,
}

pub(super) struct ProxyShared {
    pub(super) mode: AtomicU8,
    pub(super) stop: AtomicBool,
    /// Open connections (both ends), cut when the proxy stops forwarding.
    pub(super) open: Mutex<Vec<TcpStream>>,
}

/// Forwards `127.0.0.1:port` to an upstream address, unless told not to.
pub(super) struct Proxy {
    pub(super) port: u16,
    pub(super) shared: Arc<ProxyShared>,
    pub(super) dropped: Arc<AtomicU64>,
    /// Requests answered 403.
    pub(super) forbidden: Arc<AtomicU64>,
    pub(super) thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    pub(super) fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(ProxyShared {
            mode: AtomicU8::new(Mode::Forward as u8),
            stop: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
        });
        let dropped = Arc::new(AtomicU64::new(0));
        let forbidden = Arc::new(AtomicU64::new(0));
        let (s, dropped2, upstream) = (shared.clone(), dropped.clone(), upstream.to_string());
        let forbidden2 = forbidden.clone();
        let thread = std::thread::spawn(move || {
            let mut listener = Some(listener);
            while !s.stop.load(Ordering::Relaxed) {
                let mode = s.mode.load(Ordering::SeqCst);
                if mode == Mode::Refuse as u8 {
                    listener = None;
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                let l = listener.get_or_insert_with(|| {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    loop {
                        match TcpListener::bind(("127.0.0.1", port)) {
                            Ok(l) => break l,
                            Err(e) if Instant::now() > deadline => {
                                panic!("proxy: bind port {port} again: {e}")
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(50)),
                        }
                    }
                });
                l.set_nonblocking(true).unwrap();
                match l.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        if mode == Mode::Drop as u8 {
                            dropped2.fetch_add(1, Ordering::Relaxed);
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        }
                        if mode == Mode::Forbid as u8 {
                            let (s, forbidden) = (s.clone(), forbidden2.clone());
                            std::thread::spawn(move || forbid(client, &s, &forbidden));
                            continue;
                        }
                        let Ok(server) = TcpStream::connect(&upstream) else {
                            continue;
                        };
                        {
                            let mut open = s.open.lock().unwrap();
                            open.retain(|c| c.peer_addr().is_ok());
                            if s.mode.load(Ordering::SeqCst) != Mode::Forward as u8 {
                                let _ = client.shutdown(Shutdown::Both);
                                let _ = server.shutdown(Shutdown::Both);
                                continue;
                            }
                            open.push(client.try_clone().unwrap());
                            open.push(server.try_clone().unwrap());
                        }
                        pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                        pump(server, client);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy {
            port,
            shared,
            dropped,
            forbidden,
            thread: Some(thread),
        }
    }

    /// Switches modes, cutting the connections of the mode before.
    pub(super) fn set(&self, mode: Mode) {
        self.shared.mode.store(mode as u8, Ordering::SeqCst);
        for c in self.shared.open.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// Reads requests (headers and a `Content-Length` body) and answers each
/// `403 Forbidden`, until the proxy leaves [`Mode::Forbid`] (which cuts
/// the connection) or the client closes it.
pub(super) fn forbid(client: TcpStream, shared: &ProxyShared, forbidden: &AtomicU64) {
    {
        let mut open = shared.open.lock().unwrap();
        if shared.mode.load(Ordering::SeqCst) != Mode::Forbid as u8 {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        open.push(client.try_clone().unwrap());
    }
    let _ = answer_403(&client, forbidden);
    let _ = client.shutdown(Shutdown::Both);
}

pub(super) fn answer_403(client: &TcpStream, forbidden: &AtomicU64) -> std::io::Result<()> {
    use std::io::{BufRead as _, Read as _, Write as _};
    let mut reader = std::io::BufReader::new(client.try_clone()?);
    let mut writer = client.try_clone()?;
    loop {
        let mut length = 0u64;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        std::io::copy(&mut (&mut reader).take(length), &mut std::io::sink())?;
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
                    <Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
        write!(
            writer,
            "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        forbidden.fetch_add(1, Ordering::Relaxed);
    }
}

/// Copies `from` to `to` on a thread until either end closes.
pub(super) fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.set(Mode::Refuse);
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
