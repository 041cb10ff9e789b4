//! Interfaces that come and go: the kernel's link notifications (rtnetlink `RTMGRP_LINK`), so
//! that an instance's interface is attached the moment it appears (a VM restart re-creates its
//! tap) and forgotten the moment it vanishes.
//!
//! A plain `NETLINK_ROUTE` socket read through tokio; messages are parsed here with bounds
//! checks (`nlmsghdr` → `ifinfomsg` → `IFLA_IFNAME`). If the kernel drops notifications
//! (`ENOBUFS`, the socket's buffer overflowed), the watcher reports [`LinkEvent::Resync`] and
//! the agent re-reads every interface instead of trusting what it missed.

use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use tokio::io::unix::AsyncFd;

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// An interface exists (new, or changed: renamed, up/down).
    Present { name: String, ifindex: u32 },
    /// An interface is gone.
    Gone { name: String, ifindex: u32 },
    /// Notifications were lost: re-read the state of every interface.
    Resync,
}

const RTMGRP_LINK: u32 = 1;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const IFLA_IFNAME: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const RTA_HDRLEN: usize = 4;

/// A netlink socket subscribed to link notifications in this network namespace.
pub struct LinkWatcher {
    fd: AsyncFd<OwnedFd>,
    buf: Vec<u8>,
}

impl LinkWatcher {
    pub fn new() -> io::Result<LinkWatcher> {
        // SAFETY: plain socket(2) call; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: an all-zero sockaddr_nl is valid; the fields that matter are set below.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = RTMGRP_LINK;
        // SAFETY: `addr` is a valid sockaddr_nl of the size given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast::<libc::sockaddr>(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the AsyncFd owns `fd` and always returns that same descriptor.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(LinkWatcher { fd, buf: vec![0u8; 64 << 10] })
    }

    /// The next batch of events (one datagram may carry several messages).
    pub async fn next(&mut self) -> io::Result<Vec<LinkEvent>> {
        loop {
            let mut guard = self.fd.readable().await?;
            let buf = &mut self.buf;
            let result = guard.try_io(|fd| {
                // SAFETY: `buf` is writable for its length.
                let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
            });
            match result {
                Ok(Ok(n)) => return Ok(parse(self.buf.get(..n).unwrap_or_default())),
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(vec![LinkEvent::Resync]),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                // Spurious readiness.
                Err(_would_block) => continue,
            }
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The link events in a netlink datagram; anything malformed is skipped.
pub fn parse(datagram: &[u8]) -> Vec<LinkEvent> {
    let mut events = Vec::new();
    let mut at = 0;
    while let Some(len) = u32_at(datagram, at).map(|l| l as usize) {
        if len < NLMSG_HDRLEN {
            break;
        }
        let Some(message) = datagram.get(at..at + len) else { break };
        let kind = u16_at(message, 4).unwrap_or_default();
        if (kind == RTM_NEWLINK || kind == RTM_DELLINK)
            && let Some(event) = link_event(kind, message.get(NLMSG_HDRLEN..).unwrap_or_default())
        {
            events.push(event);
        }
        // Messages are 4-byte aligned.
        at += (len + 3) & !3;
    }
    events
}

/// `ifinfomsg` then attributes: the interface index and its name.
fn link_event(kind: u16, body: &[u8]) -> Option<LinkEvent> {
    let ifindex = u32_at(body, 4)?;
    let mut at = IFINFOMSG_LEN;
    while let Some(rta_len) = u16_at(body, at).map(usize::from) {
        if rta_len < RTA_HDRLEN {
            return None;
        }
        let rta_type = u16_at(body, at + 2)? & 0x3fff;
        if rta_type == IFLA_IFNAME {
            let value = body.get(at + RTA_HDRLEN..at + rta_len)?;
            let name = value.split(|b| *b == 0).next().unwrap_or_default();
            let name = String::from_utf8_lossy(name).into_owned();
            return Some(if kind == RTM_NEWLINK {
                LinkEvent::Present { name, ifindex }
            } else {
                LinkEvent::Gone { name, ifindex }
            });
        }
        at += (rta_len + 3) & !3;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RTM_NEWLINK/DELLINK message as the kernel writes it: header, ifinfomsg, then an
    /// unrelated attribute and IFLA_IFNAME.
    fn message(kind: u16, ifindex: u32, name: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        // IFLA_MTU (4), 4 bytes.
        attrs.extend_from_slice(&8u16.to_ne_bytes());
        attrs.extend_from_slice(&4u16.to_ne_bytes());
        attrs.extend_from_slice(&1500u32.to_ne_bytes());
        let mut value = name.as_bytes().to_vec();
        value.push(0);
        attrs.extend_from_slice(&((RTA_HDRLEN + value.len()) as u16).to_ne_bytes());
        attrs.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
        attrs.extend_from_slice(&value);
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut ifinfo = vec![0u8; IFINFOMSG_LEN];
        ifinfo[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        let len = NLMSG_HDRLEN + ifinfo.len() + attrs.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0u8; 10]);
        m.extend_from_slice(&ifinfo);
        m.extend_from_slice(&attrs);
        m
    }

    #[test]
    fn new_and_deleted_links_are_read_from_one_datagram() {
        let mut d = message(RTM_NEWLINK, 7, "veth-web");
        d.extend(message(RTM_DELLINK, 9, "tap0"));
        assert_eq!(
            parse(&d),
            [
                LinkEvent::Present { name: "veth-web".into(), ifindex: 7 },
                LinkEvent::Gone { name: "tap0".into(), ifindex: 9 }
            ]
        );
    }

    #[test]
    fn truncated_or_lying_messages_are_skipped() {
        let d = message(RTM_NEWLINK, 7, "veth-web");
        for cut in 0..d.len() {
            let events = parse(&d[..cut]);
            assert!(events.is_empty(), "cut at {cut}: {events:?}");
        }
        let mut lying = d.clone();
        lying[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(parse(&lying).is_empty());
        let mut zero_attr = d;
        zero_attr[NLMSG_HDRLEN + IFINFOMSG_LEN..NLMSG_HDRLEN + IFINFOMSG_LEN + 2].copy_from_slice(&0u16.to_ne_bytes());
        assert!(parse(&zero_attr).is_empty());
    }

    #[tokio::test]
    async fn the_watcher_opens_in_this_namespace() {
        // Subscribing needs no privilege; events themselves are covered by the e2e tests.
        assert!(LinkWatcher::new().is_ok());
    }
}
