//! Runs: the list (filter by pipeline, state and date; paged), one run (tasks with counts and
//! progress, a paged instance table, files, actions, live), and one instance (attempts, logs,
//! input, result). Everything reads with JavaScript off; live updates and actions need it on.
use crate::api::runs::{RetriggerRun, RunAction, get_instance, get_run, list_instances, list_runs};
use crate::components::charts::timeline_chart;
use crate::components::layout::current_role;
use crate::components::notice::ErrorNotice;
use crate::components::time::{format_utc, when};
use crate::components::widgets::{
    ConfirmSubmit, format_duration, link, pager, progress_bar, state_badge,
};
use crate::error::AppError;
use crate::live::subscribe;
use crate::model::{
    AlertDeliveryInfo, ChildRun, InstanceDetail, InstancePage, InstanceQuery, InstanceSummary,
    LogLineInfo, Role, RunDetail, RunList, RunListItem, RunListQuery, RunUpdate, STATE_ORDER,
    TaskProgress,
};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_params_map, use_query_map};

const RUN_STATES: [&str; 5] = ["queued", "running", "success", "failed", "canceled"];

fn may_act() -> Signal<bool> {
    let role = current_role();
    Signal::derive(move || role.get().is_some_and(|r| r.allows(Role::User)))
}

/// A line of the runs list or the dashboard.
pub fn run_row(run: RunListItem) -> impl IntoView {
    let duration = run
        .started_at
        .map(|s| format_duration(run.ended_at.unwrap_or(s) - s))
        .filter(|_| run.ended_at.is_some())
        .unwrap_or_default();
    let counts = vec![("success".to_string(), run.done)];
    view! {
        <tr data-run=run.id>
            <td><a href=format!("/runs/{}", run.id)>{format!("#{}", run.id)}</a></td>
            <td><a href=format!("/pipelines/{}", run.pipeline_id)>{run.pipeline_id.clone()}</a></td>
            <td>{state_badge(&run.state)}</td>
            <td class="progress-cell">{progress_bar(&counts, run.total, run.done)}</td>
            <td>{when(run.queued_at)}</td>
            <td>{duration}</td>
            <td>{run.triggered_by.clone()} <span class="muted">{format!(" ({})", run.run_trigger)}</span></td>
        </tr>
    }
}

pub fn runs_table(runs: Vec<RunListItem>, testid: &'static str) -> impl IntoView {
    if runs.is_empty() {
        return view! { <p class="muted">"None."</p> }.into_any();
    }
    view! {
        <div class="table-wrap"><table class="table" data-testid=testid>
            <thead><tr>
                <th scope="col">"Run"</th><th scope="col">"Pipeline"</th><th scope="col">"State"</th>
                <th scope="col">"Progress"</th><th scope="col">"Queued"</th><th scope="col">"Took"</th>
                <th scope="col">"Triggered by"</th>
            </tr></thead>
            <tbody>{runs.into_iter().map(run_row).collect_view()}</tbody>
        </table></div>
    }
    .into_any()
}

#[component]
pub fn RunsPage() -> impl IntoView {
    let query = use_query_map();
    let filters = move || {
        let q = query.read();
        RunListQuery {
            pipeline: q.get("pipeline"),
            state: q.get("state"),
            since: q.get("since"),
            until: q.get("until"),
            page: q.get("page").and_then(|p| p.parse().ok()),
        }
    };
    let runs = Resource::new(filters, |q| list_runs(Some(q)));
    view! {
        <Title text="Runs · trialflow"/>
        <h1>"Runs"</h1>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || runs.get().map(|res| match res {
                Ok(list) => view! { <RunsView list filters=filters()/> }.into_any(),
                Err(e) => view! { <ErrorNotice error=e/> }.into_any(),
            })}
        </Transition>
    }
}

