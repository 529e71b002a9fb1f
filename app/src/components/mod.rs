//! Pieces shared by several pages.
pub mod charts;
pub mod layout;
pub mod notice;
pub mod time;
pub mod widgets;
