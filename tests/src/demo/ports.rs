//! The demo's fixed ports, with a fallback to any free port when one is taken.
//!
//! The child binaries read their listen addresses from a config file written before they
//! start, so the demo cannot hand them "port 0" and learn the result: it checks the port here,
//! lets it go, and writes it into the config. Another program could take it in between; the
//! child then fails to start and says so in its log, which the demo prints.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// A port the demo will use, and whether it is the one asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Picked {
    pub addr: SocketAddr,
    /// The preferred port was taken (or 0 was asked for) and the OS chose this one.
    pub fell_back: bool,
}

impl Picked {
    /// "" or " (3333 was taken)", to print after the address.
    pub fn note(&self, preferred: u16) -> String {
        if self.fell_back && preferred != 0 {
            format!(" ({preferred} was taken)")
        } else {
            String::new()
        }
    }
}

/// `127.0.0.1:preferred` when it can be bound now, else a free port on 127.0.0.1
/// (`preferred = 0` always takes a free port).
pub fn pick(preferred: u16) -> io::Result<Picked> {
    pick_held(preferred).map(|(p, _)| p)
}

/// [`pick`], keeping the port bound: hold the listeners of several picks until all are made, so
/// two fallbacks cannot be handed the same free port; drop them just before the servers start.
pub fn pick_held(preferred: u16) -> io::Result<(Picked, TcpListener)> {
    if preferred != 0 {
        if let Ok(l) = TcpListener::bind((Ipv4Addr::LOCALHOST, preferred)) {
            let picked = Picked {
                addr: l.local_addr()?,
                fell_back: false,
            };
            return Ok((picked, l));
        }
    }
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let picked = Picked {
        addr: l.local_addr()?,
        fell_back: true,
    };
    Ok((picked, l))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_falls_back_to_a_free_one() {
        let held = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = held.local_addr().unwrap().port();
        let p = pick(port).unwrap();
        assert!(p.fell_back);
        assert_ne!(p.addr.port(), port);
        assert!(p.addr.ip().is_loopback());
        assert_eq!(p.note(port), format!(" ({port} was taken)"));
        assert_eq!(p.note(0), "");
        drop(held);
        let again = pick(port).unwrap();
        assert_eq!((again.addr.port(), again.fell_back), (port, false));
    }
}