#[component]
fn RunsView(list: RunList, filters: RunListQuery) -> impl IntoView {
    let kept = filters.clone();
    let page_link = move |page: u32| {
        let filters = &kept;
        link(
            "/runs",
            &[
                ("pipeline", filters.pipeline.clone()),
                ("state", filters.state.clone()),
                ("since", filters.since.clone()),
                ("until", filters.until.clone()),
                ("page", Some(page.to_string())),
            ],
        )
    };
    let prev = (list.page > 1).then(|| page_link(list.page - 1));
    let next = list.has_next.then(|| page_link(list.page + 1));
    let selected_pipeline = filters.pipeline.clone().unwrap_or_default();
    let selected_state = filters.state.clone().unwrap_or_default();
    let shown = list.runs.len();
    view! {
        <form method="get" action="/runs" class="filters" aria-label="Filter runs">
            <label>"Pipeline"
                <select name="pipeline">
                    <option value="">"All"</option>
                    {list.pipelines.iter().map(|p| view! {
                        <option value=p.clone() selected=*p == selected_pipeline>{p.clone()}</option>
                    }).collect_view()}
                </select>
            </label>
            <label>"State"
                <select name="state">
                    <option value="">"Any"</option>
                    {RUN_STATES.iter().map(|s| view! {
                        <option value=*s selected=*s == selected_state>{*s}</option>
                    }).collect_view()}
                </select>
            </label>
            <label>"From" <input type="date" name="since" value=filters.since.clone().unwrap_or_default()/></label>
            <label>"To" <input type="date" name="until" value=filters.until.clone().unwrap_or_default()/></label>
            <button type="submit" class="btn">"Filter"</button>
        </form>
        {runs_table(list.runs, "runs")}
        {pager(prev, list.page, next, format!("{shown} shown"))}
    }
}

fn run_id_param() -> Memo<Option<i64>> {
    let params = use_params_map();
    Memo::new(move |_| {
        params
            .read()
            .get("id")
            .and_then(|id| id.parse::<i64>().ok())
    })
}

#[component]
pub fn RunPage() -> impl IntoView {
    let run_id = run_id_param();
    let query = use_query_map();
    // Bumped by each live update and each action: the page's data is fetched again.
    let version = RwSignal::new(0u64);
    // The newest event a live update announced: refetched data must cover it.
    let covering = RwSignal::new(None::<i64>);
    let run = Resource::new(
        move || (run_id.get(), version.get()),
        move |(id, _)| async move {
            match id {
                Some(id) => get_run(id, covering.get_untracked()).await,
                None => Err(AppError::NotFound("That run".into())),
            }
        },
    );
    let instance_query = move || {
        let q = query.read();
        InstanceQuery {
            task: q.get("task"),
            state: q.get("state"),
            q: q.get("q"),
            sort: q.get("sort"),
            dir: q.get("dir"),
            page: q.get("page").and_then(|p| p.parse().ok()),
        }
    };
    let instances = Resource::new(
        move || (run_id.get(), instance_query(), version.get()),
        move |(id, q, _)| async move {
            match id {
                Some(id) => list_instances(id, Some(q), covering.get_untracked()).await,
                None => Err(AppError::NotFound("That run".into())),
            }
        },
    );
    // Live: one stream per run; each coalesced update refetches what is shown.
    let live = RwSignal::new(false);
    Effect::new(move |_| {
        let Some(id) = run_id.get() else {
            return;
        };
        // Hydrated: resume exactly after the server-rendered snapshot. Navigated to in the
        // browser: the data may be fetched before the stream opens, so replay the whole run.
        let after = run
            .get_untracked()
            .and_then(Result::ok)
            .map_or(0, |r| r.last_event_id);
        let after = format!("?after={after}");
        live.set(true);
        subscribe(
            format!("/events/runs/{id}{after}"),
            &["update"],
            move |_, data| {
                if let Ok(update) = serde_json::from_str::<RunUpdate>(&data) {
                    covering.set(Some(update.last_event_id));
                }
                version.update(|v| *v += 1);
                true
            },
        );
    });
    let act = ServerAction::<RunAction>::new();
    let retrigger = ServerAction::<RetriggerRun>::new();
    Effect::new(move |_| {
        if act.version().get() > 0 {
            version.update(|v| *v += 1);
        }
    });
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || run.get().map(|res| match res {
                Ok(run) => view! { <RunHeader run act retrigger live/> }.into_any(),
                Err(e) => view! { <ErrorNotice error=e/> }.into_any(),
            })}
            {move || act.value().get().map(|res| match res {
                Ok(message) => view! { <div class="notice success" role="status">{message}</div> }.into_any(),
                Err(e) => view! { <ErrorNotice error=e/> }.into_any(),
            })}
            {move || retrigger.value().get().map(|res| match res {
                Ok(id) => view! {
                    <div class="notice success" role="status">
                        "Run " {id} " is queued. " <a href=format!("/runs/{id}")>"Open it"</a>
                    </div>
                }.into_any(),
                Err(e) => view! { <ErrorNotice error=e/> }.into_any(),
            })}
            {move || match (run_id.get(), instances.get()) {
                (Some(id), Some(Ok(page))) => {
                    let tasks = run.get().and_then(Result::ok).map(|r| r.tasks).unwrap_or_default();
                    view! { <InstanceTable run_id=id page query=instance_query() tasks act/> }.into_any()
                }
                (_, Some(Err(e))) => view! { <ErrorNotice error=e/> }.into_any(),
                _ => ().into_any(),
            }}
            {move || run.get().and_then(Result::ok).map(|run| child_runs(run.children.clone()))}
            {move || run.get().and_then(Result::ok).filter(|r| !r.timeline.lanes.is_empty()).map(|run| view! {
                <h2>"Timeline"</h2>
                {timeline_chart(run.timeline)}
            })}
            {move || run.get().and_then(Result::ok).map(|run| view! { <Artifacts run/> })}
            {move || run.get().and_then(Result::ok).filter(|r| !r.alerts.is_empty()).map(|run| alert_table(run.alerts))}
        </Transition>
    }
}

