//! Attaching the programs to an interface (XDP on receive, TC on transmit), pinning the links
//! so that enforcement outlives the agent, and adopting links a previous agent pinned.

use std::{fmt, io, path::Path};

use aya::programs::{
    LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode,
    links::{FdLink, PinnedLink},
    tc::{self, NlOptions, TcAttachOptions},
    xdp::XdpLink,
};
use serde::{Deserialize, Serialize};

use super::DatapathError;

/// Which XDP mode to use (`--xdp-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeChoice {
    /// Native (driver) mode if the driver supports it, else generic.
    Auto,
    Native,
    Generic,
}

/// Which TC attachment to use (`--tc-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcModeChoice {
    /// tcx (a bpf_link, kernel 6.6+) if available, else a clsact qdisc filter.
    Auto,
    Tcx,
    Clsact,
}

/// How an interface ended up attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpAttached {
    Native,
    Generic,
    /// Taken over from a previous agent's pinned link (mode kept as it was).
    Adopted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcAttached {
    Tcx,
    Clsact,
    Adopted,
}

impl fmt::Display for XdpAttached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpAttached::Native => "xdp native",
            XdpAttached::Generic => "xdp generic",
            XdpAttached::Adopted => "xdp (adopted link)",
        })
    }
}

impl fmt::Display for TcAttached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TcAttached::Tcx => "tcx",
            TcAttached::Clsact => "clsact",
            TcAttached::Adopted => "tcx (adopted link)",
        })
    }
}

fn attach_error(
    interface: &str,
    step: &'static str,
    hint: &'static str,
    error: impl std::error::Error + Send + Sync + 'static,
) -> DatapathError {
    DatapathError::Attach { interface: interface.to_owned(), step, hint, source: Box::new(error) }
}

/// Puts the XDP program on `interface`, replacing the program of a link pinned at `pin` if
/// there is one (atomically: no packet goes unjudged), else attaching and pinning a new link.
pub fn attach_xdp(
    prog: &mut Xdp,
    interface: &str,
    pin: &Path,
    choice: XdpModeChoice,
) -> Result<XdpAttached, DatapathError> {
    let pinned = PinnedLink::from_pin(pin);
    if let Err(e) = &pinned {
        log::debug!("{interface}: no pinned XDP link at {}: {e}", pin.display());
    }
    if let Ok(pinned) = pinned {
        let link = XdpLink::try_from(FdLink::from(pinned));
        if let Err(e) = &link {
            log::info!("{interface}: pinned XDP link is not an XDP link ({e}); attaching anew");
        }
        if let Ok(link) = link {
            match prog.attach_to_link(link) {
                Ok(id) => {
                    // The pin keeps the link; our handle only needs to be let go without
                    // detaching (dropping an `XdpLink` closes its fd, which a pinned link survives).
                    drop(prog.take_link(id));
                    return Ok(XdpAttached::Adopted);
                }
                // The interface behind the link is gone (recreated with the same name): the link
                // is defunct, so start over below.
                Err(e) => log::info!("{interface}: pinned XDP link unusable ({e}); attaching anew"),
            }
        }
        let _ = std::fs::remove_file(pin);
    }
    let modes: &[(XdpMode, XdpAttached)] = match choice {
        XdpModeChoice::Auto => &[(XdpMode::Driver, XdpAttached::Native), (XdpMode::Skb, XdpAttached::Generic)],
        XdpModeChoice::Native => &[(XdpMode::Driver, XdpAttached::Native)],
        XdpModeChoice::Generic => &[(XdpMode::Skb, XdpAttached::Generic)],
    };
    let mut last_error = None;
    for (mode, attached) in modes {
        match prog.attach(interface, *mode) {
            Ok(id) => {
                let link = prog.take_link(id).map_err(|e| attach_error(interface, "attaching XDP", "", e))?;
                let fd_link = FdLink::try_from(link).map_err(|e| {
                    attach_error(
                        interface,
                        "attaching XDP",
                        " (the kernel gave no bpf_link: kernel 5.9+ is needed to pin it)",
                        e,
                    )
                })?;
                fd_link.pin(pin).map_err(|e| attach_error(interface, "pinning the XDP link", "", e))?;
                return Ok(*attached);
            }
            Err(e) => last_error = Some(e),
        }
    }
    let hint = match choice {
        XdpModeChoice::Native => " (try --xdp-mode generic)",
        _ => " (is another XDP program attached to it?)",
    };
    match last_error {
        Some(e) => Err(attach_error(interface, "attaching XDP", hint, e)),
        None => Err(attach_error(interface, "attaching XDP", "", io::Error::other("no XDP mode to try"))),
    }
}

