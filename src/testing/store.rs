//! A journal store in memory that can be told to fail. Test code only.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;

use crate::window::journal::{Record, StateError};
use crate::window::store::Store;

/// A store in memory that can be told to fail.
#[derive(Debug, Default)]
pub(crate) struct MemStore {
    pub(crate) saved: RefCell<Option<Record>>,
    pub(crate) saves: Cell<u32>,
    pub(crate) fail: Cell<bool>,
}

impl Store for MemStore {
    fn load(&self) -> Result<Option<Record>, StateError> {
        Ok(self.saved.borrow().clone())
    }
    fn save(&self, record: &Record) -> Result<(), StateError> {
        if self.fail.get() {
            return Err(StateError::Write { path: self.location(), source: std::io::Error::other("disk full") });
        }
        self.saves.set(self.saves.get() + 1);
        *self.saved.borrow_mut() = Some(record.clone());
        Ok(())
    }
    fn location(&self) -> PathBuf {
        PathBuf::from("/mem/state.json")
    }
}
