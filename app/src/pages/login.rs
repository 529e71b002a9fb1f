use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

/// Message for the `error` / `reason` codes the login handler redirects with. Codes rather than
/// free text, so a crafted link cannot make the page say anything else.
fn message_for(
    error: Option<&str>,
    reason: Option<&str>,
    retry_s: Option<u64>,
) -> Option<(&'static str, String)> {
    let text = match (error, reason) {
        (Some("invalid"), _) => "The username or password is wrong.".to_string(),
        (Some("throttled"), _) => format!(
            "Too many failed sign-in attempts. Wait {} seconds, then try again.",
            retry_s.unwrap_or(60)
        ),
        (Some("disabled"), _) => "This account is disabled. Ask an admin to enable it.".to_string(),
        (Some("malformed"), _) => {
            "The sign-in form was incomplete: enter a username and a password.".to_string()
        }
        (Some(_), _) => "Sign-in failed. Try again.".to_string(),
        (None, Some("expired")) => "Your session has expired. Sign in again.".to_string(),
        (None, Some("signed_out")) => return Some(("success", "You are signed out.".to_string())),
        (None, Some("required")) => "Sign in to continue.".to_string(),
        _ => return None,
    };
    Some(("error", text))
}

#[component]
pub fn LoginPage() -> impl IntoView {
    let query = use_query_map();
    let notice = move || {
        let q = query.read();
        let retry = q.get("retry").and_then(|v| v.parse().ok());
        message_for(q.get("error").as_deref(), q.get("reason").as_deref(), retry).map(|(kind, text)| {
            view! { <div class=format!("notice {kind}") role="alert" data-testid="login-message">{text}</div> }
        })
    };
    let next = move || query.read().get("next").unwrap_or_else(|| "/".to_string());
    let username = move || query.read().get("username").unwrap_or_default();
    view! {
        <Title text="Sign in · trialflow"/>
        <div class="login-wrap">
            <form class="card login" method="post" action="/auth/login">
                <h1 class="brand">"trialflow"</h1>
                <p class="muted">"Clinical-trial data exports"</p>
                {notice}
                <label for="username">"Username"</label>
                <input id="username" name="username" autocomplete="username" required value=username/>
                <label for="password">"Password"</label>
                <input id="password" name="password" type="password" autocomplete="current-password" required/>
                <input type="hidden" name="next" value=next/>
                <button type="submit" class="btn primary">"Sign in"</button>
            </form>
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::message_for;

    #[test]
    fn throttle_message_names_the_wait() {
        let (kind, text) = message_for(Some("throttled"), None, Some(30)).expect("message");
        assert_eq!(kind, "error");
        assert!(text.contains("30 seconds"), "{text}");
    }

    #[test]
    fn unknown_codes_show_a_generic_message_not_the_code() {
        let (_, text) = message_for(Some("<script>"), None, None).expect("message");
        assert!(!text.contains("script"));
    }
}
