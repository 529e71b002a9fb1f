//! Live updates in the browser: an `EventSource` on one of the server's event streams.
//! The browser never polls; it reacts to what the server pushes, and `EventSource` reconnects
//! by itself with `Last-Event-ID`, so the server resumes without gaps.
/// Opens `url` once the page is hydrated and calls `on_event(name, data)` for each event of the
/// given names; `on_event` returns `false` to close the stream (a stream the server ends would
/// otherwise be reopened by the browser). The stream also closes when the calling component
/// goes away. Does nothing on the server.
pub fn subscribe(
    url: String,
    names: &'static [&'static str],
    on_event: impl Fn(&str, String) -> bool + Clone + 'static,
) {
    #[cfg(feature = "hydrate")]
    {
        use leptos::prelude::*;
        use wasm_bindgen::JsCast;
        use wasm_bindgen::closure::Closure;
        type Held = Option<(
            web_sys::EventSource,
            Vec<Closure<dyn FnMut(web_sys::MessageEvent)>>,
        )>;
        let Ok(source) = web_sys::EventSource::new(&url) else {
            return;
        };
        let held: StoredValue<Held, LocalStorage> = StoredValue::new_local(None);
        // Closing from inside a listener must not drop that listener while it runs.
        let close = move || {
            held.with_value(|h| {
                if let Some((source, _)) = h {
                    source.close();
                }
            })
        };
        let mut listeners = Vec::new();
        for name in names {
            let on_event = on_event.clone();
            let listener = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(
                move |ev: web_sys::MessageEvent| {
                    if !on_event(name, ev.data().as_string().unwrap_or_default()) {
                        close();
                    }
                },
            );
            let _ =
                source.add_event_listener_with_callback(name, listener.as_ref().unchecked_ref());
            listeners.push(listener);
        }
        held.set_value(Some((source, listeners)));
        on_cleanup(move || {
            held.update_value(|h| {
                if let Some((source, _)) = h.take() {
                    source.close();
                }
            })
        });
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = (url, names, on_event);
    }
}