/// What an action button says, what it asks before it acts, and whether it destroys.
struct Ask {
    label: String,
    question: String,
    danger: bool,
}

fn ask(label: impl Into<String>, question: impl Into<String>, danger: bool) -> Ask {
    Ask {
        label: label.into(),
        question: question.into(),
        danger,
    }
}

/// Hidden inputs and a confirming button: one run action as a form.
fn action_form(
    act: ServerAction<RunAction>,
    run_id: i64,
    action: &'static str,
    target: (Option<String>, Option<i64>),
    ask: Ask,
) -> impl IntoView {
    let (task_id, ti_id) = target;
    let Ask {
        label,
        question,
        danger,
    } = ask;
    view! {
        <ActionForm action=act attr:class="inline">
            <input type="hidden" name="run_id" value=run_id/>
            <input type="hidden" name="action" value=action/>
            {task_id.map(|t| view! { <input type="hidden" name="task_id" value=t/> })}
            {ti_id.map(|t| view! { <input type="hidden" name="ti_id" value=t/> })}
            <ConfirmSubmit label question danger/>
        </ActionForm>
    }
}

#[component]
fn RunHeader(
    run: RunDetail,
    act: ServerAction<RunAction>,
    retrigger: ServerAction<RetriggerRun>,
    live: RwSignal<bool>,
) -> impl IntoView {
    let may = may_act();
    let title = format!("Run {} · {} · trialflow", run.id, run.pipeline_id);
    let active = matches!(run.state.as_str(), "queued" | "running");
    let failed: i64 = run
        .tasks
        .iter()
        .flat_map(|t| t.counts.iter())
        .filter(|(s, _)| s == "failed" || s == "upstream_failed")
        .map(|(_, n)| n)
        .sum();
    let run_id = run.id;
    let took = run
        .started_at
        .zip(run.ended_at)
        .map(|(s, e)| format!(" · took {}", format_duration(e - s)));
    let tasks = run
        .tasks
        .into_iter()
        .map(|t| view! { <TaskRow run_id task=t act/> })
        .collect_view();
    view! {
        <Title text=title/>
        <h1>
            "Run " {run.id} " of " <a href=format!("/pipelines/{}", run.pipeline_id)>{run.pipeline_id.clone()}</a>
            " " <span data-testid="run-state">{state_badge(&run.state)}</span>
        </h1>
        <p class="muted">
            "Triggered by " {run.triggered_by.clone()} " (" {run.run_trigger.clone()} ") at " {when(run.queued_at)}
            {run.ended_at.map(|t| format!(" · ended {}", format_utc(t)))}
            {took}
            {move || live.get().then_some(" · live")}
        </p>
        <p class="muted">"Parameters " <code data-testid="run-conf">{run.conf.clone()}</code></p>
        <Show when=move || may.get()>
            <div class="actions" data-testid="run-actions">
                {active.then(|| action_form(act, run_id, "cancel", (None, None), ask("Cancel run", "Cancel this run? Running tasks are stopped.", true)))}
                {(failed > 0).then(|| action_form(act, run_id, "clear_failed", (None, None), ask(format!("Clear failed ({failed})"), format!("Run the {failed} failed instance(s) again?"), false)))}
                <ActionForm action=retrigger attr:class="inline">
                    <input type="hidden" name="run_id" value=run_id/>
                    <ConfirmSubmit label="Trigger again".to_string()
                        question="Start a new run with the same parameters?".to_string()/>
                </ActionForm>
            </div>
        </Show>
        <h2>"Tasks"</h2>
        <div class="table-wrap"><table class="table" data-testid="run-tasks">
            <thead><tr>
                <th scope="col">"Task"</th><th scope="col">"State"</th><th scope="col">"Progress"</th>
                <th scope="col">"Try"</th><th scope="col">"Started"</th><th scope="col">"Duration"</th>
                <th scope="col"><span class="sr-only">"Actions"</span></th>
            </tr></thead>
            <tbody>{tasks}</tbody>
        </table></div>
    }
}

