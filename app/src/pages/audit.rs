//! The audit log (admins): every change a signed-in user made, newest first.
use crate::api::audit::audit_log;
use crate::components::notice::ErrorNotice;
use crate::components::time::when;
use crate::components::widgets::{link, pager};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

const AREAS: [(&str, &str); 5] = [
    ("run.", "Runs"),
    ("pool.", "Pools"),
    ("connection.", "Connections"),
    ("user.", "Users"),
    ("", "Everything"),
];

#[component]
pub fn AuditPage() -> impl IntoView {
    let query = use_query_map();
    let filter = move || {
        let q = query.read();
        (
            q.get("action"),
            q.get("page").and_then(|p| p.parse::<u32>().ok()),
        )
    };
    let entries = Resource::new(filter, |(action, page)| audit_log(action, page));
    view! {
        <Title text="Audit log · trialflow"/>
        <h1>"Audit log"</h1>
        <form method="get" action="/audit" class="filters" aria-label="Filter the audit log">
            <label>"Area"
                <select name="action">
                    {move || {
                        let current = filter().0.unwrap_or_default();
                        AREAS.iter().map(|(prefix, label)| view! {
                            <option value=*prefix selected=*prefix == current>{*label}</option>
                        }).collect_view()
                    }}
                </select>
            </label>
            <button type="submit" class="btn">"Show"</button>
        </form>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || entries.get().map(|res| match res {
                Ok(page) => {
                    let action = filter().0;
                    let to = |p: u32| link("/audit", &[("action", action.clone()), ("page", Some(p.to_string()))]);
                    let prev = (page.page > 1).then(|| to(page.page - 1));
                    let next = page.has_next.then(|| to(page.page + 1));
                    let shown = page.entries.len();
                    let rows = page.entries.into_iter().map(|e| view! {
                        <tr data-action=e.action.clone()>
                            <td>{when(e.at)}</td>
                            <td>{e.actor}</td>
                            <td><code>{e.action.clone()}</code></td>
                            <td>{e.target}</td>
                            <td><code class="detail">{e.detail}</code></td>
                        </tr>
                    }).collect_view();
                    view! {
                        <div class="table-wrap"><table class="table" data-testid="audit">
                            <thead><tr>
                                <th scope="col">"When"</th><th scope="col">"Who"</th><th scope="col">"Action"</th>
                                <th scope="col">"Target"</th><th scope="col">"Detail"</th>
                            </tr></thead>
                            <tbody>{rows}</tbody>
                        </table></div>
                        {pager(prev, page.page, next, format!("{shown} entries"))}
                    }.into_any()
                }
                Err(e) => view! { <ErrorNotice error=e/> }.into_any(),
            })}
        </Transition>
    }
}
