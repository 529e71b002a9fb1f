use crate::api::users::{CreateUser, ResetUserPassword, SetUserDisabled, SetUserRole, list_users};
use crate::components::notice::{ErrorNotice, action_outcome};
use crate::components::time::when;
use crate::model::{PasswordReset, Role, UserInfo};
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn UsersPage() -> impl IntoView {
    let create = ServerAction::<CreateUser>::new();
    let set_role = ServerAction::<SetUserRole>::new();
    let set_disabled = ServerAction::<SetUserDisabled>::new();
    let reset = ServerAction::<ResetUserPassword>::new();
    let users = Resource::new(
        move || {
            (
                create.version().get(),
                set_role.version().get(),
                set_disabled.version().get(),
                reset.version().get(),
            )
        },
        |_| list_users(),
    );

    view! {
        <Title text="Users · trialflow"/>
        <h1>"Users"</h1>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || users.get().map(|res| match res {
                Ok(list) => view! {
                    {action_outcome(create.value(), |u: &UserInfo| format!("Created {} ({}).", u.username, u.role))}
                    {action_outcome(set_role.value(), |u: &UserInfo| format!("{} is now {}.", u.username, u.role))}
                    {action_outcome(set_disabled.value(), |u: &UserInfo| {
                        format!("{} is {}.", u.username, if u.disabled { "disabled" } else { "enabled" })
                    })}
                    {action_outcome(reset.value(), |r: &PasswordReset| match &r.one_time_password {
                        Some(p) => format!("New password for {}: {p} — shown once; hand it over now.", r.username),
                        None => format!("Password of {} changed.", r.username),
                    })}
                    <UserTable list set_role set_disabled reset/>
                    <NewUserForm create/>
                }.into_any(),
                Err(e) => view! { <ErrorNotice error=e/> }.into_any(),
            })}
        </Transition>
    }
}

#[component]
fn UserTable(
    list: Vec<UserInfo>,
    set_role: ServerAction<SetUserRole>,
    set_disabled: ServerAction<SetUserDisabled>,
    reset: ServerAction<ResetUserPassword>,
) -> impl IntoView {
    view! {
        <div class="table-wrap">
            <table class="table" data-testid="users-table">
                <thead>
                    <tr>
                        <th scope="col">"User"</th>
                        <th scope="col">"Role"</th>
                        <th scope="col">"Status"</th>
                        <th scope="col">"Created"</th>
                        <th scope="col">"Password"</th>
                    </tr>
                </thead>
                <tbody>
                    {list.into_iter().map(|u| {
                        let role_label = format!("Role of {}", u.username);
                        view! {
                            <tr>
                                <td>{u.username.clone()}</td>
                                <td>
                                    <ActionForm action=set_role attr:class="inline">
                                        <input type="hidden" name="user_id" value=u.id/>
                                        <select name="role" aria-label=role_label>
                                            {Role::ALL.iter().map(|r| view! {
                                                <option value=r.as_str() selected=*r == u.role>{r.as_str()}</option>
                                            }).collect_view()}
                                        </select>
                                        <button type="submit" class="btn subtle">"Change"</button>
                                    </ActionForm>
                                </td>
                                <td>
                                    <ActionForm action=set_disabled attr:class="inline">
                                        <input type="hidden" name="user_id" value=u.id/>
                                        <input type="hidden" name="disabled" value=(!u.disabled).to_string()/>
                                        <span class=if u.disabled { "badge state-failed" } else { "badge state-success" }>
                                            {if u.disabled { "disabled" } else { "active" }}
                                        </span>
                                        " "
                                        <button type="submit" class="btn subtle">
                                            {if u.disabled { "Enable" } else { "Disable" }}
                                        </button>
                                    </ActionForm>
                                </td>
                                <td>{when(u.created_at)}</td>
                                <td>
                                    <ActionForm action=reset attr:class="inline">
                                        <input type="hidden" name="user_id" value=u.id/>
                                        <button type="submit" class="btn subtle">"Generate new"</button>
                                    </ActionForm>
                                </td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }
}

#[component]
fn NewUserForm(create: ServerAction<CreateUser>) -> impl IntoView {
    view! {
        <section class="card">
            <h2>"Add a user"</h2>
            <ActionForm action=create attr:class="form-grid">
                <label for="new-username">"Username"</label>
                <input id="new-username" name="username" required autocomplete="off"/>
                <label for="new-role">"Role"</label>
                <select id="new-role" name="role">
                    {Role::ALL.iter().map(|r| view! { <option value=r.as_str()>{r.as_str()}</option> }).collect_view()}
                </select>
                <label for="new-password">"Password"</label>
                <input id="new-password" name="password" type="password" required minlength="12" autocomplete="new-password"/>
                <button type="submit" class="btn primary">"Add user"</button>
            </ActionForm>
        </section>
    }
}
