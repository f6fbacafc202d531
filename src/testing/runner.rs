//! Outside commands in memory: records each argv, answers `docker ps` with two containers.
//! Test code only: it runs nothing.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use crate::runner::{Outcome, RunError, Runner};

/// Records argv; exits with the code given for argv[0] (0 otherwise).
#[derive(Default)]
pub(crate) struct FakeRunner {
    pub(crate) calls: RefCell<Vec<Vec<String>>>,
    pub(crate) codes: BTreeMap<String, i32>,
}
impl Runner for FakeRunner {
    fn run(&self, argv: &[String], _user: &str, _t: Duration) -> Result<Outcome, RunError> {
        self.calls.borrow_mut().push(argv.to_vec());
        if argv[0] == "docker" && argv.get(1).map(String::as_str) == Some("ps") {
            return Ok(Outcome {
                code: Some(0),
                timed_out: false,
                stdout: "c1\nc2\n".into(),
                stderr_tail: String::new(),
            });
        }
        let code = self.codes.get(&argv[0]).copied().unwrap_or(0);
        Ok(Outcome { code: Some(code), timed_out: false, stdout: String::new(), stderr_tail: "boom".into() })
    }
}