/// Puts the TC program on `interface`'s egress: tcx link (pinned, adopted like XDP's), or a
/// clsact filter where tcx is missing (a filter persists in the qdisc by itself).
pub fn attach_tc(
    prog: &mut SchedClassifier,
    interface: &str,
    pin: &Path,
    choice: TcModeChoice,
) -> Result<TcAttached, DatapathError> {
    if choice != TcModeChoice::Clsact {
        if let Ok(pinned) = PinnedLink::from_pin(pin) {
            if let Ok(link) = aya::programs::tc::SchedClassifierLink::try_from(FdLink::from(pinned)) {
                match prog.attach_to_link(link) {
                    Ok(id) => {
                        drop(prog.take_link(id));
                        return Ok(TcAttached::Adopted);
                    }
                    Err(e) => log::info!("{interface}: pinned tcx link unusable ({e}); attaching anew"),
                }
            }
            let _ = std::fs::remove_file(pin);
        }
        let tcx =
            prog.attach_with_options(interface, TcAttachType::Egress, TcAttachOptions::TcxOrder(LinkOrder::default()));
        match tcx {
            Ok(id) => {
                let link = prog.take_link(id).map_err(|e| attach_error(interface, "attaching tcx", "", e))?;
                let fd_link = FdLink::try_from(link).map_err(|e| attach_error(interface, "attaching tcx", "", e))?;
                fd_link.pin(pin).map_err(|e| attach_error(interface, "pinning the tcx link", "", e))?;
                return Ok(TcAttached::Tcx);
            }
            Err(e) if choice == TcModeChoice::Tcx => {
                return Err(attach_error(
                    interface,
                    "attaching tcx",
                    " (tcx needs kernel 6.6+: try --tc-mode clsact)",
                    e,
                ));
            }
            Err(e) => log::info!("{interface}: tcx unavailable ({e}); using a clsact filter"),
        }
    }
    attach_clsact(prog, interface)
}

fn attach_clsact(prog: &mut SchedClassifier, interface: &str) -> Result<TcAttached, DatapathError> {
    // EEXIST (the qdisc is already there) is fine.
    if let Err(e) = tc::qdisc_add_clsact(interface) {
        log::debug!("{interface}: clsact qdisc: {e}");
    }
    // A previous agent's filter: replace it. (Unlike a tcx link there is no atomic program
    // swap here; the gap is one netlink round trip, and only on kernels without tcx.)
    let _ = tc::qdisc_detach_program(interface, TcAttachType::Egress, sg_common::maps::names::PROG_TC);
    let id = prog
        .attach_with_options(interface, TcAttachType::Egress, TcAttachOptions::Netlink(NlOptions::default()))
        .map_err(|e| attach_error(interface, "attaching TC (clsact)", "", e))?;
    let link = prog.take_link(id).map_err(|e| attach_error(interface, "attaching TC (clsact)", "", e))?;
    // The filter lives in the qdisc; dropping the handle would delete it.
    std::mem::forget(link);
    Ok(TcAttached::Clsact)
}

/// Removes enforcement from `interface`: unpins (and so detaches) its links, removes a clsact
/// filter of ours. Missing pieces are not errors.
pub fn detach(interface: &str, xdp_pin: &Path, tc_pin: &Path) {
    for pin in [xdp_pin, tc_pin] {
        if let Ok(link) = PinnedLink::from_pin(pin) {
            match link.unpin() {
                // Dropping the last reference detaches the link.
                Ok(fd_link) => drop(fd_link),
                Err(e) => log::warn!("{interface}: removing {}: {e}", pin.display()),
            }
        }
    }
    let _ = tc::qdisc_detach_program(interface, TcAttachType::Egress, sg_common::maps::names::PROG_TC);
}
