//! Pipelines: the list (schedule, last run, next run) and one pipeline's page with its task
//! graph, parameters, YAML source, run history and the trigger form generated from its params.
use crate::api::runs::{TriggerForm, get_pipeline, list_pipelines};
use crate::components::charts::history_chart;
use crate::components::layout::current_role;
use crate::components::notice::ErrorNotice;
use crate::components::time::{format_utc, when};
use crate::components::widgets::state_badge;
use crate::error::AppError;
use crate::model::{ParamInfo, PipelineDetail, PipelineSummary, Role, TaskNode};
use crate::pages::runs::runs_table;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_params_map;
use std::collections::HashMap;

#[component]
pub fn PipelinesPage() -> impl IntoView {
    let pipelines = Resource::new(|| (), |_| list_pipelines());
    view! {
        <Title text="Pipelines · trialflow"/>
        <h1>"Pipelines"</h1>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || pipelines.get().map(|res| match res {
                Ok(list) => pipelines_table(list).into_any(),
                Err(e) => view! { <ErrorNotice error=e/> }.into_any(),
            })}
        </Transition>
    }
}

fn pipelines_table(list: Vec<PipelineSummary>) -> impl IntoView {
    let rows = list
        .into_iter()
        .map(|p| {
            view! {
                <tr data-pipeline=p.id.clone()>
                    <th scope="row"><a href=format!("/pipelines/{}", p.id)>{p.id.clone()}</a></th>
                    <td>{p.description.clone()}</td>
                    <td>{p.schedule.clone().unwrap_or_else(|| "manual".into())}
                        {p.paused.then(|| view! { " " <span class="badge state-skipped">"paused"</span> })}</td>
                    <td>{p.last_run.clone().map(|(id, state)| view! {
                        <a href=format!("/runs/{id}")>{format!("#{id}")}</a> " " {state_badge(&state)}
                    })}</td>
                    <td>{p.next_run_at.map(when)}</td>
                    <td>{p.tasks}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <div class="table-wrap"><table class="table" data-testid="pipelines">
            <thead><tr>
                <th scope="col">"Pipeline"</th><th scope="col">"Description"</th><th scope="col">"Schedule"</th>
                <th scope="col">"Last run"</th><th scope="col">"Next run"</th><th scope="col">"Tasks"</th>
            </tr></thead>
            <tbody>{rows}</tbody>
        </table></div>
    }
}

#[component]
pub fn PipelinePage() -> impl IntoView {
    let params = use_params_map();
    let detail = Resource::new(
        move || params.read().get("id"),
        |id| async move {
            match id {
                Some(id) => get_pipeline(id).await,
                None => Err(AppError::NotFound("That pipeline".into())),
            }
        },
    );
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || detail.get().map(|res| match res {
                Ok(d) => view! { <PipelineView detail=d/> }.into_any(),
                Err(e) => view! { <ErrorNotice error=e/> }.into_any(),
            })}
        </Transition>
    }
}

