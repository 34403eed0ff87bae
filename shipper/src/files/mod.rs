//! Reading log files: [`lines`] turns bytes into lines, [`source`] says
//! which file generation they belong to, and the tracker (a private module)
//! owns every tailed file.

pub(crate) mod chunk;
pub mod lines;
pub mod multiline;
pub mod source;
pub(crate) mod tracker;
