use crate::api::session::whoami;
use crate::components::layout::Layout;
use crate::pages::{
    audit::AuditPage,
    connections::ConnectionsPage,
    dashboard::DashboardPage,
    flows::{FlowPage, FlowsPage},
    login::LoginPage,
    not_found::NotFound,
    pipelines::{PipelinePage, PipelinesPage},
    pools::PoolsPage,
    runs::{InstancePage, RunPage, RunsPage},
    users::UsersPage,
};
use leptos::prelude::*;
use leptos_meta::{MetaTags, Stylesheet, Title, provide_meta_context};
use leptos_router::{
    SsrMode,
    components::{ParentRoute, Route, Router, Routes},
    path,
};

/// The HTML document around the app; rendered on the server only.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name="color-scheme" content="light"/>
                // Named here so browsers do not ask for a /favicon.ico that does not exist.
                <link rel="icon" type="image/svg+xml" href="/pkg/favicon.svg"/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    // Pages render completely on the server (SsrMode::Async) so they read well with JavaScript off.
    view! {
        <Stylesheet id="leptos" href="/pkg/trialflow.css"/>
        <Title text="trialflow"/>
        <Router>
            <Routes fallback=|| view! { <NotFound/> }>
                <Route path=path!("/login") view=LoginPage ssr=SsrMode::Async/>
                <ParentRoute path=path!("") view=AuthenticatedLayout ssr=SsrMode::Async>
                    <Route path=path!("") view=DashboardPage ssr=SsrMode::Async/>
                    <Route path=path!("pipelines") view=PipelinesPage ssr=SsrMode::Async/>
                    <Route path=path!("runs") view=RunsPage ssr=SsrMode::Async/>
                    <Route path=path!("pipelines/:id") view=PipelinePage ssr=SsrMode::Async/>
                    <Route path=path!("runs/:id") view=RunPage ssr=SsrMode::Async/>
                    <Route path=path!("runs/:id/instances/:ti") view=InstancePage ssr=SsrMode::Async/>
                    <Route path=path!("audit") view=AuditPage ssr=SsrMode::Async/>
                    <Route path=path!("flows") view=FlowsPage ssr=SsrMode::Async/>
                    <Route path=path!("flows/:project/:name") view=FlowPage ssr=SsrMode::Async/>
                    <Route path=path!("connections") view=ConnectionsPage ssr=SsrMode::Async/>
                    <Route path=path!("pools") view=PoolsPage ssr=SsrMode::Async/>
                    <Route path=path!("users") view=UsersPage ssr=SsrMode::Async/>
                </ParentRoute>
            </Routes>
        </Router>
    }
}

/// Loads the signed-in user once and shares it with every page below.
#[component]
fn AuthenticatedLayout() -> impl IntoView {
    let me = Resource::new(|| (), |_| whoami());
    provide_context(crate::components::layout::CurrentUserResource(me));
    view! { <Layout/> }
}