#[component]
fn PipelineView(detail: PipelineDetail) -> impl IntoView {
    let role = current_role();
    let may_trigger = Signal::derive(move || role.get().is_some_and(|r| r.allows(Role::User)));
    let p = detail.summary.clone();
    let params_table = if p.params.is_empty() {
        view! { <p class="muted">"None."</p> }.into_any()
    } else {
        let rows = p
            .params
            .iter()
            .map(|param| {
                view! {
                    <tr>
                        <td><code>{param.name.clone()}</code></td>
                        <td>{param.ty.clone()}{param.kind.clone().map(|k| format!(" ({k})"))}</td>
                        <td><code>{param.default.clone().unwrap_or_else(|| "(required)".into())}</code></td>
                        <td>{param.description.clone()}</td>
                    </tr>
                }
            })
            .collect_view();
        view! {
            <div class="table-wrap"><table class="table" data-testid="params">
                <thead><tr>
                    <th scope="col">"Parameter"</th><th scope="col">"Type"</th>
                    <th scope="col">"Default"</th><th scope="col">"Meaning"</th>
                </tr></thead>
                <tbody>{rows}</tbody>
            </table></div>
        }
        .into_any()
    };
    let trigger_params = p.params.clone();
    let pipeline_id = p.id.clone();
    view! {
        <Title text=format!("{} · trialflow", p.id)/>
        <p><a href="/pipelines">"← Pipelines"</a></p>
        <h1>{p.id.clone()}</h1>
        <p class="muted">{p.description.clone()}</p>
        <p class="muted">
            {p.schedule.clone().map_or_else(|| "Runs when triggered".to_string(), |s| format!("Schedule {s}"))}
            {p.next_run_at.map(|t| format!(" · next run {}", format_utc(t)))}
            {format!(" · defined in {}", detail.origin)}
        </p>
        {(detail.sla.is_some() || !detail.alerts.is_empty()).then(|| view! {
            <p class="muted" data-testid="pipeline-alerts">
                {detail.sla.clone().map(|s| format!("SLA {s}"))}
                {detail.alerts.iter().map(|a| format!(" · {a}")).collect::<String>()}
            </p>
        })}
        <Show when=move || may_trigger.get()>
            <TriggerPanel pipeline_id=pipeline_id.clone() params=trigger_params.clone()/>
        </Show>
        <h2>"Tasks"</h2>
        {graph(&detail.graph)}
        <h2>"Parameters"</h2>
        {params_table}
        <h2>"Recent runs"</h2>
        {history_chart(detail.history)}
        {runs_table(detail.runs, "pipeline-runs")}
        <details class="card">
            <summary>"YAML source"</summary>
            <pre class="json" data-testid="pipeline-source">{detail.source}</pre>
        </details>
    }
}

/// The trigger form, one field per parameter; the server types and checks every field and
/// names each wrong one, shown at its field.
#[component]
fn TriggerPanel(pipeline_id: String, params: Vec<ParamInfo>) -> impl IntoView {
    let trigger = ServerAction::<TriggerForm>::new();
    let error_for = move |name: String| {
        move || {
            trigger
                .value()
                .get()
                .and_then(|r| r.err())
                .and_then(|e| e.for_field(&name))
        }
    };
    let fields = params
        .into_iter()
        .map(|param| {
            let id = format!("param-{}", param.name);
            let name = format!("fields[{}]", param.name);
            let error_id = format!("{id}-error");
            let error = error_for(param.name.clone());
            let initial = param.initial_text();
            let input = if !param.allowed.is_empty() {
                let options = param
                    .allowed
                    .iter()
                    .map(|a| {
                        let text = serde_json::from_str::<String>(a).unwrap_or_else(|_| a.clone());
                        let selected = text == initial;
                        view! { <option value=text.clone() selected=selected>{text.clone()}</option> }
                    })
                    .collect_view();
                view! { <select id=id.clone() name=name aria-describedby=error_id.clone()>{options}</select> }.into_any()
            } else if param.ty == "boolean" {
                view! {
                    <select id=id.clone() name=name aria-describedby=error_id.clone()>
                        <option value="true" selected=initial == "true">"true"</option>
                        <option value="false" selected=initial != "true">"false"</option>
                    </select>
                }
                .into_any()
            } else if param.ty == "object" || param.ty == "array" {
                view! { <textarea id=id.clone() name=name rows="3" aria-describedby=error_id.clone()>{initial}</textarea> }.into_any()
            } else {
                let mode = if param.ty == "integer" { "numeric" } else { "text" };
                view! { <input id=id.clone() name=name value=initial inputmode=mode autocomplete="off" aria-describedby=error_id.clone()/> }.into_any()
            };
            view! {
                <div class="field">
                    <label for=id.clone()>{param.name.clone()} <span class="muted">{format!(" ({})", param.ty)}</span></label>
                    {input}
                    {(!param.description.is_empty()).then(|| view! { <small class="muted">{param.description.clone()}</small> })}
                    <span class="field-error" id=error_id role="alert">{error}</span>
                </div>
            }
        })
        .collect_view();
    view! {
        <section class="card" data-testid="trigger">
            <h2>"Trigger a run"</h2>
            {move || trigger.value().get().map(|res| match res {
                Ok(run_id) => view! {
                    <div class="notice success" role="status">
                        "Run " {run_id} " is queued. " <a href=format!("/runs/{run_id}")>"Open it"</a>
                    </div>
                }.into_any(),
                Err(e @ (AppError::Invalid { .. } | AppError::Fields(_))) => view! {
                    <div class="notice error" role="alert">{format!("Check the marked fields. {e}")}</div>
                }.into_any(),
                Err(e) => view! { <ErrorNotice error=e/> }.into_any(),
            })}
            <ActionForm action=trigger attr:class="form-grid">
                <input type="hidden" name="pipeline_id" value=pipeline_id/>
                {fields}
                <button type="submit" class="btn primary">"Trigger"</button>
            </ActionForm>
        </section>
    }
}

