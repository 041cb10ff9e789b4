//! Readiness for systemd (`sd_notify`, SPEC §4): datagrams of `KEY=VALUE` lines to the socket
//! named by `NOTIFY_SOCKET` — a path, or an abstract name written with a leading `@`. A few lines
//! of protocol, so no library: when the variable is unset (not run by systemd) nothing is sent.
//!
//! `READY=1` goes out once the generation of the agent's own document is live (not when it has
//! merely found pinned state from an earlier agent), so units ordered after `sg-agent.service`
//! start only once the node is protected and the control socket answers.

use std::{
    io,
    os::unix::net::{SocketAddr, UnixDatagram},
};

use crate::clock::monotonic_ns;

/// The variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// The address `NOTIFY_SOCKET` names.
fn address(name: &str) -> io::Result<SocketAddr> {
    match name.strip_prefix('@') {
        Some(abstract_name) => {
            use std::os::linux::net::SocketAddrExt as _;
            SocketAddr::from_abstract_name(abstract_name.as_bytes())
        }
        None if name.starts_with('/') => SocketAddr::from_pathname(name),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{NOTIFY_SOCKET}={name:?} is neither a path nor @name"),
        )),
    }
}

/// Sends one notification; `Ok(false)` when not run under systemd.
pub fn send(message: &str) -> io::Result<bool> {
    let Some(name) = std::env::var_os(NOTIFY_SOCKET) else { return Ok(false) };
    let name = name.to_string_lossy();
    let addr = address(&name)?;
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(message.as_bytes(), &addr)?;
    Ok(true)
}

/// Sends, logging (not failing) when the socket cannot be reached: readiness is a courtesy to
/// the service manager, never a reason to stop enforcing.
fn notify(message: &str) {
    if let Err(e) = send(message) {
        log::warn!("sd_notify ({}): {e}", message.lines().next().unwrap_or_default());
    }
}

/// The generation of this agent's document is live: ready (again, after a reload).
pub fn ready(generation: u64) {
    notify(&format!("READY=1\nSTATUS=generation {generation} live"));
}

/// A reload (SIGHUP) starts. systemd requires the monotonic time with it, to tell this reload's
/// `READY=1` from an earlier one.
pub fn reloading() {
    notify(&format!("RELOADING=1\nSTATUS=reloading\nMONOTONIC_USEC={}", monotonic_ns() / 1000));
}

/// A reload failed: the generation before it stays in force.
pub fn reload_failed(generation: u64) {
    notify(&format!("READY=1\nSTATUS=reload failed; generation {generation} stays live"));
}

/// The agent stops (enforcement stays in place).
pub fn stopping() {
    notify("STOPPING=1\nSTATUS=stopping; enforcement stays in place");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_abstract_names() {
        use std::os::linux::net::SocketAddrExt as _;
        assert_eq!(
            address("/run/systemd/notify").unwrap().as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        assert_eq!(address("@sg-agent-test").unwrap().as_abstract_name(), Some(&b"sg-agent-test"[..]));
        assert!(address("relative/path").is_err());
    }

    #[test]
    fn a_datagram_reaches_a_bound_path_socket() {
        let path = std::env::temp_dir().join(format!("sg-notify-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let receiver = UnixDatagram::bind(&path).unwrap();
        let socket = UnixDatagram::unbound().unwrap();
        socket.send_to_addr(b"READY=1", &address(path.to_str().unwrap()).unwrap()).unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_file(&path);
    }
}
