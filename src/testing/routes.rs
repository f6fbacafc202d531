//! Routes in memory: answers each address from a table (no route for the others) and records what was asked.
//! Test code only: it asks no kernel.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::netlink::{LookupError, Route, RouteLookup};

/// A routing table of answers.
#[derive(Default)]
pub(crate) struct FakeRoutes {
    answers: BTreeMap<Ipv4Addr, Result<Route, LookupError>>,
    asked: RefCell<Vec<Ipv4Addr>>,
}

impl FakeRoutes {
    /// Answers `addr` with `r`.
    pub(crate) fn with(mut self, addr: Ipv4Addr, r: Result<Route, LookupError>) -> Self {
        self.answers.insert(addr, r);
        self
    }
    /// The addresses asked, in order; asking clears the record.
    pub(crate) fn asked(&self) -> Vec<Ipv4Addr> {
        self.asked.take()
    }
}

impl RouteLookup for FakeRoutes {
    fn route_to(&self, dst: Ipv4Addr) -> Result<Route, LookupError> {
        self.asked.borrow_mut().push(dst);
        self.answers.get(&dst).cloned().unwrap_or_else(|| Err(LookupError::NoRoute("Network is unreachable".into())))
    }
}
