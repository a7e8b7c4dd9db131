//! A TCP proxy that injects network faults between a consumer and the
//! emulators, for the end-to-end fault tests.
//!
//! It models the failures a consumer meets on a real network rather than a
//! clean error: a half-open connection (a NAT entry or load balancer that
//! dropped the flow without sending RST or FIN), a slow path, and a peer
//! that refuses service.
//!
//! - [`FaultProxy::freeze`]: every connection open at that moment stops
//!   forwarding in both directions for good. Nothing is closed: no FIN, no
//!   RST, bytes sent into it are read and held (the sender sees its writes
//!   succeed and no answer ever comes), and a side that closes is not told
//!   to the other. Connections accepted afterwards are forwarded normally,
//!   so a client that gives up on a hung request and dials again recovers.
//! - [`FaultProxy::close_frozen_upstreams`]: the server's side of every
//!   frozen connection is closed, as a server does once it notices its
//!   peer is gone (its writes time out, or a NAT answers them with RST);
//!   the client's side stays silent and open. Servers that allow one
//!   stream per key (Kinesis allows one subscription per consumer and
//!   shard) let a new one in only then.
//! - [`FaultProxy::delay`]: every chunk is forwarded after this delay (open
//!   and new connections), until set back to zero.
//! - [`FaultProxy::refuse`]: new connections are accepted and closed at
//!   once without a byte (open ones are left alone), until
//!   [`FaultProxy::forward`].
//!
//! Invariants: a frozen connection never forwards another byte and never
//! closes before the proxy is dropped; dropping the proxy closes every
//! socket it holds and stops its threads. Plain threads and blocking std
//! sockets: the proxy runs the same under every async runtime.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A fault-injecting TCP proxy on 127.0.0.1 to one upstream address.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    upstream: SocketAddr,
    stop: AtomicBool,
    refuse: AtomicBool,
    delay_ms: AtomicU64,
    accepted: AtomicU64,
    frozen: AtomicU64,
    /// Every connection proxied so far (both sockets kept for the drop).
    conns: Mutex<Vec<Arc<Conn>>>,
}

struct Conn {
    frozen: AtomicBool,
    down: TcpStream,
    up: TcpStream,
}

impl FaultProxy {
    /// A proxy to `upstream` (`host:port`, or a URL `http://host:port/`),
    /// forwarding until told otherwise.
    pub fn start(upstream: &str) -> std::io::Result<FaultProxy> {
        let host = upstream
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/');
        let upstream = host.to_socket_addrs()?.next().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{host} resolves to no address"),
            )
        })?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            stop: AtomicBool::new(false),
            refuse: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            frozen: AtomicU64::new(0),
            conns: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        thread::Builder::new()
            .name("fault-proxy-accept".into())
            .spawn(move || accept_loop(listener, s))?;
        Ok(FaultProxy { addr, shared })
    }

    /// `http://127.0.0.1:<port>`, to give a client as its endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The proxy's listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Freeze every connection open now (see the module doc); returns how
    /// many were frozen by this call.
    pub fn freeze(&self) -> usize {
        let conns = self.shared.conns.lock().expect("not poisoned");
        let mut n = 0;
        for c in conns.iter() {
            if !c.frozen.swap(true, Ordering::SeqCst) {
                n += 1;
            }
        }
        self.shared.frozen.fetch_add(n as u64, Ordering::SeqCst);
        n
    }

    /// Close the server's side of every frozen connection (see the module
    /// doc); the client's side stays frozen.
    pub fn close_frozen_upstreams(&self) {
        for c in self.shared.conns.lock().expect("not poisoned").iter() {
            if c.frozen.load(Ordering::SeqCst) {
                let _ = c.up.shutdown(Shutdown::Both);
            }
        }
    }

    /// Forward every chunk after `delay` (zero: at once).
    pub fn delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Close new connections at once, without forwarding them.
    pub fn refuse(&self) {
        self.shared.refuse.store(true, Ordering::SeqCst);
    }

    /// Forward new connections again (after [`FaultProxy::refuse`]).
    pub fn forward(&self) {
        self.shared.refuse.store(false, Ordering::SeqCst);
    }

    /// Connections accepted so far (refused ones included).
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections frozen so far.
    pub fn frozen(&self) -> u64 {
        self.shared.frozen.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for c in self.shared.conns.lock().expect("not poisoned").drain(..) {
            let _ = c.down.shutdown(Shutdown::Both);
            let _ = c.up.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let down = match listener.accept() {
            Ok((down, _)) => down,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => {
                thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if shared.refuse.load(Ordering::SeqCst) {
            drop(down);
            continue;
        }
        let _ = down.set_nonblocking(false);
        let Ok(up) = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(5)) else {
            continue;
        };
        let _ = up.set_nodelay(true);
        let _ = down.set_nodelay(true);
        let (Ok(d2), Ok(u2)) = (down.try_clone(), up.try_clone()) else {
            continue;
        };
        let conn = Arc::new(Conn {
            frozen: AtomicBool::new(false),
            down,
            up,
        });
        shared
            .conns
            .lock()
            .expect("not poisoned")
            .push(conn.clone());
        let (c1, s1) = (conn.clone(), shared.clone());
        let (d3, u3) = match (d2.try_clone(), u2.try_clone()) {
            (Ok(d), Ok(u)) => (d, u),
            _ => continue,
        };
        let _ = thread::Builder::new()
            .name("fault-proxy-up".into())
            .spawn(move || pump(d2, u2, &c1, &s1));
        let s2 = shared.clone();
        let _ = thread::Builder::new()
            .name("fault-proxy-down".into())
            .spawn(move || pump(u3, d3, &conn, &s2));
    }
    // The listener drops here: new connections are refused by the kernel.
}

/// Copy `from` to `to` until either side ends, unless the connection is
/// frozen: then read and hold everything, forward nothing, close nothing.
fn pump(mut from: TcpStream, mut to: TcpStream, conn: &Conn, shared: &Shared) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let read = from.read(&mut buf);
        if conn.frozen.load(Ordering::SeqCst) {
            // A black hole: swallow what comes until the proxy is dropped
            // (its drop shuts the sockets down, which ends the read).
            match read {
                Ok(n) if n > 0 => continue,
                _ => {
                    while !shared.stop.load(Ordering::SeqCst) {
                        thread::sleep(Duration::from_millis(20));
                    }
                    return;
                }
            }
        }
        let n = match read {
            Ok(0) | Err(_) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
        };
        let delay = shared.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            thread::sleep(Duration::from_millis(delay));
        }
        if conn.frozen.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            let _ = from.shutdown(Shutdown::Read);
            return;
        }
    }
}
