//! The `notes` module: one shared index of the `.norg` files of the
//! configured Neorg workspaces — metadata, headings, links, todo items and
//! words — kept in step with the disk and on disk itself, served as
//! `search`, `backlinks`, `links`, `headings`, `tasks`, `files`, `stats` and
//! `reindex`.

#![warn(missing_docs)]

pub mod cache;
pub mod config;
pub mod index;
pub mod norg;
pub mod notes;
pub mod resolve;
pub mod scan;
pub mod service;
pub mod text;
pub mod watch;
