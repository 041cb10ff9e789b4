//! Traffic between namespaces: TCP, UDP and sink servers, and the probes that check what gets
//! through (TCP, UDP, ICMP, raw IP protocols, raw Ethernet frames).

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::Netns;

pub const SHORT: Duration = Duration::from_millis(700);

/// A thread serving in a namespace until dropped (the servers below).
struct ServerThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ServerThread {
    /// Runs `open` in `ns` (binding a socket), then `serve(socket, stop)` there; returns once
    /// the socket is bound, so that a test's first packet finds it.
    fn start<S: 'static>(
        ns: &Netns,
        open: impl FnOnce() -> S + Send + 'static,
        serve: impl FnOnce(S, &AtomicBool) + Send + 'static,
    ) -> ServerThread {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = ns.spawn(move || {
            let socket = open();
            let _ = ready_tx.send(());
            serve(socket, &s);
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).expect("server did not start");
        ServerThread { stop, thread: Some(thread) }
    }

    /// Accepts TCP connections on `addr:port`, each handled by `handle` on its own thread.
    fn tcp(ns: &Netns, addr: IpAddr, port: u16, handle: fn(TcpStream)) -> ServerThread {
        let open = move || {
            let listener = TcpListener::bind(SocketAddr::new(addr, port)).expect("bind");
            listener.set_nonblocking(true).expect("nonblocking");
            listener
        };
        ServerThread::start(ns, open, move |listener, stop| {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        std::thread::spawn(move || handle(stream));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP server in a namespace that answers every connection with "ok\n" and then echoes
/// what it receives (long-lived connections); stopped on drop.
pub struct TcpServer {
    _thread: ServerThread,
}

impl TcpServer {
    pub fn start(ns: &Netns, addr: IpAddr, port: u16) -> TcpServer {
        let greet_and_echo = |mut stream: TcpStream| {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = stream.write_all(b"ok\n");
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        };
        TcpServer { _thread: ServerThread::tcp(ns, addr, port, greet_and_echo) }
    }
}

/// Connects from `ns` and reads the greeting: true if the TCP connection works end to end.
pub fn tcp_ok(ns: &Netns, addr: IpAddr, port: u16) -> bool {
    ns.run(move || {
        let Ok(mut s) = TcpStream::connect_timeout(&SocketAddr::new(addr, port), SHORT) else { return false };
        let _ = s.set_read_timeout(Some(SHORT));
        let mut buf = [0u8; 3];
        s.read_exact(&mut buf).is_ok() && &buf == b"ok\n"
    })
}

/// A connection kept open from `ns`, for tests of long-lived flows.
pub struct LongConnection {
    stream: TcpStream,
}

impl LongConnection {
    pub fn open(ns: &Netns, addr: IpAddr, port: u16) -> LongConnection {
        let stream = ns.run(move || {
            let mut s = TcpStream::connect_timeout(&SocketAddr::new(addr, port), SHORT).expect("connect");
            s.set_read_timeout(Some(SHORT)).expect("timeout");
            let mut buf = [0u8; 3];
            s.read_exact(&mut buf).expect("greeting");
            s
        });
        LongConnection { stream }
    }

    /// Sends a line and expects it echoed.
    pub fn roundtrip(&mut self, text: &str) -> bool {
        if self.stream.write_all(text.as_bytes()).is_err() {
            return false;
        }
        let mut buf = vec![0u8; text.len()];
        self.stream.read_exact(&mut buf).is_ok() && buf == text.as_bytes()
    }
}

/// A UDP echo server; stopped on drop.
pub struct UdpServer {
    _thread: ServerThread,
    /// Datagrams received so far.
    pub received: Arc<AtomicUsize>,
}

impl UdpServer {
    pub fn start(ns: &Netns, addr: IpAddr, port: u16) -> UdpServer {
        let open = move || {
            let socket = UdpSocket::bind(SocketAddr::new(addr, port)).expect("bind");
            socket.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
            socket
        };
        let received = Arc::new(AtomicUsize::new(0));
        let counter = received.clone();
        let echo = move |socket: UdpSocket, stop: &AtomicBool| {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    counter.fetch_add(1, Ordering::Relaxed);
                    let _ = socket.send_to(&buf[..n], from);
                }
            }
        };
        UdpServer { _thread: ServerThread::start(ns, open, echo), received }
    }
}

/// Sends one datagram from `ns` and waits for the echo.
pub fn udp_ok(ns: &Netns, addr: IpAddr, port: u16) -> bool {
    ns.run(move || {
        let bind: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("addr");
        let socket = UdpSocket::bind(bind).expect("bind");
        socket.set_read_timeout(Some(SHORT)).expect("timeout");
        if socket.send_to(b"ping", SocketAddr::new(addr, port)).is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(socket.recv_from(&mut buf), Ok((4, _)))
    })
}

/// One ICMP echo from `ns` (the `ping` binary).
pub fn ping_ok(ns: &Netns, addr: IpAddr) -> bool {
    let target = addr.to_string();
    let family = if addr.is_ipv4() { "-4" } else { "-6" };
    ns.exec(&["ping", family, "-c", "1", "-W", "1", &target]).status.success()
}

/// Sends one raw IP packet of protocol `proto` (e.g. 132, SCTP; 47, GRE) from `from` to `dst`
/// and reports whether a raw socket in `to` received it: for rules on protocol numbers that no
/// ordinary tool speaks.
pub fn raw_ip_ok(from: &Netns, to: &Netns, dst: IpAddr, proto: u8) -> bool {
    let marker: [u8; 8] = *b"sgagent!";
    let family = if dst.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = to.spawn(move || {
        // SAFETY: plain socket calls on a descriptor this closure owns and closes.
        unsafe {
            let fd = libc::socket(family, libc::SOCK_RAW, i32::from(proto));
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            let tv = libc::timeval { tv_sec: 1, tv_usec: 0 };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::from_ref(&tv).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
            let _ = ready_tx.send(());
            let mut buf = [0u8; 2048];
            let deadline = Instant::now() + Duration::from_secs(1);
            let mut seen = false;
            while Instant::now() < deadline && !seen {
                let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                if n <= 0 {
                    break;
                }
                seen = buf[..n as usize].windows(marker.len()).any(|w| w == marker);
            }
            libc::close(fd);
            seen
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).expect("raw receiver did not start");
    from.run(move || {
        // SAFETY: as above; the address structs are fully initialised before use.
        unsafe {
            let fd = libc::socket(family, libc::SOCK_RAW, i32::from(proto));
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            match dst {
                IpAddr::V4(a) => {
                    let mut sa: libc::sockaddr_in = std::mem::zeroed();
                    sa.sin_family = libc::AF_INET as u16;
                    sa.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
                    libc::sendto(
                        fd,
                        marker.as_ptr().cast(),
                        marker.len(),
                        0,
                        std::ptr::from_ref(&sa).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as u32,
                    );
                }
                IpAddr::V6(a) => {
                    let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
                    sa.sin6_family = libc::AF_INET6 as u16;
                    sa.sin6_addr.s6_addr = a.octets();
                    libc::sendto(
                        fd,
                        marker.as_ptr().cast(),
                        marker.len(),
                        0,
                        std::ptr::from_ref(&sa).cast(),
                        std::mem::size_of::<libc::sockaddr_in6>() as u32,
                    );
                }
            }
            libc::close(fd);
        }
    });
    receiver.join().unwrap_or(false)
}

/// Connects from `ns` using source address `src` (which must be configured there): for
/// source/destination-check tests.
pub fn tcp_ok_from(ns: &Netns, src: IpAddr, addr: IpAddr, port: u16) -> bool {
    ns.run(move || {
        let domain = if src.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
        // SAFETY: socket/bind/connect with fully initialised address structs; fd closed.
        unsafe {
            let fd = libc::socket(domain, libc::SOCK_STREAM, 0);
            if fd < 0 {
                return false;
            }
            let ok = bind_to(fd, SocketAddr::new(src, 0));
            if !ok {
                libc::close(fd);
                return false;
            }
            let stream = <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd);
            connect_with_timeout(stream, SocketAddr::new(addr, port))
        }
    })
}

/// Binds a raw socket descriptor to `addr`.
unsafe fn bind_to(fd: i32, addr: SocketAddr) -> bool {
    // SAFETY: the caller passes a valid socket; address structs are zero-initialised then filled.
    unsafe {
        match addr {
            SocketAddr::V4(a) => {
                let mut sa: libc::sockaddr_in = std::mem::zeroed();
                sa.sin_family = libc::AF_INET as u16;
                sa.sin_port = a.port().to_be();
                sa.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                libc::bind(fd, std::ptr::from_ref(&sa).cast(), std::mem::size_of::<libc::sockaddr_in>() as u32) == 0
            }
            SocketAddr::V6(a) => {
                let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
                sa.sin6_family = libc::AF_INET6 as u16;
                sa.sin6_port = a.port().to_be();
                sa.sin6_addr.s6_addr = a.ip().octets();
                libc::bind(fd, std::ptr::from_ref(&sa).cast(), std::mem::size_of::<libc::sockaddr_in6>() as u32) == 0
            }
        }
    }
}

/// Connects a bound stream socket with a timeout (non-blocking connect + poll) and reads the
/// server's greeting.
fn connect_with_timeout(stream: TcpStream, to: SocketAddr) -> bool {
    use std::os::fd::AsRawFd as _;
    let fd = stream.as_raw_fd();
    let _ = stream.set_nonblocking(true);
    let (sa, len): (libc::sockaddr_storage, u32) = {
        // SAFETY: zeroed storage large enough for either family, then filled.
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match to {
            SocketAddr::V4(a) => {
                // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
                let sa = unsafe { &mut *std::ptr::from_mut(&mut ss).cast::<libc::sockaddr_in>() };
                sa.sin_family = libc::AF_INET as u16;
                sa.sin_port = a.port().to_be();
                sa.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                // SAFETY: as above, for sockaddr_in6.
                let sa = unsafe { &mut *std::ptr::from_mut(&mut ss).cast::<libc::sockaddr_in6>() };
                sa.sin6_family = libc::AF_INET6 as u16;
                sa.sin6_port = a.port().to_be();
                sa.sin6_addr.s6_addr = a.ip().octets();
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        (ss, len as u32)
    };
    // SAFETY: valid socket and address.
    unsafe { libc::connect(fd, std::ptr::from_ref(&sa).cast(), len) };
    let mut pfd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(&mut pfd, 1, SHORT.as_millis() as i32) };
    if ready != 1 || stream.take_error().ok().flatten().is_some() || stream.peer_addr().is_err() {
        return false;
    }
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(SHORT));
    let mut buf = [0u8; 3];
    (&stream).read_exact(&mut buf).is_ok() && &buf == b"ok\n"
}

/// A TCP server that swallows everything a client sends and, when the client shuts down its
/// sending side, answers with the byte count: for bulk transfers in one direction (path MTU
/// discovery tests). Stopped on drop.
pub struct SinkServer {
    _thread: ServerThread,
}

impl SinkServer {
    pub fn start(ns: &Netns, addr: IpAddr, port: u16) -> SinkServer {
        let count_bytes = |mut stream: TcpStream| {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
            let mut total = 0usize;
            let mut buf = [0u8; 65536];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n;
            }
            let _ = stream.write_all(format!("{total}\n").as_bytes());
        };
        SinkServer { _thread: ServerThread::tcp(ns, addr, port, count_bytes) }
    }
}

/// Sends `bytes` bytes from `ns` to a [`SinkServer`] and checks it got them all within
/// `within`.
pub fn bulk_send_ok(ns: &Netns, addr: IpAddr, port: u16, bytes: usize, within: Duration) -> bool {
    ns.run(move || {
        let Ok(mut s) = TcpStream::connect_timeout(&SocketAddr::new(addr, port), SHORT) else { return false };
        let _ = s.set_write_timeout(Some(within));
        let _ = s.set_read_timeout(Some(within));
        let data = vec![0x5au8; bytes];
        if s.write_all(&data).is_err() || s.shutdown(std::net::Shutdown::Write).is_err() {
            return false;
        }
        let mut answer = String::new();
        s.read_to_string(&mut answer).is_ok() && answer.trim() == bytes.to_string()
    })
}

/// Sends `count` datagrams of `payload` bytes from `ns`, source port `sport`, to `addr:port`,
/// each waiting for its echo; returns how many echoes came back.
pub fn udp_exchange(ns: &Netns, sport: u16, addr: IpAddr, port: u16, count: usize, payload: usize) -> usize {
    ns.run(move || {
        let bind: SocketAddr =
            if addr.is_ipv4() { SocketAddr::from(([0, 0, 0, 0], sport)) } else { SocketAddr::from(([0u16; 8], sport)) };
        let socket = UdpSocket::bind(bind).expect("bind");
        socket.set_read_timeout(Some(SHORT)).expect("timeout");
        let data = vec![0x42u8; payload];
        let mut buf = vec![0u8; payload + 16];
        (0..count)
            .filter(|_| {
                socket.send_to(&data, SocketAddr::new(addr, port)).is_ok() && socket.recv_from(&mut buf).is_ok()
            })
            .count()
    })
}

/// Sends raw Ethernet frames out of `ns`'s `eth0` (AF_PACKET): hostile frames reach the node's
/// XDP program exactly as written, malformed or not.
pub fn send_frames(ns: &Netns, frames: Vec<Vec<u8>>) -> usize {
    ns.run(move || {
        // SAFETY: plain socket calls with a fully initialised sockaddr_ll; fd closed at the end.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = libc::if_nametoindex(c"eth0".as_ptr()) as i32;
            sll.sll_halen = 6;
            let sent = frames
                .iter()
                .filter(|f| {
                    libc::sendto(
                        fd,
                        f.as_ptr().cast(),
                        f.len(),
                        0,
                        std::ptr::from_ref(&sll).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    ) == f.len() as isize
                })
                .count();
            libc::close(fd);
            sent
        }
    })
}
