//! The kinds of change the window makes, one module each, holding what both the doing (`execute`) and the undoing
//! (`restore`) of that kind use, so that neither borrows from the other. A step module works on the machine only
//! through [`super::Machine`]; it must not write the journal (execute and restore keep its discipline) nor decide
//! what to change (the plan does).

pub(crate) mod docker;
pub(crate) mod leftovers;
pub(crate) mod selinux;
