//! Small pieces the console pages share: state badges, progress bars, pagers, confirmations,
//! durations and query-string links.
use leptos::prelude::*;

/// A state as colour and text (never colour alone).
pub fn state_badge(state: &str) -> impl IntoView + use<> {
    view! { <span class=format!("badge state-{state}")>{state.replace('_', " ")}</span> }
}

/// `1.2 s`, `3 min 4 s`, `2 h 5 min`.
pub fn format_duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1_000 {
        return format!("{ms} ms");
    }
    if ms < 60_000 {
        return format!("{:.1} s", ms as f64 / 1000.0);
    }
    let s = ms / 1000;
    if s < 3600 {
        return format!("{} min {} s", s / 60, s % 60);
    }
    format!("{} h {} min", s / 3600, (s % 3600) / 60)
}

/// A stacked bar of instance states with its numbers in words for screen readers.
pub fn progress_bar(counts: &[(String, i64)], total: i64, done: i64) -> impl IntoView + use<> {
    let label = format!("{done} of {total} finished");
    let segments = counts
        .iter()
        .filter(|(_, n)| *n > 0 && total > 0)
        .map(|(state, n)| {
            let width = format!("width: {:.3}%", *n as f64 * 100.0 / total as f64);
            view! { <span class=format!("seg state-{state}") style=width title=format!("{state}: {n}")></span> }
        })
        .collect_view();
    view! {
        <div class="progress" role="progressbar" aria-label=label.clone()
            aria-valuemin="0" aria-valuemax=total.to_string() aria-valuenow=done.to_string()>
            {segments}
        </div>
        <span class="muted progress-text">{label}</span>
    }
}

/// Percent-encodes a query-string value.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `path?k=v&…` from the pairs that have a non-empty value.
pub fn link(path: &str, pairs: &[(&str, Option<String>)]) -> String {
    let query: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| {
            v.as_deref()
                .filter(|v| !v.is_empty())
                .map(|v| format!("{k}={}", encode(v)))
        })
        .collect();
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

/// Previous / next links around "page N".
pub fn pager(
    prev: Option<String>,
    page: u32,
    next: Option<String>,
    summary: String,
) -> impl IntoView + use<> {
    view! {
        <nav class="pager" aria-label="Pages">
            {prev.map(|href| view! { <a class="btn subtle" href=href rel="prev">"← Previous"</a> })}
            <span class="muted">{format!("Page {page}")} " · " {summary}</span>
            {next.map(|href| view! { <a class="btn subtle" href=href rel="next">"Next →"</a> })}
        </nav>
    }
}

/// A submit button that asks first: the first click shows the question with Confirm and Keep
/// buttons; only Confirm submits the surrounding form.
#[component]
pub fn ConfirmSubmit(
    label: String,
    question: String,
    #[prop(optional)] danger: bool,
) -> impl IntoView {
    let armed = RwSignal::new(false);
    let class = if danger { "btn danger" } else { "btn" };
    view! {
        <Show
            when=move || armed.get()
            fallback={
                let label = label.clone();
                move || view! {
                    <button type="button" class=class on:click=move |_| armed.set(true)>{label.clone()}</button>
                }
            }
        >
            <span class="confirm" role="group" aria-label="Confirm">
                <span>{question.clone()}</span>
                " "
                <button type="submit" class=class data-confirm="yes">"Confirm"</button>
                " "
                <button type="button" class="btn subtle" on:click=move |_| armed.set(false)>"Keep"</button>
            </span>
        </Show>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(420), "420 ms");
        assert_eq!(format_duration(1_250), "1.2 s");
        assert_eq!(format_duration(184_000), "3 min 4 s");
        assert_eq!(format_duration(7_500_000), "2 h 5 min");
    }

    #[test]
    fn links_keep_only_given_values_encoded() {
        assert_eq!(
            link(
                "/runs/3",
                &[
                    ("state", Some("failed".into())),
                    ("q", Some("a b&c".into())),
                    ("page", None)
                ]
            ),
            "/runs/3?state=failed&q=a%20b%26c"
        );
        assert_eq!(link("/runs", &[("q", Some(String::new()))]), "/runs");
    }
}
