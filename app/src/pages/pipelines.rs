//! Pipelines: what can run, and a trigger form for users. Runs: one run's tasks, instances and
//! files. (Live updates, paging and actions arrive with the console.)
use crate::api::runs::{TriggerRun, get_run, list_pipelines};
use crate::components::notice::ErrorNotice;
use crate::components::time::format_utc;
use crate::model::{PipelineSummary, RunDetail};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_params_map;

#[component]
pub fn PipelinesPage() -> impl IntoView {
    let trigger = ServerAction::<TriggerRun>::new();
    let pipelines = Resource::new(|| (), |_| list_pipelines());
    view! {
        <Title text="Pipelines · trialflow"/>
        <h1>"Pipelines"</h1>
        {move || trigger.value().get().map(|res| match res {
            Ok(run_id) => view! {
                <div class="notice success" role="status">
                    "Run " {run_id} " is queued. " <a href=format!("/runs/{run_id}")>"Open it"</a>
                </div>
            }.into_any(),
            Err(e) => view! { <ErrorNotice error=e/> }.into_any(),
        })}
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || pipelines.get().map(|res| match res {
                Ok(list) => list.into_iter().map(|p| view! { <PipelineCard p trigger/> }).collect_view().into_any(),
                Err(e) => view! { <ErrorNotice error=e/> }.into_any(),
            })}
        </Transition>
    }
}

#[component]
fn PipelineCard(p: PipelineSummary, trigger: ServerAction<TriggerRun>) -> impl IntoView {
    let conf_id = format!("conf-{}", p.id);
    let conf_for = conf_id.clone();
    let hidden_id = p.id.clone();
    let params = p
        .params
        .iter()
        .map(|param| {
            let default = param.default.clone().unwrap_or_else(|| "(required)".into());
            view! {
                <tr>
                    <td><code>{param.name.clone()}</code></td>
                    <td>{param.ty.clone()}</td>
                    <td><code>{default}</code></td>
                    <td>{param.description.clone()}</td>
                </tr>
            }
        })
        .collect_view();
    let has_params = !p.params.is_empty();
    view! {
        <section class="card" data-pipeline=p.id.clone()>
            <h2>{p.id.clone()}</h2>
            <p class="muted">{p.description.clone()}</p>
            <p class="muted">
                {format!("{} tasks", p.tasks)}
                {p.schedule.clone().map(|s| format!(" · schedule {s}"))}
                {(!p.tags.is_empty()).then(|| format!(" · {}", p.tags.join(", ")))}
            </p>
            {has_params.then(|| view! {
                <div class="table-wrap">
                    <table class="table">
                        <thead><tr>
                            <th scope="col">"Parameter"</th><th scope="col">"Type"</th>
                            <th scope="col">"Default"</th><th scope="col">"Meaning"</th>
                        </tr></thead>
                        <tbody>{params}</tbody>
                    </table>
                </div>
            })}
            <ActionForm action=trigger attr:class="form-grid">
                <input type="hidden" name="pipeline_id" value=hidden_id/>
                <label for=conf_for>"Parameters (JSON)"</label>
                <input id=conf_id name="conf" value="{}" autocomplete="off"/>
                <button type="submit" class="btn primary">"Trigger"</button>
            </ActionForm>
        </section>
    }
}

#[component]
pub fn RunPage() -> impl IntoView {
    let params = use_params_map();
    let run = Resource::new(
        move || {
            params
                .read()
                .get("id")
                .and_then(|id| id.parse::<i64>().ok())
        },
        |id| async move {
            match id {
                Some(id) => get_run(id).await,
                None => Err(crate::error::AppError::NotFound("That run".into())),
            }
        },
    );
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || run.get().map(|res| match res {
                Ok(run) => view! { <RunView run/> }.into_any(),
                Err(e) => view! { <ErrorNotice error=e/> }.into_any(),
            })}
        </Transition>
    }
}

fn badge(state: &str) -> impl IntoView + use<> {
    view! { <span class=format!("badge state-{state}")>{state.replace('_', " ")}</span> }
}

#[component]
fn RunView(run: RunDetail) -> impl IntoView {
    let title = format!("Run {} · {} · trialflow", run.id, run.pipeline_id);
    let tasks = run
        .tasks
        .iter()
        .map(|(task, counts)| {
            let counts = counts
                .iter()
                .map(|(state, n)| view! { {badge(state)} " " {*n} " " })
                .collect_view();
            view! { <tr><td>{task.clone()}</td><td>{counts}</td></tr> }
        })
        .collect_view();
    let shown = run.instances.len();
    let instances = run
        .instances
        .into_iter()
        .map(|ti| {
            view! {
                <tr>
                    <td>{ti.task_id}</td>
                    <td>{ti.map_key.unwrap_or_default()}</td>
                    <td>{badge(&ti.state)}</td>
                    <td>{ti.try_number}</td>
                    <td>{ti.started_at.map(format_utc).unwrap_or_default()}</td>
                    <td>{ti.summary}</td>
                </tr>
            }
        })
        .collect_view();
    let artifacts = run
        .artifacts
        .into_iter()
        .map(|a| {
            let name = a.uri.rsplit('/').next().unwrap_or_default().to_string();
            let link = if a.downloadable {
                let label = name.clone();
                view! { <a href=format!("/artifacts/{}/download", a.id) download=name>{label}</a> }
                    .into_any()
            } else {
                view! { <code>{a.uri.clone()}</code> }.into_any()
            };
            view! {
                <tr>
                    <td>{link}</td>
                    <td>{a.rows.map(|r| r.to_string()).unwrap_or_default()}</td>
                    <td>{a.bytes}</td>
                    <td><code class="hash">{a.sha256}</code></td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <Title text=title/>
        <h1>"Run " {run.id} " of " <a href="/pipelines">{run.pipeline_id.clone()}</a> " " {badge(&run.state)}</h1>
        <p class="muted">
            "Triggered by " {run.triggered_by.clone()} " at " {format_utc(run.queued_at)}
            {run.ended_at.map(|t| format!(" · ended {}", format_utc(t)))}
            " · parameters " <code>{run.conf.clone()}</code>
        </p>
        <h2>"Tasks"</h2>
        <div class="table-wrap"><table class="table" data-testid="run-tasks">
            <thead><tr><th scope="col">"Task"</th><th scope="col">"Instances by state"</th></tr></thead>
            <tbody>{tasks}</tbody>
        </table></div>
        <h2>"Instances"</h2>
        <p class="muted">{format!("Showing {shown} of {} instances.", run.instance_count)}</p>
        <div class="table-wrap"><table class="table" data-testid="run-instances">
            <thead><tr>
                <th scope="col">"Task"</th><th scope="col">"Map key"</th><th scope="col">"State"</th>
                <th scope="col">"Try"</th><th scope="col">"Started"</th><th scope="col">"Output"</th>
            </tr></thead>
            <tbody>{instances}</tbody>
        </table></div>
        <h2>"Files"</h2>
        <div class="table-wrap"><table class="table" data-testid="run-artifacts">
            <thead><tr>
                <th scope="col">"File"</th><th scope="col">"Rows"</th><th scope="col">"Bytes"</th>
                <th scope="col">"SHA-256"</th>
            </tr></thead>
            <tbody>{artifacts}</tbody>
        </table></div>
    }
}
