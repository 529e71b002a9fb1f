use crate::api::system::system_health;
use crate::components::notice::ErrorNotice;
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn DashboardPage() -> impl IntoView {
    let health = Resource::new(|| (), |_| system_health());
    view! {
        <Title text="Dashboard · trialflow"/>
        <h1>"Dashboard"</h1>
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || health.get().map(|res| match res {
                Ok(h) => view! {
                    <section class="cards">
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
                            <h2>"Server"</h2>
                            <p><span class="badge state-running">{h.status.clone()}</span></p>
                            <p class="muted">{format!("version {}", h.version)}</p>
                        </div>
                    </section>
                }.into_any(),
                Err(e) => view! { <ErrorNotice error=e/> }.into_any(),
            })}
        </Suspense>
    }
}
