//! The dashboard: what is running and queued, recent failures, pool usage, engine and worker
//! health. Refreshed live from the dashboard event stream (at most once a second).
use crate::api::system::dashboard;
use crate::components::notice::ErrorNotice;
use crate::components::time::when;
use crate::live::subscribe;
use crate::model::DashboardInfo;
use crate::pages::runs::runs_table;
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn DashboardPage() -> impl IntoView {
    let version = RwSignal::new(0u64);
    let info = Resource::new(move || version.get(), |_| dashboard());
    Effect::new(move |_| {
        // Without a snapshot yet (navigated to in the browser), refresh once at the start.
        let after = info
            .get_untracked()
            .and_then(Result::ok)
            .map_or(0, |d| d.last_event_id);
        let after = format!("?after={after}");
        subscribe(
            format!("/events/dashboard{after}"),
            &["update"],
            move |_, _| {
                version.update(|v| *v += 1);
                true
            },
        );
    });
    view! {
        <Title text="Dashboard · trialflow"/>
        <h1>"Dashboard"</h1>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || info.get().map(|res| match res {
                Ok(d) => dashboard_view(d).into_any(),
                Err(e) => view! { <ErrorNotice error=e/> }.into_any(),
            })}
        </Transition>
    }
}

fn dashboard_view(d: DashboardInfo) -> impl IntoView {
    let h = d.health;
    let alive = d.workers.iter().filter(|w| w.alive).count();
    let workers_class = if alive == 0 {
        "badge state-failed"
    } else {
        "badge state-success"
    };
    let pools = d
        .pools
        .iter()
        .map(|p| {
            let used = p.running.min(p.slots);
            view! {
                <tr data-pool=p.name.clone()>
                    <th scope="row">{p.name.clone()}</th>
                    <td>{format!("{used} of {} slots", p.slots)}</td>
                    <td>{p.running}</td>
                    <td>{p.queued}</td>
                </tr>
            }
        })
        .collect_view();
    let workers = d
        .workers
        .iter()
        .map(|w| {
            let (class, text) = match (w.alive, w.stopped_at.is_some()) {
                (true, _) => ("badge state-success", "alive"),
                (false, true) => ("badge state-skipped", "stopped"),
                (false, false) => ("badge state-failed", "lost"),
            };
            view! {
                <tr>
                    <th scope="row">{w.id.clone()}</th>
                    <td><span class=class>{text}</span></td>
                    <td>{w.host.clone()}</td>
                    <td>{w.concurrency}</td>
                    <td>{when(w.heartbeat_at)}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <section class="cards">
            <div class="card stat">
                <h2>"Active runs"</h2>
                <p class="big" data-testid="active-count">{d.active.len()}</p>
            </div>
            <div class="card stat">
                <h2>"Failed today"</h2>
                <p class="big" data-testid="failed-count">{d.failures.len()}</p>
            </div>
            <div class="card stat">
                <h2>"Database"</h2>
                <p>
                    <span class=if h.database.ok { "badge state-success" } else { "badge state-failed" }>
                        {if h.database.ok { "healthy" } else { "unreachable" }}
                    </span>
                    " " {h.database.backend.clone()}
                </p>
                <p class="muted">{format!("round trip {} ms", h.database.latency_ms)}</p>
            </div>
            <div class="card stat">
                <h2>"Workers"</h2>
                <p><span class=workers_class>
                    {format!("{alive} alive")}</span></p>
                <p class="muted">{format!("server {} · version {}", h.status, h.version)}</p>
            </div>
        </section>
        <h2>"Running and queued"</h2>
        {runs_table(d.active, "active-runs")}
        <h2>"Recent failures"</h2>
        {runs_table(d.failures, "failed-runs")}
        <h2>"Pools"</h2>
        <div class="table-wrap"><table class="table" data-testid="dashboard-pools">
            <thead><tr><th scope="col">"Pool"</th><th scope="col">"Usage"</th>
                <th scope="col">"Running"</th><th scope="col">"Queued"</th></tr></thead>
            <tbody>{pools}</tbody>
        </table></div>
        <h2>"Workers"</h2>
        <div class="table-wrap"><table class="table" data-testid="workers">
            <thead><tr><th scope="col">"Worker"</th><th scope="col">"State"</th><th scope="col">"Host"</th>
                <th scope="col">"Concurrency"</th><th scope="col">"Last heartbeat"</th></tr></thead>
            <tbody>{workers}</tbody>
        </table></div>
    }
}
