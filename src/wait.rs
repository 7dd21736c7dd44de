//! The one way the CLI waits for something outside it (an AWS resource, a Kubernetes object, a
//! load balancer, a first SQL query): check now, then every `every`, until done, failed, or
//! `timeout` has passed; each caller says what giving up means with the last progress it saw.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// What one check found.
#[derive(Debug, PartialEq, Eq)]
pub enum Check<T, P> {
    Done(T),
    /// Not yet; how far it got.
    Waiting(P),
}

/// How the wait ended, short of an error.
#[derive(Debug, PartialEq, Eq)]
pub enum Waited<T, P> {
    Done(T),
    /// `timeout` passed; the last progress.
    TimedOut(P),
}

/// Calls `check` now and every `every` until it is done or fails, or `timeout` has passed since
/// the start; `waiting` hears each progress short of done, with the time waited so far.
pub async fn poll<T, P, E, Fut>(
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Fut,
    mut waiting: impl FnMut(&P, Duration),
) -> Result<Waited<T, P>, E>
where
    Fut: Future<Output = Result<Check<T, P>, E>>,
{
    let started = Instant::now();
    loop {
        match check().await? {
            Check::Done(done) => return Ok(Waited::Done(done)),
            Check::Waiting(progress) => {
                if started.elapsed() >= timeout {
                    return Ok(Waited::TimedOut(progress));
                }
                waiting(&progress, started.elapsed());
            }
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn polls_until_done_then_stops() {
        let checks = AtomicU32::new(0);
        let mut heard = Vec::new();
        let waited: Result<_, ()> = poll(
            Duration::from_secs(60),
            Duration::from_secs(5),
            || async {
                let n = checks.fetch_add(1, Ordering::SeqCst) + 1;
                Ok(if n == 3 { Check::Done("ready") } else { Check::Waiting(n) })
            },
            |progress, elapsed| heard.push((*progress, elapsed.as_secs())),
        )
        .await;
        assert_eq!(waited, Ok(Waited::Done("ready")));
        assert_eq!(heard, [(1, 0), (2, 5)]);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_with_the_last_progress_or_passes_an_error_on() {
        let checks = AtomicU32::new(0);
        let waited: Result<Waited<(), u32>, ()> = poll(
            Duration::from_secs(12),
            Duration::from_secs(5),
            || async { Ok(Check::Waiting(checks.fetch_add(1, Ordering::SeqCst))) },
            |_, _| {},
        )
        .await;
        assert_eq!(waited, Ok(Waited::TimedOut(3)), "checked at 0, 5, 10 and 15 s");
        let failed: Result<Waited<(), ()>, &str> =
            poll(Duration::from_secs(12), Duration::from_secs(5), || async { Err("gone") }, |_, _| {}).await;
        assert_eq!(failed, Err("gone"));
    }
}
