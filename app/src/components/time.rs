use leptos::prelude::*;

/// A moment in a table or list: `<time>` (kept on one line by the stylesheet) with the exact
/// instant in `datetime` and as a tooltip.
pub fn when(ms: i64) -> impl IntoView {
    let exact = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    view! { <time datetime=exact.clone() title=exact>{format_utc(ms)}</time> }
}

/// Formats milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM UTC`.
pub fn format_utc(ms: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "—".to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_epoch_millis_in_utc() {
        assert_eq!(super::format_utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(super::format_utc(1_764_000_000_000), "2025-11-24 16:00 UTC");
    }
}
