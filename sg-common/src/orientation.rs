//! How a packet relates to an instance: which hook saw it on the interface ([`Hook`]), what the
//! interface is to the instance ([`Role`]), and so which rule list judges it ([`Direction`]).
//! The kernel, the compiler, `explain` and the policy reader all use these same types.

use core::{fmt, str::FromStr};

/// Where a program saw the packet on an interface.
#[repr(u8)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Hook {
    /// XDP: the interface received the frame.
    Receive = 0,
    /// TC egress: the interface is transmitting the frame.
    Transmit = 1,
}

impl Hook {
    #[inline(always)]
    pub const fn opposite(self) -> Hook {
        match self {
            Hook::Receive => Hook::Transmit,
            Hook::Transmit => Hook::Receive,
        }
    }

    pub const fn from_u8(v: u8) -> Hook {
        if v == 0 { Hook::Receive } else { Hook::Transmit }
    }
}

/// What an interface is to its instance (SPEC §2 `role`). Stored as `u8` in
/// [`crate::maps::IfaceConfig::role`].
#[repr(u8)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "user", serde(rename_all = "lowercase"))]
pub enum Role {
    /// The interface leads to the instance (host side of a veth or tap): what it receives, the
    /// instance sent.
    #[default]
    Workload = 0,
    /// The interface is the node's own NIC; the instance is the node.
    Host = 1,
}

impl Role {
    #[inline(always)]
    pub const fn from_u8(v: u8) -> Role {
        if v == Role::Host as u8 { Role::Host } else { Role::Workload }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Role::Workload => "workload",
            Role::Host => "host",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Direction of a packet relative to the instance: which rule list judges it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "user", serde(rename_all = "lowercase"))]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    /// SPEC §2 `role`: a workload interface leads *to* the instance, so what it receives the
    /// instance sent; a host interface is the instance's own NIC.
    #[inline(always)]
    pub const fn of(role: Role, hook: Hook) -> Direction {
        match (role, hook) {
            (Role::Workload, Hook::Receive) | (Role::Host, Hook::Transmit) => Direction::Egress,
            (Role::Workload, Hook::Transmit) | (Role::Host, Hook::Receive) => Direction::Ingress,
        }
    }

    /// The hook at which an interface of `role` sees packets of this direction.
    #[inline(always)]
    pub const fn hook(self, role: Role) -> Hook {
        match (role, self) {
            (Role::Workload, Direction::Egress) | (Role::Host, Direction::Ingress) => Hook::Receive,
            (Role::Workload, Direction::Ingress) | (Role::Host, Direction::Egress) => Hook::Transmit,
        }
    }

    pub const fn opposite(self) -> Direction {
        match self {
            Direction::Ingress => Direction::Egress,
            Direction::Egress => Direction::Ingress,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Direction {
    type Err = &'static str;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "ingress" | "inbound" => Ok(Direction::Ingress),
            "egress" | "outbound" => Ok(Direction::Egress),
            _ => Err("expected ingress or egress"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_and_hook_are_inverse_for_both_roles() {
        for role in [Role::Workload, Role::Host] {
            for hook in [Hook::Receive, Hook::Transmit] {
                assert_eq!(Direction::of(role, hook).hook(role), hook);
            }
        }
        assert_eq!(Direction::of(Role::Workload, Hook::Receive), Direction::Egress);
        assert_eq!(Direction::of(Role::Host, Hook::Receive), Direction::Ingress);
    }

    #[test]
    fn role_round_trips_through_its_map_byte() {
        for role in [Role::Workload, Role::Host] {
            assert_eq!(Role::from_u8(role as u8), role);
        }
        assert_eq!("egress".parse::<Direction>(), Ok(Direction::Egress));
        assert!("sideways".parse::<Direction>().is_err());
    }
}
