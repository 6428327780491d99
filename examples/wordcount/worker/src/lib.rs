//! Counts the words of a text and stores the count under the job's id.
//! Storing by id makes the job idempotent: a second delivery writes the same.

use mayfly_guest::job::{Job, JobError};
use mayfly_guest::kv::Store;

#[mayfly_guest::job_handler]
fn count(job: Job) -> Result<(), JobError> {
    let text = job
        .payload_text()
        .map_err(|_| JobError::fail("the text is not UTF-8"))?;
    let words = text.split_whitespace().count();
    Store::open("wordcount")
        .and_then(|store| store.set(job.id(), words.to_string()))
        .map_err(|err| JobError::retry(format!("cannot store the count: {err}")))?;
    println!("job {} counted {words} words", job.id());
    Ok(())
}
