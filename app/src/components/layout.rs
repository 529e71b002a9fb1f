use crate::error::AppError;
use crate::model::{CurrentUser, Role};
use leptos::prelude::*;
use leptos_router::components::{A, Outlet};

/// The signed-in user, loaded once by the layout and read by pages that show role-dependent controls.
#[derive(Clone, Copy)]
pub struct CurrentUserResource(pub Resource<Result<Option<CurrentUser>, AppError>>);

/// The current user's role, once loaded; `None` while loading or when signed out.
pub fn current_role() -> Signal<Option<Role>> {
    let me = use_context::<CurrentUserResource>();
    Signal::derive(move || {
        me.and_then(|r| r.0.get())
            .and_then(|res| res.ok().flatten())
            .map(|u| u.role)
    })
}

const NAV: [(&str, &str, Role); 8] = [
    ("/", "Dashboard", Role::Viewer),
    ("/pipelines", "Pipelines", Role::Viewer),
    ("/runs", "Runs", Role::Viewer),
    ("/flows", "Flows", Role::Viewer),
    ("/connections", "Connections", Role::Op),
    ("/pools", "Pools", Role::Viewer),
    ("/users", "Users", Role::Admin),
    ("/audit", "Audit log", Role::Admin),
];

#[component]
pub fn Layout() -> impl IntoView {
    let role = current_role();
    let me = use_context::<CurrentUserResource>();
    let user_chip = move || {
        me.and_then(|r| r.0.get())
            .and_then(|res| res.ok().flatten())
            .map(|u| {
                view! {
                    <span class="user-chip" data-testid="current-user">
                        <span class="user-name">{u.username}</span>
                        <span class="badge role">{u.role.as_str()}</span>
                    </span>
                    <form method="post" action="/auth/logout" class="inline">
                        <button type="submit" class="btn subtle">"Sign out"</button>
                    </form>
                }
            })
    };
    view! {
        <header class="topbar">
            <a class="brand" href="/">"trialflow"</a>
            <nav class="nav" aria-label="Main">
                <Suspense fallback=|| ()>
                    {move || {
                        let role = role.get();
                        NAV.iter()
                            .filter(|(_, _, needed)| role.is_some_and(|r| r.allows(*needed)))
                            .map(|(href, label, _)| view! { <A href=*href exact=true>{*label}</A> })
                            .collect_view()
                    }}
                </Suspense>
            </nav>
            <div class="session">
                <Suspense fallback=|| ()>{user_chip}</Suspense>
            </div>
        </header>
        <main class="content">
            <Outlet/>
        </main>
    }
}
