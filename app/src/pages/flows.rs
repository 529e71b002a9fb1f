//! Flows: the registry (newest version of each flow), registering and validating YAML pasted
//! in (ops), and one flow's page with its parameters, source and, for a flow of flows, its
//! composition drawn as a graph with the mappings on the edges.
use crate::api::flows::{RegisterFlow, ValidateFlow, get_flow, list_flows};
use crate::components::layout::current_role;
use crate::components::notice::{ErrorNotice, action_outcome};
use crate::components::time::{format_utc, when};
use crate::error::AppError;
use crate::model::{ChildInfo, FlowDetail, FlowInfo, FlowRegistered, Role};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_params_map;

#[component]
pub fn FlowsPage() -> impl IntoView {
    let role = current_role();
    let may_register = Signal::derive(move || role.get().is_some_and(|r| r.allows(Role::Op)));
    let register = ServerAction::<RegisterFlow>::new();
    let validate = ServerAction::<ValidateFlow>::new();
    let flows = Resource::new(move || register.version().get(), |_| list_flows());
    view! {
        <Title text="Flows · trialflow"/>
        <h1>"Flows"</h1>
        <p class="muted">
            "Flows are pipelines with a project and versions; a flow of flows runs its children in order and "
            "passes them results of their parents' tasks."
        </p>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || flows.get().map(|res| match res {
                Ok(list) => flows_table(list).into_any(),
                Err(e) => view! { <ErrorNotice error=e/> }.into_any(),
            })}
        </Transition>
        <Show when=move || may_register.get()>
            <section class="card" data-testid="register-flow">
                <h2>"Register a flow"</h2>
                {action_outcome(register.value(), |r: &FlowRegistered| {
                    if r.created {
                        format!("Registered {}/{} version {} ({}).", r.project, r.name, r.version, r.kind)
                    } else {
                        format!("{}/{} is unchanged (version {}).", r.project, r.name, r.version)
                    }
                })}
                {action_outcome(validate.value(), |summary: &String| format!("Valid: {summary}."))}
                <ActionForm action=register attr:class="form-grid">
                    <label for="flow-project">"Project (for a pipeline)"</label>
                    <input id="flow-project" name="project" value="default" autocomplete="off"/>
                    <label for="flow-source">"YAML (a pipeline, or a flow of flows with composing_flows)"</label>
                    <textarea id="flow-source" name="source" rows="14" spellcheck="false" required></textarea>
                    <button type="submit" class="btn primary">"Register"</button>
                </ActionForm>
                <p class="muted">"To check without registering, paste the same YAML here:"</p>
                <ActionForm action=validate attr:class="form-grid">
                    <label for="validate-source">"YAML to validate"</label>
                    <textarea id="validate-source" name="source" rows="6" spellcheck="false" required></textarea>
                    <button type="submit" class="btn">"Validate"</button>
                </ActionForm>
            </section>
        </Show>
    }
}

fn flows_table(list: Vec<FlowInfo>) -> impl IntoView {
    if list.is_empty() {
        return view! { <div class="card empty"><p>"No flows are registered yet."</p></div> }
            .into_any();
    }
    let rows = list
        .into_iter()
        .map(|f| {
            view! {
                <tr data-flow=f.name.clone()>
                    <th scope="row"><a href=format!("/flows/{}/{}", f.project, f.name)>{f.name.clone()}</a></th>
                    <td>{f.project.clone()}</td>
                    <td>{format!("v{}", f.version)}</td>
                    <td>{if f.kind == "composition" { "flow of flows" } else { "pipeline" }}</td>
                    <td>{format!("#{}", f.flow_id)}</td>
                    <td>{f.created_by.clone()} " · " {when(f.created_at)}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <div class="table-wrap"><table class="table" data-testid="flows">
            <thead><tr>
                <th scope="col">"Flow"</th><th scope="col">"Project"</th><th scope="col">"Version"</th>
                <th scope="col">"Kind"</th><th scope="col">"Flow id"</th><th scope="col">"Registered"</th>
            </tr></thead>
            <tbody>{rows}</tbody>
        </table></div>
    }
    .into_any()
}

#[component]
pub fn FlowPage() -> impl IntoView {
    let params = use_params_map();
    let detail = Resource::new(
        move || {
            let p = params.read();
            (p.get("project"), p.get("name"))
        },
        |(project, name)| async move {
            match (project, name) {
                (Some(project), Some(name)) => get_flow(project, name).await,
                _ => Err(AppError::NotFound("That flow".into())),
            }
        },
    );
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || detail.get().map(|res| match res {
                Ok(d) => flow_view(d).into_any(),
                Err(e) => view! { <ErrorNotice error=e/> }.into_any(),
            })}
        </Transition>
    }
}

