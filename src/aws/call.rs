//! One shape for every failed AWS call, classified by its error code, plus the retry and wait
//! loops the phases share.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::wait;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// A failed call: which operation, on which resource, and what AWS said.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} {resource}: {detail}")]
pub struct CallError {
    pub operation: &'static str,
    pub resource: String,
    /// The AWS error code (`InvalidVpcID.NotFound`, `NoSuchEntity`, …), when AWS sent one.
    pub code: Option<String>,
    /// The HTTP status, when a response arrived.
    pub status: Option<u16>,
    pub detail: String,
}

impl CallError {
    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    pub fn is_any(&self, codes: &[&str]) -> bool {
        codes.iter().any(|c| self.is(c))
    }

    /// Not found, by any service's spelling. An operation the endpoint does not implement
    /// (an emulator's 404 page, no error code) is not "not found".
    pub fn is_not_found(&self) -> bool {
        self.code.as_deref().is_some_and(|c| {
            c.ends_with(".NotFound")
                || matches!(c, "NoSuchEntity" | "NoSuchBucket" | "NotFound" | "ResourceNotFoundException" | "RepositoryNotFoundException")
        })
    }

    /// No response at all, or no credentials: the endpoint is unreachable or unusable.
    pub fn is_unreachable(&self) -> bool {
        self.status.is_none()
    }
}

/// `map_err` adapter: `.send().await.map_err(call("CreateVpc", &name))?`.
/// The id a create call answered with; none (or an empty one) is an error naming the call,
/// never a resource recorded as `""`. What was created carries our tags, so the next run's
/// look-up by tag finds and adopts it.
pub fn created_id(operation: &'static str, resource: impl std::fmt::Display, id: Option<&str>) -> Result<String, CallError> {
    match id.filter(|id| !id.is_empty()) {
        Some(id) => Ok(id.to_string()),
        None => Err(CallError {
            operation,
            resource: resource.to_string(),
            code: None,
            status: None,
            detail: "answered without the new resource's id; run the command again: it finds what was created by its tags".into(),
        }),
    }
}

pub fn call<E>(operation: &'static str, resource: impl std::fmt::Display) -> impl FnOnce(SdkError<E, HttpResponse>) -> CallError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let resource = resource.to_string();
    move |err| {
        let code = err.code().map(str::to_string);
        let status = err.raw_response().map(|r| r.status().as_u16());
        let detail = match (&code, err.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.clone(),
            (None, _) => match status {
                Some(404) => "the endpoint does not implement this operation (HTTP 404 without an AWS error)".to_string(),
                _ => DisplayErrorContext(&err).to_string(),
            },
        };
        CallError { operation, resource, code, status, detail }
    }
}

/// Turns "not found" into `None`.
pub fn found<T>(result: Result<T, CallError>) -> Result<Option<T>, CallError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Exponential backoff from 1 s, capped at 15 s, for at most `budget`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub budget: Duration,
}

impl Backoff {
    /// IAM is eventually consistent: a new role can take a minute or two to be assumable.
    pub const IAM_PROPAGATION: Backoff = Backoff { budget: Duration::from_secs(150) };
    /// A dependency (ENI, mapped address) usually goes within minutes after its owner.
    pub const DEPENDENCY: Backoff = Backoff { budget: Duration::from_secs(600) };

    fn delays(self) -> impl Iterator<Item = Duration> {
        (0u32..).map(|attempt| Duration::from_secs(1u64 << attempt.min(4)).min(Duration::from_secs(15)))
    }

    /// Runs `call` until it succeeds, fails with an error `retryable` rejects, or the budget is
    /// spent (then the last error is returned).
    pub async fn retry<T, F, Fut>(self, retryable: impl Fn(&CallError) -> bool, mut call: F) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let started = Instant::now();
        let mut delays = self.delays();
        loop {
            match call().await {
                Err(e) if retryable(&e) && started.elapsed() < self.budget => {
                    tokio::time::sleep(delays.next().expect("endless")).await;
                }
                Err(mut e) if retryable(&e) => {
                    e.detail = format!(
                        "{} (still so after retrying for {} s; AWS may need longer: run the same command again to resume)",
                        e.detail,
                        self.budget.as_secs()
                    );
                    return Err(e);
                }
                other => return other,
            }
        }
    }
}

/// The error codes AWS uses while something else still depends on a resource.
pub fn is_dependency(e: &CallError) -> bool {
    e.is_any(&["DependencyViolation", "DeleteConflict", "ResourceInUseException", "InvalidIPAddress.InUse"])
}

/// An IAM role that was just created, not yet visible to EKS or EC2; or a trust policy naming a
/// role or OIDC provider IAM itself does not see yet ("Invalid principal in policy").
pub fn is_iam_propagation(e: &CallError) -> bool {
    (e.is("InvalidParameterException") && (e.detail.contains("could not be assumed") || e.detail.contains("Role with arn")))
        || (e.is("MalformedPolicyDocument") && e.detail.contains("Invalid principal"))
}

