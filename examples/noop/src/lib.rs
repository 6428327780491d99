//! A job that does nothing: what `mayfly bench jobs` drains, so the figure is
//! the cost of the queue and a fresh instance per job, not of the work.

use mayfly_guest::job::{Job, JobError};

#[mayfly_guest::job_handler]
fn run(_job: Job) -> Result<(), JobError> {
    Ok(())
}