#[component]
fn TaskRow(run_id: i64, task: TaskProgress, act: ServerAction<RunAction>) -> impl IntoView {
    let may = may_act();
    let counts = task
        .counts
        .iter()
        .map(|(state, n)| view! { <span class="count" data-state=state.clone()>{state_badge(state)} " " {*n}</span> " " })
        .collect_view();
    let failed: i64 = task
        .counts
        .iter()
        .filter(|(s, _)| s == "failed" || s == "upstream_failed")
        .map(|(_, n)| n)
        .sum();
    let single = task.single.clone();
    let task_link = link(
        &format!("/runs/{run_id}"),
        &[("task", Some(task.task_id.clone()))],
    );
    let task_id = task.task_id.clone();
    view! {
        <tr data-task=task.task_id.clone()>
            <th scope="row">
                <a href=task_link>{task.task_id.clone()}</a>
                {task.mapped.then(|| view! { <span class="muted">" [mapped]"</span> })}
            </th>
            <td class="counts">{counts}</td>
            <td class="progress-cell">{progress_bar(&task.counts, task.total, task.done)}</td>
            <td>{single.as_ref().map(|s| format!("{}/{}", s.try_number, s.max_tries))}</td>
            <td>{single.as_ref().and_then(|s| s.started_at).map(when)}</td>
            <td>{single.as_ref().and_then(|s| s.duration_ms).map(format_duration)}</td>
            <td><div class="row-actions">
                {single.as_ref().map(|s| view! { <a href=format!("/runs/{run_id}/instances/{}", s.id)>"Log"</a> })}
                <Show when=move || may.get()>
                    {(failed > 0).then(|| action_form(act, run_id, "clear_failed", (Some(task_id.clone()), None), ask("Clear failed", format!("Run {failed} failed instance(s) of {task_id} again?"), false)))}
                    {action_form(act, run_id, "clear_downstream", (Some(task_id.clone()), None),
                        ask("Clear with downstream", format!("Run {task_id} and everything after it again?"), false))}
                </Show>
            </div></td>
        </tr>
    }
}

