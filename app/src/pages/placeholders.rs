//! Pages whose content arrives with the engine, exports, console and flows work. They already
//! take their place in the navigation and show an honest empty state.
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
fn EmptyPage(title: &'static str, empty: &'static str) -> impl IntoView {
    view! {
        <Title text=format!("{title} · trialflow")/>
        <h1>{title}</h1>
        <div class="card empty">
            <p>{empty}</p>
        </div>
    }
}

#[component]
pub fn FlowsPage() -> impl IntoView {
    view! { <EmptyPage title="Flows" empty="No flows of flows are registered yet."/> }
}
