//! The audit log (admins): every change a signed-in user made, newest first.
use crate::api::audit::audit_log;
use crate::components::notice::ErrorNotice;
use crate::components::time::when;
use crate::components::widgets::{link, pager};
use crate::model::AuditChain;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

const AREAS: [(&str, &str); 8] = [
    ("run.", "Runs"),
    ("flow.", "Flows"),
    ("pool.", "Pools"),
    ("connection.", "Connections"),
    ("secrets.", "Key rotation"),
    ("user.", "Users"),
    ("session.", "Sign-ins"),
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
                    let chain = chain_notice(page.chain);
                    let rows = page.entries.into_iter().map(|e| view! {
                        <tr data-action=e.action.clone()>
                            <td>{when(e.at)}</td>
                            <td>{e.actor}</td>
                            <td><code>{e.action.clone()}</code></td>
                            <td>{e.target}</td>
                            <td><code class="detail">{e.detail}</code></td>
                            <td><code class="hash" title=e.hash.clone()>{e.hash.chars().take(12).collect::<String>()}</code></td>
                        </tr>
                    }).collect_view();
                    view! {
                        {chain}
                        <div class="table-wrap"><table class="table" data-testid="audit">
                            <thead><tr>
                                <th scope="col">"When"</th><th scope="col">"Who"</th><th scope="col">"Action"</th>
                                <th scope="col">"Target"</th><th scope="col">"Detail"</th><th scope="col">"Hash"</th>
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

/// Whether the hash chain verifies, and the exports that carry it.
fn chain_notice(chain: AuditChain) -> impl IntoView {
    let exports = view! {
        " Export: "
        <a href="/audit/export.csv" rel="external" download="">"CSV"</a>
        " · "
        <a href="/audit/export.json" rel="external" download="">"JSON"</a>
    };
    let head: String = chain.head.chars().take(16).collect();
    let older = if chain.unchained > 0 {
        format!(" ({} from before the chain)", chain.unchained)
    } else {
        String::new()
    };
    match chain.broken_at {
        None => view! {
            <p class="notice success" data-testid="audit-chain" data-ok="true">
                {format!("Hash chain intact: {} entries{older}, head {head}…", chain.entries)}
                {exports}
            </p>
        }
        .into_any(),
        Some(at) => {
            let place = if at == 0 {
                "after the newest entry".to_string()
            } else {
                format!("at entry #{at}")
            };
            view! {
                <p class="notice error" data-testid="audit-chain" data-ok="false" role="alert">
                    {format!("Hash chain broken {place}: {}.", chain.reason.unwrap_or_default())}
                    {exports}
                </p>
            }
            .into_any()
        }
    }
}