/// The task graph as an SVG of columns by depth, with a list beside it for screen readers.
fn graph(nodes: &[TaskNode]) -> impl IntoView + use<> {
    const W: f64 = 190.0;
    const H: f64 = 34.0;
    const GAP_X: f64 = 50.0;
    const GAP_Y: f64 = 16.0;
    let mut depth: HashMap<&str, usize> = HashMap::new();
    for n in nodes {
        let d = n
            .upstream
            .iter()
            .filter_map(|u| depth.get(u.as_str()))
            .max()
            .map_or(0, |d| d + 1);
        depth.insert(&n.id, d);
    }
    let mut rows_in: HashMap<usize, usize> = HashMap::new();
    let mut pos: HashMap<&str, (f64, f64)> = HashMap::new();
    for n in nodes {
        let d = depth[n.id.as_str()];
        let row = rows_in.entry(d).or_default();
        pos.insert(&n.id, (d as f64 * (W + GAP_X), *row as f64 * (H + GAP_Y)));
        *row += 1;
    }
    let width = (rows_in.len().max(1) as f64) * (W + GAP_X);
    let height = (rows_in.values().copied().max().unwrap_or(1) as f64) * (H + GAP_Y);
    let edges = nodes
        .iter()
        .flat_map(|n| {
            let (x2, y2) = pos[n.id.as_str()];
            n.upstream
                .iter()
                .filter_map(|u| pos.get(u.as_str()).copied())
                .map(move |(x1, y1)| {
                    view! { <line x1=x1 + W y1=y1 + H / 2.0 x2=x2 y2=y2 + H / 2.0 class="edge"/> }
                })
                .collect::<Vec<_>>()
        })
        .collect_view();
    let boxes = nodes
        .iter()
        .map(|n| {
            let (x, y) = pos[n.id.as_str()];
            let label = if n.mapped {
                format!("{} [ ]", n.id)
            } else {
                n.id.clone()
            };
            view! {
                <g class=if n.mapped { "node mapped" } else { "node" }>
                    <title>{format!("{} · {} · pool {}", n.id, n.operator, n.pool)}</title>
                    <rect x=x y=y width=W height=H rx="6"/>
                    <text x=x + 10.0 y=y + 21.0>{label}</text>
                </g>
            }
        })
        .collect_view();
    let list = nodes
        .iter()
        .map(|n| {
            let after = if n.upstream.is_empty() {
                "first".to_string()
            } else {
                format!("after {}", n.upstream.join(", "))
            };
            view! {
                <li><code>{n.id.clone()}</code> {format!(" — {}{}, {after}, pool {}", n.operator,
                    if n.mapped { " (mapped)" } else { "" }, n.pool)}</li>
            }
        })
        .collect_view();
    view! {
        <div class="graph" data-testid="task-graph">
            <svg viewBox=format!("-4 -4 {} {}", width + 8.0, height + 8.0) width=width height=height
                role="img" aria-label="Task graph">
                {edges}{boxes}
            </svg>
            <ul class="graph-list">{list}</ul>
        </div>
    }
}
