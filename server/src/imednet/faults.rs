//! Fault injection for the simulator, set in [`super::SimConfig`], through
//! [`super::SimState::set_faults`], or at run time with `PUT /__sim/faults` (JSON body = [`Faults`]).
//!
//! Deterministic faults are rules with a count ("fail the next 2 requests", "answer 503 to
//! study X's records endpoint forever"); `errorShare` is a seeded pseudo-random share that
//! is reproducible for a given request order.

use serde::{Deserialize, Serialize};

/// Run-time fault settings. All zero/empty by default (no faults).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Faults {
    /// Added to every API request.
    pub latency_ms: u64,
    /// Requests per second allowed per `x-api-key`; over it → 429 with `Retry-After`.
    pub rate_limit_rps: Option<u32>,
    /// Share (0.0–1.0) of API requests answered with `error_status`.
    pub error_share: f64,
    /// Status used by `error_share` (500 when unset).
    pub error_status: Option<u16>,
    /// Targeted rules; the first matching rule with count left applies to a request.
    pub rules: Vec<FaultRule>,
}

/// A fault applied to requests matching all the given selectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultRule {
    /// Study key (decoded) the request addresses; `None` = any, including `/studies`.
    #[serde(default)]
    pub study: Option<String>,
    /// Endpoint name: `studies`, `sites`, `records`, `jobs`, …; `None` = any.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `GET`/`POST`; `None` = any.
    #[serde(default)]
    pub method: Option<String>,
    pub kind: FaultKind,
    /// How many requests this rule still applies to; `None` = forever.
    #[serde(default)]
    pub count: Option<u32>,
    /// Matching requests let through unharmed before the rule starts to apply (a fault in the
    /// middle of an export: the first pages arrive, a later one does not). While it waits, the
    /// rule still decides for the requests it matches: later rules are not consulted.
    #[serde(default)]
    pub after: u32,
}

/// What happens to a matching request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum FaultKind {
    /// Answer this status without running the handler. 429 carries `Retry-After`.
    #[serde(rename_all = "camelCase")]
    Status {
        status: u16,
        #[serde(default)]
        retry_after_secs: Option<u64>,
    },
    /// Wait this long before handling (longer than the client's timeout = a stalled response).
    Stall { ms: u64 },
    /// Extra latency for matching requests only.
    Latency { ms: u64 },
    /// Answer 200 with a body that is not valid JSON.
    Malformed,
    /// Answer 200 with the real body cut in half.
    Truncated,
}

impl FaultRule {
    /// Rule for any request.
    pub fn any(kind: FaultKind) -> Self {
        Self {
            study: None,
            endpoint: None,
            method: None,
            kind,
            count: None,
            after: 0,
        }
    }
    /// Limit to `n` requests.
    pub fn times(mut self, n: u32) -> Self {
        self.count = Some(n);
        self
    }
    /// Let the first `n` matching requests through.
    pub fn after(mut self, n: u32) -> Self {
        self.after = n;
        self
    }
    /// Limit to one study.
    pub fn study(mut self, key: &str) -> Self {
        self.study = Some(key.to_string());
        self
    }
    /// Limit to one endpoint name.
    pub fn endpoint(mut self, name: &str) -> Self {
        self.endpoint = Some(name.to_string());
        self
    }
    /// Limit to one HTTP method.
    pub fn method(mut self, m: &str) -> Self {
        self.method = Some(m.to_ascii_uppercase());
        self
    }

    pub(crate) fn matches(&self, study: Option<&str>, endpoint: &str, method: &str) -> bool {
        self.count != Some(0)
            && self.study.as_deref().is_none_or(|s| Some(s) == study)
            && self.endpoint.as_deref().is_none_or(|e| e == endpoint)
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
    }
}

impl Faults {
    /// Take the first matching rule, consuming one use of its count.
    pub(crate) fn take_rule(
        &mut self,
        study: Option<&str>,
        endpoint: &str,
        method: &str,
    ) -> Option<FaultKind> {
        let pos = self
            .rules
            .iter()
            .position(|r| r.matches(study, endpoint, method))?;
        let rule = &mut self.rules[pos];
        if rule.after > 0 {
            rule.after -= 1;
            return None;
        }
        let kind = rule.kind.clone();
        if let Some(c) = rule.count.as_mut() {
            *c -= 1;
            if *c == 0 {
                self.rules.remove(pos);
            }
        }
        Some(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_count_down_and_serde() {
        let mut f = Faults {
            rules: vec![
                FaultRule::any(FaultKind::Status {
                    status: 503,
                    retry_after_secs: None,
                })
                .study("DEMO")
                .endpoint("records")
                .times(1),
            ],
            ..Default::default()
        };
        assert!(f.take_rule(Some("OTHER"), "records", "GET").is_none());
        assert!(f.take_rule(Some("DEMO"), "records", "GET").is_some());
        assert!(f.take_rule(Some("DEMO"), "records", "GET").is_none());
        let parsed: Faults = serde_json::from_str(
            r#"{"latencyMs":5,"rules":[{"kind":{"type":"status","status":429,"retryAfterSecs":1},"count":2},{"kind":{"type":"truncated"}}]}"#,
        )
        .unwrap();
        assert_eq!(parsed.rules.len(), 2);
        assert_eq!(parsed.latency_ms, 5);
    }

    #[test]
    fn a_rule_waits_for_its_first_requests_to_pass() {
        let mut f: Faults = serde_json::from_str(
            r#"{"rules":[{"study":"DEMO","kind":{"type":"malformed"},"after":2,"count":1}]}"#,
        )
        .unwrap();
        assert_eq!(
            f.rules[0],
            FaultRule::any(FaultKind::Malformed)
                .study("DEMO")
                .after(2)
                .times(1)
        );
        assert!(f.take_rule(Some("DEMO"), "records", "GET").is_none());
        assert!(f.take_rule(Some("OTHER"), "records", "GET").is_none());
        assert!(f.take_rule(Some("DEMO"), "records", "GET").is_none());
        assert_eq!(
            f.take_rule(Some("DEMO"), "records", "GET"),
            Some(FaultKind::Malformed)
        );
        assert!(f.take_rule(Some("DEMO"), "records", "GET").is_none());
    }
}
