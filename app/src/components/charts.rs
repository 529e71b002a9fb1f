//! Charts drawn as SVG on the server: they need no JavaScript, and their size depends on the
//! number of bars and lanes (aggregated on the server), never on a run's instance count.
use crate::model::{RunBar, RunTimeline};
use leptos::prelude::*;

const WIDTH: f64 = 1000.0;

fn seconds(ms: i64) -> String {
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 120_000 {
        format!("{:.1} s", ms as f64 / 1_000.0)
    } else {
        format!("{:.1} min", ms as f64 / 60_000.0)
    }
}

/// One bar per run, oldest left: height = duration, colour = outcome (the table below links
/// the runs; links inside SVG would not survive a client-side re-render as SVG elements).
pub fn history_chart(runs: Vec<RunBar>) -> impl IntoView {
    (!runs.is_empty()).then(|| {
        const HEIGHT: f64 = 120.0;
        let longest = runs.iter().filter_map(|r| r.duration_ms).max().unwrap_or(1).max(1);
        let slot = WIDTH / runs.len().max(10) as f64;
        let bars = runs
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let d = r.duration_ms.unwrap_or(0);
                // Runs that have not started still get a sliver, so every run is visible.
                let h = (d as f64 / longest as f64 * (HEIGHT - 4.0)).max(3.0);
                let label = format!(
                    "Run {} · {} · {}",
                    r.id,
                    r.state,
                    r.duration_ms.map_or_else(|| "not started".to_string(), seconds)
                );
                view! {
                    <rect class=format!("bar s-{}", r.state) data-run=r.id
                        x=format!("{:.1}", i as f64 * slot + slot * 0.1) y=format!("{:.1}", HEIGHT - h)
                        width=format!("{:.1}", slot * 0.8) height=format!("{h:.1}")>
                        <title>{label}</title>
                    </rect>
                }
            })
            .collect_view();
        view! {
            <figure class="chart" data-testid="run-history">
                <svg viewBox=format!("0 0 {WIDTH} {HEIGHT}") preserveAspectRatio="none" role="img"
                    aria-label="Duration and outcome of the latest runs">{bars}</svg>
                <figcaption class="muted">{format!("Latest runs, oldest first; the tallest took {}.", seconds(longest))}</figcaption>
            </figure>
        }
    })
}

/// Lanes over the run's time span: per instance (queued wait, then each attempt) or, when
/// aggregated, per task with each interval's shade showing how many attempts ran in it.
pub fn timeline_chart(timeline: RunTimeline) -> impl IntoView {
    (!timeline.lanes.is_empty()).then(|| {
        const LANE: f64 = 18.0;
        const LABEL: f64 = 180.0;
        let span = (timeline.end - timeline.start).max(1) as f64;
        let x = move |t: i64| LABEL + (t - timeline.start) as f64 / span * (WIDTH - LABEL);
        let height = timeline.lanes.len() as f64 * LANE + 4.0;
        let most = timeline
            .lanes
            .iter()
            .flat_map(|l| l.segments.iter().map(|s| s.count))
            .max()
            .unwrap_or(1)
            .max(1);
        let aggregated = timeline.aggregated;
        let lanes = timeline
            .lanes
            .into_iter()
            .enumerate()
            .map(|(i, lane)| {
                let y = i as f64 * LANE + 2.0;
                let label = lane.label.clone();
                let segments = lane
                    .segments
                    .into_iter()
                    .map(|s| {
                        let width = (x(s.to) - x(s.from)).max(1.5);
                        let opacity = if aggregated { 0.25 + 0.75 * s.count as f64 / most as f64 } else { 1.0 };
                        let title = if aggregated {
                            format!("{} · {} attempts {} · {} – {} after start", label, s.count, s.state,
                                seconds(s.from - timeline.start), seconds(s.to - timeline.start))
                        } else {
                            format!("{} · {} · try {} · {}", label, s.state, s.try_number, seconds(s.to - s.from))
                        };
                        view! {
                            <rect class=format!("seg-bar s-{}", s.state) data-try=s.try_number
                                x=format!("{:.1}", x(s.from)) y=format!("{:.1}", y + 2.0)
                                width=format!("{width:.1}") height=format!("{:.1}", LANE - 5.0)
                                fill-opacity=format!("{opacity:.2}")>
                                <title>{title}</title>
                            </rect>
                        }
                    })
                    .collect_view();
                view! {
                    <g data-lane=lane.label data-instance=lane.ti_id>
                        <text x="4" y=format!("{:.1}", y + LANE - 6.0) class="lane-label">{label.clone()}</text>
                        {segments}
                    </g>
                }
            })
            .collect_view();
        let caption = if aggregated {
            format!("Per task; darker = more attempts running at once (of at most {most}). Over {}.", seconds(span as i64))
        } else {
            format!("Per instance: queued, then each try. Over {}.", seconds(span as i64))
        };
        view! {
            <figure class="chart" data-testid="run-timeline" data-aggregated=aggregated.to_string()>
                <svg viewBox=format!("0 0 {WIDTH} {height:.0}") role="img" aria-label="Instances over time">{lanes}</svg>
                <figcaption class="muted">{caption}</figcaption>
            </figure>
        }
    })
}
