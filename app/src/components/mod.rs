//! Pieces shared by several pages.
pub mod layout;
pub mod notice;
pub mod time;
pub mod widgets;