#[component]
fn InstanceTable(
    run_id: i64,
    page: InstancePage,
    query: InstanceQuery,
    tasks: Vec<TaskProgress>,
    act: ServerAction<RunAction>,
) -> impl IntoView {
    let may = may_act();
    let base = format!("/runs/{run_id}");
    let with = {
        let base = base.clone();
        let query = query.clone();
        move |sort: Option<String>, dir: Option<String>, page: Option<u32>| {
            link(
                &base,
                &[
                    ("task", query.task.clone()),
                    ("state", query.state.clone()),
                    ("q", query.q.clone()),
                    ("sort", sort),
                    ("dir", dir),
                    ("page", page.map(|p| p.to_string())),
                ],
            )
        }
    };
    let current_sort = query.sort.clone().unwrap_or_else(|| "index".into());
    let descending = query.dir.as_deref() == Some("desc");
    let header = {
        let with = with.clone();
        move |key: &'static str, label: &'static str| {
            let active = current_sort == key;
            let dir = if active && !descending { "desc" } else { "asc" };
            let href = with(Some(key.to_string()), Some(dir.to_string()), None);
            let aria = if active {
                if descending {
                    "descending"
                } else {
                    "ascending"
                }
            } else {
                "none"
            };
            view! { <th scope="col" aria-sort=aria><a href=href>{label}{active.then_some(if descending { " ↓" } else { " ↑" })}</a></th> }
        }
    };
    let pages = (page.total + i64::from(page.page_size) - 1) / i64::from(page.page_size);
    let prev =
        (page.page > 1).then(|| with(query.sort.clone(), query.dir.clone(), Some(page.page - 1)));
    let next = (i64::from(page.page) < pages)
        .then(|| with(query.sort.clone(), query.dir.clone(), Some(page.page + 1)));
    let selected_state = query.state.clone().unwrap_or_default();
    let selected_task = query.task.clone().unwrap_or_default();
    let shown = page.rows.len();
    let rows = page
        .rows
        .into_iter()
        .map(|ti| instance_row(ti, act, may))
        .collect_view();
    view! {
        <h2 id="instances">"Instances"</h2>
        <form method="get" action=base.clone() class="filters" aria-label="Filter instances">
            <label>"Task"
                <select name="task">
                    <option value="">"All"</option>
                    {tasks.iter().map(|t| view! {
                        <option value=t.task_id.clone() selected=t.task_id == selected_task>{t.task_id.clone()}</option>
                    }).collect_view()}
                </select>
            </label>
            <label>"State"
                <select name="state">
                    <option value="">"Any"</option>
                    {STATE_ORDER.iter().map(|s| view! {
                        <option value=*s selected=*s == selected_state>{s.replace('_', " ")}</option>
                    }).collect_view()}
                </select>
            </label>
            <label>"Map key" <input type="search" name="q" value=query.q.clone().unwrap_or_default() placeholder="study key"/></label>
            {query.sort.clone().map(|s| view! { <input type="hidden" name="sort" value=s/> })}
            {query.dir.clone().map(|d| view! { <input type="hidden" name="dir" value=d/> })}
            <button type="submit" class="btn">"Apply"</button>
        </form>
        <div class="table-wrap"><table class="table" data-testid="run-instances">
            <thead><tr>
                {header("key", "Map key")}
                <th scope="col">"Task"</th>
                {header("state", "State")}
                {header("try", "Try")}
                {header("started", "Started")}
                {header("duration", "Duration")}
                <th scope="col">"Output"</th>
                <Show when=move || may.get()><th scope="col"><span class="sr-only">"Actions"</span></th></Show>
            </tr></thead>
            <tbody>{rows}</tbody>
        </table></div>
        {pager(prev, page.page, next, format!("{shown} of {} matching", page.total))}
    }
}

fn instance_row(
    ti: InstanceSummary,
    act: ServerAction<RunAction>,
    may: Signal<bool>,
) -> impl IntoView {
    let href = format!("/runs/{}/instances/{}", ti.run_id, ti.id);
    let key = ti.map_key.clone().unwrap_or_else(|| {
        if ti.map_index >= 0 {
            format!("#{}", ti.map_index)
        } else {
            ti.task_id.clone()
        }
    });
    let output = match (ti.rows, ti.bytes) {
        (Some(rows), Some(bytes)) => format!(
            "{rows} rows · {bytes} bytes · {}",
            ti.path
                .as_deref()
                .and_then(|p| p.rsplit('/').next())
                .unwrap_or("")
        ),
        _ => ti.summary.clone(),
    };
    let (run_id, ti_id, label) = (ti.run_id, ti.id, key.clone());
    view! {
        <tr data-instance=ti.id data-key=key.clone() data-state=ti.state.clone()>
            <td><a href=href>{key.clone()}</a></td>
            <td>{ti.task_id.clone()}</td>
            <td>{state_badge(&ti.state)}</td>
            <td>{format!("{}/{}", ti.try_number, ti.max_tries)}</td>
            <td>{ti.started_at.map(when)}</td>
            <td>{ti.duration_ms.map(format_duration)}</td>
            <td class="output"><span class="clip" title=output.clone()>{output.clone()}</span></td>
            <Show when=move || may.get()>
                <td><div class="row-actions">
                    {action_form(act, run_id, "clear_instance", (None, Some(ti_id)),
                        ask("Clear", format!("Run {label} again?"), false))}
                    {action_form(act, run_id, "mark_success", (None, Some(ti_id)),
                        ask("Mark success", format!("Mark {label} successful?"), false))}
                    {action_form(act, run_id, "mark_failed", (None, Some(ti_id)),
                        ask("Mark failed", format!("Mark {label} failed?"), true))}
                </div></td>
            </Show>
        </tr>
    }
}

