use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    if let Some(res) = use_context::<leptos_axum::ResponseOptions>() {
        res.set_status(axum::http::StatusCode::NOT_FOUND);
    }
    view! {
        <Title text="Not found · trialflow"/>
        <div class="login-wrap">
            <div class="card">
                <h1>"Page not found"</h1>
                <p>"There is no page at this address. " <a href="/">"Go to the dashboard"</a></p>
            </div>
        </div>
    }
}
