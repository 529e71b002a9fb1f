//! Pools: slots, and how many instances run and wait in each. Ops change slots and add pools.
use crate::api::pools::{DeletePool, SavePool, list_pools};
use crate::components::layout::current_role;
use crate::components::notice::{ErrorNotice, action_outcome};
use crate::components::widgets::ConfirmSubmit;
use crate::model::{PoolInfo, Role};
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn PoolsPage() -> impl IntoView {
    let role = current_role();
    let may_edit = Signal::derive(move || role.get().is_some_and(|r| r.allows(Role::Op)));
    let save = ServerAction::<SavePool>::new();
    let delete = ServerAction::<DeletePool>::new();
    let pools = Resource::new(
        move || (save.version().get(), delete.version().get()),
        |_| list_pools(),
    );
    view! {
        <Title text="Pools · trialflow"/>
        <h1>"Pools"</h1>
        {action_outcome(save.value(), |p: &PoolInfo| format!("Pool {} has {} slots.", p.name, p.slots))}
        {action_outcome(delete.value(), |name: &String| format!("Pool {name} deleted."))}
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || pools.get().map(|res| match res {
                Ok(list) => {
                    let rows = list.into_iter().map(|p| pool_row(p, may_edit, save, delete)).collect_view();
                    view! {
                        <div class="table-wrap"><table class="table" data-testid="pools">
                            <thead><tr>
                                <th scope="col">"Pool"</th><th scope="col">"Slots"</th><th scope="col">"Running"</th>
                                <th scope="col">"Queued"</th><th scope="col">"Description"</th>
                            </tr></thead>
                            <tbody>{rows}</tbody>
                        </table></div>
                    }.into_any()
                }
                Err(e) => view! { <ErrorNotice error=e/> }.into_any(),
            })}
        </Transition>
        <Show when=move || may_edit.get()>
            <section class="card">
                <h2>"Add a pool"</h2>
                <ActionForm action=save attr:class="form-grid">
                    <label for="pool-name">"Name"</label>
                    <input id="pool-name" name="name" required autocomplete="off"/>
                    <label for="pool-slots">"Slots"</label>
                    <input id="pool-slots" name="slots" inputmode="numeric" value="4"/>
                    <label for="pool-description">"Description"</label>
                    <input id="pool-description" name="description"/>
                    <button type="submit" class="btn primary">"Add pool"</button>
                </ActionForm>
            </section>
        </Show>
    }
}

fn pool_row(
    p: PoolInfo,
    may_edit: Signal<bool>,
    save: ServerAction<SavePool>,
    delete: ServerAction<DeletePool>,
) -> impl IntoView {
    let (name, description, slots, builtin) =
        (p.name.clone(), p.description.clone(), p.slots, p.builtin);
    let slots_cell = {
        let (name, description) = (name.clone(), description.clone());
        move || {
            if !may_edit.get() {
                return view! { {slots} }.into_any();
            }
            let slots_id = format!("slots-{name}");
            let label = format!("Slots of {name}");
            let (name, description) = (name.clone(), description.clone());
            view! {
                <ActionForm action=save attr:class="inline">
                    <input type="hidden" name="name" value=name/>
                    <input type="hidden" name="description" value=description/>
                    <label class="sr-only" for=slots_id.clone()>{label}</label>
                    <input id=slots_id name="slots" class="narrow" inputmode="numeric" value=slots/>
                    <button type="submit" class="btn">"Save"</button>
                </ActionForm>
            }
            .into_any()
        }
    };
    let delete_cell = {
        let name = name.clone();
        move || {
            (may_edit.get() && !builtin).then(|| {
                let question = format!("Delete pool {name}?");
                let name = name.clone();
                view! {
                    <ActionForm action=delete attr:class="inline">
                        <input type="hidden" name="name" value=name/>
                        <ConfirmSubmit label="Delete".to_string() question=question danger=true/>
                    </ActionForm>
                }
            })
        }
    };
    view! {
        <tr data-pool=name.clone()>
            <th scope="row">{name.clone()}{builtin.then(|| view! { " " <span class="muted">"(built in)"</span> })}</th>
            <td>{slots_cell}</td>
            <td>{p.running}</td>
            <td>{p.queued}</td>
            <td>{description.clone()} " " {delete_cell}</td>
        </tr>
    }
}