/// A flow of flows' children: each one's run and the values and references it was given.
fn child_runs(children: Vec<ChildRun>) -> impl IntoView {
    (!children.is_empty()).then(|| {
        let rows = children
            .into_iter()
            .map(|c| {
                view! {
                    <tr data-child=c.flow.clone()>
                        <th scope="row">{c.flow.clone()}</th>
                        <td>{state_badge(&c.state)}</td>
                        <td>{c.run_id.map(|id| view! { <a href=format!("/runs/{id}")>{format!("#{id}")}</a> })}</td>
                        <td>
                            <pre class="json" data-testid="child-parameters">{c.parameters.clone()}</pre>
                            <details><summary>"Mapped from"</summary><pre class="json">{c.references.clone()}</pre></details>
                            {c.error.clone().map(|e| view! { <p class="notice error">{e}</p> })}
                        </td>
                    </tr>
                }
            })
            .collect_view();
        view! {
            <h2>"Child flows"</h2>
            <div class="table-wrap"><table class="table" data-testid="child-runs">
                <thead><tr><th scope="col">"Flow"</th><th scope="col">"State"</th><th scope="col">"Run"</th>
                    <th scope="col">"Parameters it received"</th></tr></thead>
                <tbody>{rows}</tbody>
            </table></div>
        }
    })
}

