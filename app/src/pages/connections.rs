//! Connections (op and admin): list, create, edit, test, delete. Secret inputs are write-only:
//! the page only ever knows whether a secret is configured and where it comes from.
use crate::api::connections::{DeleteConnection, SaveConnection, TestConnection, list_connections};
use crate::components::notice::{ErrorNotice, action_outcome};
use crate::components::time::when;
use crate::model::{ConnectionInfo, ConnectionKind, ConnectionTest};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

#[component]
pub fn ConnectionsPage() -> impl IntoView {
    let save = ServerAction::<SaveConnection>::new();
    let delete = ServerAction::<DeleteConnection>::new();
    let test = ServerAction::<TestConnection>::new();
    let list = Resource::new(
        move || (save.version().get(), delete.version().get()),
        |_| list_connections(),
    );
    let query = use_query_map();
    let editing = move || query.read().get("edit");

    view! {
        <Title text="Connections · trialflow"/>
        <h1>"Connections"</h1>
        <p class="muted">
            "Secrets are encrypted at rest and never shown: a secret field left blank keeps its stored value."
        </p>
        {action_outcome(save.value(), |c: &ConnectionInfo| format!("Saved {}.", c.conn_id))}
        {action_outcome(delete.value(), |id: &String| format!("Deleted {id}."))}
        {action_outcome(test.value(), test_summary)}
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || list.get().map(|res| match res {
                Ok(list) => {
                    let edit = editing()
                        .and_then(|id| list.iter().find(|c| c.conn_id == id).cloned());
                    view! {
                        <ConnectionTable list=list.clone() delete test/>
                        {edit.map(|c| view! { <EditForm conn=c save/> })}
                        <NewForms save/>
                    }.into_any()
                }
                Err(e) => view! { <ErrorNotice error=e/> }.into_any(),
            })}
        </Transition>
    }
}

fn test_summary(t: &ConnectionTest) -> String {
    if t.ok {
        format!("{}: OK — {} ({} ms).", t.conn_id, t.message, t.latency_ms)
    } else {
        format!(
            "{}: failed — {} ({} ms).",
            t.conn_id, t.message, t.latency_ms
        )
    }
}

