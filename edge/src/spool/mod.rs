//! spool (in progress)