/// Polls `check` every `every` until it returns `Some`, reporting elapsed seconds to `tick`;
/// gives up after `timeout` with an error naming what it waited for.
pub async fn wait_for<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut tick: impl FnMut(u64),
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let check = || {
        let checked = check();
        async move { Ok::<_, anyhow::Error>(checked.await?.map_or(wait::Check::Waiting(()), wait::Check::Done)) }
    };
    match wait::poll(timeout, every, check, |(), elapsed| tick(elapsed.as_secs())).await? {
        wait::Waited::Done(done) => Ok(done),
        wait::Waited::TimedOut(()) => anyhow::bail!(
            "gave up waiting for {what} after {}s; it may still finish: run the same command again to resume",
            timeout.as_secs()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: &str, detail: &str) -> CallError {
        CallError {
            operation: "CreateRole",
            resource: "neon-pageserver".into(),
            code: Some(code.into()),
            status: Some(400),
            detail: detail.into(),
        }
    }

    #[test]
    fn iam_propagation_errors() {
        assert!(is_iam_propagation(&error("InvalidParameterException", "Role with arn: arn:aws:iam::1:role/x, could not be assumed")));
        assert!(is_iam_propagation(&error("MalformedPolicyDocument", "Invalid principal in policy: \"Federated\":\"arn:…\"")));
        assert!(!is_iam_propagation(&error("MalformedPolicyDocument", "Syntax errors in policy.")));
        assert!(!is_iam_propagation(&error("AccessDenied", "not authorized")));
    }

    /// Retries stop at the budget, with an error that says so and what to do.
    #[tokio::test(start_paused = true)]
    async fn propagation_retries_are_bounded_with_a_clear_final_error() {
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let result: Result<(), CallError> = Backoff::IAM_PROPAGATION
            .retry(is_iam_propagation, || async {
                attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Err(error("MalformedPolicyDocument", "Invalid principal in policy"))
            })
            .await;
        let e = result.unwrap_err();
        assert!(e.detail.contains("still so after retrying for 150 s") && e.detail.contains("run the same command again"), "{e}");
        assert!(started.elapsed() >= Duration::from_secs(150) && started.elapsed() < Duration::from_secs(170));
        assert!(attempts.load(std::sync::atomic::Ordering::SeqCst) > 5);
        let once = std::sync::atomic::AtomicU32::new(0);
        let other: Result<(), CallError> = Backoff::IAM_PROPAGATION
            .retry(is_iam_propagation, || async {
                once.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Err(error("AccessDenied", "not authorized"))
            })
            .await;
        assert_eq!((other.unwrap_err().detail.as_str(), once.load(std::sync::atomic::Ordering::SeqCst)), ("not authorized", 1));
    }

    #[test]
    fn a_create_without_an_id_is_an_error_naming_the_call() {
        assert_eq!(created_id("CreateVpc", "10.42.0.0/16", Some("vpc-1")).unwrap(), "vpc-1");
        for missing in [None, Some("")] {
            let err = created_id("CreateVpc", "10.42.0.0/16", missing).unwrap_err();
            assert_eq!(err.operation, "CreateVpc");
            let text = err.to_string();
            assert!(
                text.starts_with("CreateVpc 10.42.0.0/16: answered without the new resource's id") && text.contains("by its tags"),
                "{text}"
            );
        }
    }

    fn err(code: Option<&str>, status: Option<u16>) -> CallError {
        CallError { operation: "X", resource: "r".into(), code: code.map(Into::into), status, detail: "d".into() }
    }

    #[test]
    fn classification() {
        assert!(err(Some("InvalidVpcID.NotFound"), Some(400)).is_not_found());
        assert!(err(Some("NoSuchEntity"), Some(404)).is_not_found());
        assert!(!err(None, Some(404)).is_not_found(), "an unimplemented operation is not a missing resource");
        assert!(err(None, None).is_unreachable());
        assert!(is_dependency(&err(Some("DependencyViolation"), Some(400))));
        assert!(!is_dependency(&err(Some("InvalidVpcID.NotFound"), Some(400))));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_stops_on_success_and_on_other_errors() {
        let mut attempts = 0;
        let out = Backoff::DEPENDENCY
            .retry(is_dependency, || {
                attempts += 1;
                let n = attempts;
                async move { if n < 3 { Err(err(Some("DependencyViolation"), Some(400))) } else { Ok(n) } }
            })
            .await;
        assert_eq!(out.unwrap(), 3);
        let out: Result<(), _> = Backoff::DEPENDENCY.retry(is_dependency, || async { Err(err(Some("Other"), Some(400))) }).await;
        assert!(out.unwrap_err().is("Other"));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_gives_up_after_the_budget() {
        let backoff = Backoff { budget: Duration::from_secs(30) };
        let mut attempts = 0;
        let out: Result<(), _> = backoff
            .retry(is_dependency, || {
                attempts += 1;
                async { Err(err(Some("DependencyViolation"), Some(400))) }
            })
            .await;
        assert!(out.is_err());
        assert!((3..10).contains(&attempts), "{attempts}");
    }
}
