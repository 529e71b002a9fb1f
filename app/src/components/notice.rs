use crate::error::AppError;
use leptos::prelude::*;

/// An error message for the person at the browser, with a way back to sign in when that helps.
#[component]
pub fn ErrorNotice(error: AppError) -> impl IntoView {
    let needs_login = matches!(error, AppError::Unauthenticated | AppError::SessionExpired);
    view! {
        <div class="notice error" role="alert">
            <span>{error.to_string()}</span>
            {needs_login.then(|| view! { " " <a href="/login">"Sign in"</a> })}
        </div>
    }
}

/// The outcome of the last submission of a form: nothing, a success line, or the error.
pub fn action_outcome<T: Clone + Send + Sync + 'static>(
    value: impl Get<Value = Option<Result<T, AppError>>> + Send + Sync + 'static,
    success: impl Fn(&T) -> String + Send + Sync + 'static,
) -> impl IntoView {
    move || {
        value.get().map(|res| match res {
            Ok(v) => {
                view! { <div class="notice success" role="status">{success(&v)}</div> }.into_any()
            }
            Err(e) => view! { <ErrorNotice error=e/> }.into_any(),
        })
    }
}
