//! The trialflow UI and its API contract: pages, components, the DTOs shared by server and browser,
//! and the server functions. Server-only code sits behind the `ssr` feature; the browser bundle is
//! built with `hydrate`.
#![recursion_limit = "256"]

pub mod api;
pub mod components;
pub mod error;
pub mod live;
pub mod model;
pub mod pages;
#[cfg(feature = "ssr")]
pub mod port;
pub mod state;

mod shell;
pub use shell::{App, shell};

#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(App);
    // A marker for end-to-end tests: interactive controls work from here on.
    if let Some(body) = leptos::prelude::document().body() {
        let _ = body.set_attribute("data-hydrated", "");
    }
}