fn flow_view(d: FlowDetail) -> impl IntoView {
    let f = d.info;
    let params: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&f.parameters).unwrap_or_default();
    let param_rows = params
        .iter()
        .map(|(name, spec)| {
            view! {
                <tr>
                    <td><code>{name.clone()}</code></td>
                    <td>{spec["type"].as_str().unwrap_or("").to_string()}</td>
                    <td>{if spec["required"].as_bool().unwrap_or(false) { "required".to_string() } else { spec["default"].to_string() }}</td>
                </tr>
            }
        })
        .collect_view();
    let composed = !d.children.is_empty();
    view! {
        <Title text=format!("{} · flows · trialflow", f.name)/>
        <p><a href="/flows">"← Flows"</a></p>
        <h1>{f.name.clone()} " " <span class="badge role">{format!("v{}", f.version)}</span></h1>
        <p class="muted">
            {format!("Project {} · flow id {} · {} · registered by {} at {}",
                f.project, f.flow_id, if composed { "flow of flows" } else { "pipeline" },
                f.created_by, format_utc(f.created_at))}
        </p>
        <p><a class="btn" href=format!("/pipelines/{}", f.name)>"Run it from its pipeline page"</a></p>
        {composed.then(|| view! { <h2>"Composition"</h2> {composition_graph(&d.children)} {mappings_table(&d.children)} })}
        <h2>"Parameters"</h2>
        <div class="table-wrap"><table class="table" data-testid="flow-params">
            <thead><tr><th scope="col">"Parameter"</th><th scope="col">"Type"</th><th scope="col">"Default"</th></tr></thead>
            <tbody>{param_rows}</tbody>
        </table></div>
        <details class="card">
            <summary>"YAML source"</summary>
            <pre class="json" data-testid="flow-source">{d.source}</pre>
        </details>
    }
}

/// Children left to right in run order; each mapping is an arrow from parent to child labelled
/// `param ← task (type)`.
fn composition_graph(children: &[ChildInfo]) -> impl IntoView + use<> {
    const W: f64 = 170.0;
    const H: f64 = 40.0;
    const GAP: f64 = 90.0;
    const TOP: f64 = 20.0;
    let x_of = |i: usize| i as f64 * (W + GAP);
    let index_of = |name: &str| children.iter().position(|c| c.name == name);
    let mut edges = Vec::new();
    let mut arc = 0.0;
    for (i, child) in children.iter().enumerate() {
        for m in &child.mappings {
            let Some(p) = index_of(&m.parent_flow) else {
                continue;
            };
            arc += 1.0;
            let (x1, x2) = (x_of(p) + W / 2.0, x_of(i) + W / 2.0);
            let y = TOP + H;
            let dip = 30.0 + 22.0 * arc;
            let label = format!("{} ← {} ({})", m.param, m.parent_task, m.map_type);
            edges.push(view! {
                <g class="mapping">
                    <path d=format!("M {x1} {y} C {x1} {} {x2} {} {x2} {y}", y + dip, y + dip) class="edge" fill="none"/>
                    <text x=(x1 + x2) / 2.0 y=y + dip * 0.75 + 4.0 text-anchor="middle">{label}</text>
                </g>
            });
        }
    }
    let height = TOP + H + 40.0 + 22.0 * (arc + 1.0) + 20.0;
    let width = x_of(children.len().max(1)) - GAP + 10.0;
    let boxes = children
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let x = x_of(i);
            let next = (i + 1 < children.len()).then(|| {
                view! { <line x1=x + W y1=TOP + H / 2.0 x2=x + W + GAP y2=TOP + H / 2.0 class="edge order"/> }
            });
            view! {
                <g class="node">
                    <title>{format!("{} (project {})", c.name, c.project)}</title>
                    <rect x=x y=TOP width=W height=H rx="6"/>
                    <text x=x + 10.0 y=TOP + 25.0>{format!("{}. {}", i + 1, c.name)}</text>
                    {next}
                </g>
            }
        })
        .collect_view();
    view! {
        <div class="graph" data-testid="composition-graph">
            <svg viewBox=format!("-4 0 {} {}", width + 8.0, height) width=width height=height role="img"
                aria-label="Composition: children in run order, mappings as arrows">
                {boxes}{edges}
            </svg>
        </div>
    }
}

fn mappings_table(children: &[ChildInfo]) -> impl IntoView + use<> {
    let rows = children
        .iter()
        .flat_map(|c| {
            let mapped = c.mappings.iter().map(|m| {
                let index = (m.attribute_index != "[]").then(|| format!(" at {}", m.attribute_index));
                view! {
                    <tr>
                        <td>{c.name.clone()}</td>
                        <td><code>{m.param.clone()}</code></td>
                        <td>{format!("{}.{}", m.parent_flow, m.parent_task)}</td>
                        <td>{m.map_type.clone()}{index}</td>
                    </tr>
                }
                .into_any()
            });
            let exposed = c.exposed.iter().map(|e| {
                view! {
                    <tr>
                        <td>{c.name.clone()}</td>
                        <td><code>{e.strip_prefix(&format!("{}-", c.name)).unwrap_or(e).to_string()}</code></td>
                        <td>{format!("top-level parameter {e}")}</td>
                        <td>"given at run time"</td>
                    </tr>
                }
                .into_any()
            });
            mapped.chain(exposed).collect::<Vec<_>>()
        })
        .collect_view();
    view! {
        <div class="table-wrap"><table class="table" data-testid="mappings">
            <thead><tr><th scope="col">"Child"</th><th scope="col">"Parameter"</th>
                <th scope="col">"From"</th><th scope="col">"How"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table></div>
    }
}