#[component]
fn ConnectionTable(
    list: Vec<ConnectionInfo>,
    delete: ServerAction<DeleteConnection>,
    test: ServerAction<TestConnection>,
) -> impl IntoView {
    if list.is_empty() {
        return view! {
            <div class="card empty"><p>"No connections yet. Add one below."</p></div>
        }
        .into_any();
    }
    view! {
        <div class="table-wrap">
            <table class="table" data-testid="connections-table">
                <thead>
                    <tr>
                        <th scope="col">"Id"</th>
                        <th scope="col">"Kind"</th>
                        <th scope="col">"Endpoint"</th>
                        <th scope="col">"Secrets"</th>
                        <th scope="col">"Updated"</th>
                        <th scope="col">"Actions"</th>
                    </tr>
                </thead>
                <tbody>
                    {list.into_iter().map(|c| {
                        let endpoint = match c.kind {
                            ConnectionKind::Imednet => c.setting("base_url").to_string(),
                            ConnectionKind::Aws => c.setting("endpoint_url").to_string(),
                            ConnectionKind::Webhook => String::new(),
                            ConnectionKind::Smtp => {
                                format!("{} → {}", c.setting("host"), c.setting("to"))
                            }
                        };
                        let edit_href = format!("/connections?edit={}", c.conn_id);
                        let delete_label = format!("Delete {}", c.conn_id);
                        let (row_id, test_id, delete_id) =
                            (c.conn_id.clone(), c.conn_id.clone(), c.conn_id.clone());
                        let badges = c.secrets.iter().map(|s| {
                            let (class, text) = if s.configured {
                                ("badge state-success", format!("{}: *** ({})", s.field, s.source))
                            } else {
                                ("badge state-failed", format!("{}: not configured", s.field))
                            };
                            view! { <span class=class>{text}</span>" " }
                        }).collect_view();
                        view! {
                            <tr data-conn=row_id>
                                <td>
                                    <strong>{c.conn_id}</strong>
                                    <div class="muted">{c.description.clone()}</div>
                                </td>
                                <td>{c.kind.as_str()}</td>
                                <td>{if endpoint.is_empty() { "(default)".to_string() } else { endpoint }}</td>
                                <td>{badges}</td>
                                <td>{when(c.updated_at)} " · " {c.updated_by.clone()}</td>
                                <td><div class="row-actions">
                                    <ActionForm action=test attr:class="inline">
                                        <input type="hidden" name="conn_id" value=test_id/>
                                        <button type="submit" class="btn subtle">"Test"</button>
                                    </ActionForm>
                                    <a class="btn subtle" href=edit_href>"Edit"</a>
                                    <details class="inline">
                                        <summary class="btn subtle">"Delete…"</summary>
                                        <ActionForm action=delete attr:class="inline">
                                            <input type="hidden" name="conn_id" value=delete_id/>
                                            <button type="submit" class="btn danger" aria-label=delete_label>
                                                "Really delete"
                                            </button>
                                        </ActionForm>
                                    </details>
                                </div></td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }
    .into_any()
}

/// The inputs of one kind; `conn` fills the non-secret ones when editing.
fn field_inputs(
    kind: ConnectionKind,
    prefix: &str,
    conn: Option<&ConnectionInfo>,
) -> impl IntoView + use<> {
    kind.fields()
        .iter()
        .map(|f| {
            let id = format!("{prefix}-{}", f.name);
            let name = format!("input[{}]", f.name);
            let value = conn.map(|c| c.setting(f.name).to_string()).unwrap_or_default();
            let configured = conn.is_some_and(|c| {
                c.secrets.iter().any(|s| s.field == f.name && s.source == "connection")
            });
            let input = if f.flag {
                view! { <input id=id.clone() name=name type="checkbox" value="on" checked=value == "true"/> }
                    .into_any()
            } else if f.secret {
                let placeholder = if configured { "*** stored — leave blank to keep" } else { "" };
                view! {
                    <input id=id.clone() name=name type="password" autocomplete="new-password"
                        placeholder=placeholder/>
                }
                .into_any()
            } else {
                view! { <input id=id.clone() name=name value=value autocomplete="off"/> }.into_any()
            };
            view! {
                <label for=id.clone()>{f.label}</label>
                <div class="field">
                    {input}
                    {(!f.hint.is_empty()).then(|| view! { <small class="muted">{f.hint}</small> })}
                    {(f.secret && configured).then(|| {
                        let clear_id = format!("{id}-clear");
                        let clear_for = clear_id.clone();
                        view! {
                            <label class="check" for=clear_for>
                                <input id=clear_id type="checkbox" name="input[clear][]" value=f.name/>
                                " erase the stored value"
                            </label>
                        }
                    })}
                </div>
            }
        })
        .collect_view()
}

#[component]
fn EditForm(conn: ConnectionInfo, save: ServerAction<SaveConnection>) -> impl IntoView {
    let prefix = format!("edit-{}", conn.conn_id);
    let desc_id = format!("{prefix}-description");
    let inputs = field_inputs(conn.kind, &prefix, Some(&conn));
    view! {
        <section class="card" data-testid="edit-connection">
            <h2>"Edit "{conn.conn_id.clone()}" ("{conn.kind.as_str()}")"</h2>
            <ActionForm action=save attr:class="form-grid">
                <input type="hidden" name="input[conn_id]" value=conn.conn_id.clone()/>
                <input type="hidden" name="input[kind]" value=conn.kind.as_str()/>
                <input type="hidden" name="input[create]" value="false"/>
                <label for=desc_id.clone()>"Description"</label>
                <input id=desc_id name="input[description]" value=conn.description.clone()/>
                {inputs}
                <button type="submit" class="btn primary">"Save changes"</button>
            </ActionForm>
        </section>
    }
}

#[component]
fn NewForms(save: ServerAction<SaveConnection>) -> impl IntoView {
    ConnectionKind::ALL
        .iter()
        .map(|kind| {
            let kind = *kind;
            let prefix = format!("new-{}", kind.as_str());
            let id_id = format!("{prefix}-conn_id");
            let desc_id = format!("{prefix}-description");
            let title = match kind {
                ConnectionKind::Imednet => "Add an iMednet connection",
                ConnectionKind::Aws => "Add an S3 connection",
                ConnectionKind::Webhook => "Add a webhook alert target",
                ConnectionKind::Smtp => "Add an email (SMTP) alert target",
            };
            let inputs = field_inputs(kind, &prefix, None);
            view! {
                <details class="card" data-testid=format!("new-{}", kind.as_str())>
                    <summary><h2 class="inline">{title}</h2></summary>
                    <ActionForm action=save attr:class="form-grid">
                        <input type="hidden" name="input[kind]" value=kind.as_str()/>
                        <input type="hidden" name="input[create]" value="true"/>
                        <label for=id_id.clone()>"Connection id"</label>
                        <input id=id_id name="input[conn_id]" required placeholder=kind.default_id()
                            pattern="[A-Za-z0-9_.\\-]{1,64}" autocomplete="off"/>
                        <label for=desc_id.clone()>"Description"</label>
                        <input id=desc_id name="input[description]"/>
                        {inputs}
                        <button type="submit" class="btn primary">"Add connection"</button>
                    </ActionForm>
                </details>
            }
        })
        .collect_view()
}