#[component]
fn Artifacts(run: RunDetail) -> impl IntoView {
    let more = run.artifact_count.saturating_sub(run.artifacts.len());
    let rows = run
        .artifacts
        .into_iter()
        .map(|a| {
            let name = a.uri.rsplit('/').next().unwrap_or_default().to_string();
            let file = if a.downloadable {
                let label = name.clone();
                view! { <a href=format!("/artifacts/{}/download", a.id) download=name rel="external">{label}</a> }
                    .into_any()
            } else {
                view! { <code>{a.uri.clone()}</code> }.into_any()
            };
            view! {
                <tr>
                    <td>{file}</td>
                    <td>{a.rows.map(|r| r.to_string()).unwrap_or_default()}</td>
                    <td>{a.bytes}</td>
                    <td><code class="hash">{a.sha256}</code></td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <h2>"Files"</h2>
        <div class="table-wrap"><table class="table" data-testid="run-artifacts">
            <thead><tr>
                <th scope="col">"File"</th><th scope="col">"Rows"</th><th scope="col">"Bytes"</th>
                <th scope="col">"SHA-256"</th>
            </tr></thead>
            <tbody>{rows}</tbody>
        </table></div>
        {(more > 0).then(|| view! { <p class="muted">{format!("and {more} more")}</p> })}
    }
}

/// The run's alerts: which target heard what, and how delivery went.
fn alert_table(alerts: Vec<AlertDeliveryInfo>) -> impl IntoView {
    let rows = alerts
        .into_iter()
        .map(|a| {
            let event = match a.event.as_str() {
                "failure" => "failure",
                "success" => "success",
                "sla_miss" => "SLA missed",
                other => other,
            }
            .to_string();
            let outcome = match (a.delivered_at, a.next_attempt_at) {
                (Some(at), _) => view! { "delivered " {when(at)} }.into_any(),
                (None, Some(at)) => view! { "next try " {when(at)} }.into_any(),
                (None, None) => view! { "gave up" }.into_any(),
            };
            view! {
                <tr data-alert-state=a.state.clone()>
                    <td>{event}</td>
                    <td><code>{a.conn_id}</code></td>
                    <td><span class=format!("badge state-{}", a.state)>{a.state.clone()}</span></td>
                    <td>{a.attempts}</td>
                    <td>{outcome}</td>
                    <td class="clip">{a.last_error.unwrap_or_default()}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <h2>"Alerts"</h2>
        <div class="table-wrap"><table class="table" data-testid="run-alerts">
            <thead><tr>
                <th scope="col">"Event"</th><th scope="col">"Target"</th><th scope="col">"State"</th>
                <th scope="col">"Attempts"</th><th scope="col">"When"</th><th scope="col">"Last error"</th>
            </tr></thead>
            <tbody>{rows}</tbody>
        </table></div>
    }
}

#[component]
pub fn InstancePage() -> impl IntoView {
    let params = use_params_map();
    let ti_id = Memo::new(move |_| {
        params
            .read()
            .get("ti")
            .and_then(|id| id.parse::<i64>().ok())
    });
    let version = RwSignal::new(0u64);
    let detail = Resource::new(
        move || (ti_id.get(), version.get()),
        |(id, _)| async move {
            match id {
                Some(id) => get_instance(id).await,
                None => Err(AppError::NotFound("That instance".into())),
            }
        },
    );
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || detail.get().map(|res| match res {
                Ok(d) => view! { <InstanceView detail=d version/> }.into_any(),
                Err(e) => view! { <ErrorNotice error=e/> }.into_any(),
            })}
        </Transition>
    }
}

#[component]
fn InstanceView(detail: InstanceDetail, version: RwSignal<u64>) -> impl IntoView {
    let ti = detail.instance.clone();
    let key = ti.map_key.clone().unwrap_or_else(|| ti.task_id.clone());
    let title = format!("{key} · run {} · trialflow", ti.run_id);
    // The newest attempt's log grows live while it runs.
    let live_lines: RwSignal<Vec<LogLineInfo>> = RwSignal::new(Vec::new());
    if let Some(last) = detail.attempts.last().filter(|a| a.ended_at.is_none()) {
        let after = last.log.last().map(|l| l.id).unwrap_or(0);
        let url = format!(
            "/events/instances/{}/log?attempt={}&after={after}",
            ti.id, last.id
        );
        subscribe(url, &["log", "end"], move |name, data| {
            if name == "end" {
                version.update(|v| *v += 1);
                return false;
            }
            if let Ok(line) = serde_json::from_str::<LogLineInfo>(&data) {
                live_lines.update(|lines| lines.push(line));
            }
            true
        });
    }
    let last_index = detail.attempts.len().saturating_sub(1);
    let attempts = detail
        .attempts
        .into_iter()
        .enumerate()
        .rev()
        .map(|(i, a)| {
            let lines = a
                .log
                .into_iter()
                .map(|l| view! { <div class=format!("log-line {}", l.stream)>{l.line}</div> })
                .collect_view();
            let live = (i == last_index).then_some(move || {
                live_lines
                    .get()
                    .into_iter()
                    .map(|l| view! { <div class=format!("log-line {}", l.stream)>{l.line}</div> })
                    .collect_view()
            });
            view! {
                <section class="card attempt" data-attempt=a.id>
                    <h3>"Try " {a.try_number} " " {state_badge(&a.state)}</h3>
                    <p class="muted">
                        "On " {a.worker.clone()} " · started " {when(a.started_at)}
                        {a.ended_at.map(|e| format!(" · took {}", format_duration(e - a.started_at)))}
                    </p>
                    {a.error.map(|e| view! { <p class="notice error">{e}</p> })}
                    <pre class="log" data-testid="task-log" tabindex="0" aria-label=format!("Log of try {}", a.try_number)>{lines}{live}</pre>
                    {a.log_more.then(|| view! { <p class="muted">"Only the first 500 lines are shown."</p> })}
                </section>
            }
        })
        .collect_view();
    view! {
        <Title text=title/>
        <p><a href=format!("/runs/{}", ti.run_id)>{format!("← Run {} of {}", ti.run_id, detail.pipeline_id)}</a></p>
        <h1>{key.clone()} " " <span data-testid="instance-state">{state_badge(&ti.state)}</span></h1>
        <dl class="facts">
            <dt>"Task"</dt><dd>{ti.task_id.clone()}</dd>
            <dt>"Map index"</dt><dd>{ti.map_index}</dd>
            <dt>"Try"</dt><dd>{format!("{} of {}", ti.try_number, ti.max_tries)}</dd>
            <dt>"Queued"</dt><dd>{detail.queued_at.map(when)}</dd>
            <dt>"Started"</dt><dd>{ti.started_at.map(when)}</dd>
            <dt>"Duration"</dt><dd>{ti.duration_ms.map(format_duration)}</dd>
            {detail.next_attempt_at.map(|t| view! { <dt>"Next attempt"</dt><dd>{when(t)}</dd> })}
        </dl>
        {detail.error.clone().map(|e| view! { <h2>"Error"</h2><pre class="notice error" data-testid="instance-error">{e}</pre> })}
        <h2>"Input"</h2>
        <pre class="json" data-testid="instance-input">{detail.input.clone().unwrap_or_else(|| "—".into())}</pre>
        <h2>"Result"</h2>
        <pre class="json" data-testid="instance-output">{detail.output.clone().unwrap_or_else(|| "—".into())}</pre>
        <h2>"Attempts"</h2>
        {attempts}
    }
}
