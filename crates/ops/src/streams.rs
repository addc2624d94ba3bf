//! Work for the stages on AWS, put on their streams instead of run here:
//! each event in the envelope the EventBridge rules forward, keyed by its
//! item's id as the rules partition, at most a given rate, with a progress
//! bar. `reanalyze --stream` and `reembed --stream` use it.

use domain::events::PipelineEvent;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::kinesis::{PutError, Record, StreamWriter};
use crate::throttle::Throttle;

/// Records put in one call (Kinesis takes up to 500).
const RECORDS_A_CALL: usize = 100;

/// The record a rule would put on a stage's stream for `event` of `item`.
pub fn event_record(item: Uuid, event: &PipelineEvent) -> Record {
    let detail: Value = serde_json::from_str(&event.detail_json()).expect("an event's detail is JSON");
    let envelope = json!({
        "version": "0",
        "id": Uuid::new_v4(),
        "detail-type": event.detail_type(),
        "source": event.source(),
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "resources": [],
        "detail": detail,
    });
    Record::new(&item.to_string(), serde_json::to_vec(&envelope).expect("JSON values serialise"))
}

/// Puts the events on the writer's stream, at most `rate` a second;
/// answers how many were put.
pub async fn put_events(writer: &StreamWriter, events: Vec<(Uuid, PipelineEvent)>, rate: f64) -> Result<u64, PutError> {
    let progress = ProgressBar::new(events.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} ETA {eta}")
            .expect("a valid template"),
    );
    let mut throttle = Throttle::new(rate);
    let mut put = 0;
    for chunk in events.chunks(RECORDS_A_CALL) {
        throttle.admit(chunk.len() as u64).await;
        let records: Vec<Record> = chunk.iter().map(|(item, event)| event_record(*item, event)).collect();
        writer.put_all(&records).await?;
        put += chunk.len() as u64;
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    Ok(put)
}

#[cfg(test)]
mod tests {
    use aws::lambda::EventInput;
    use domain::events::AnalysisComplete;

    use super::*;

    #[test]
    fn a_record_is_the_rules_envelope_keyed_by_the_item() {
        let item = Uuid::now_v7();
        let event = AnalysisComplete {
            item_id: "cat".into(),
            item_uuid: Some(item),
            analysis_id: "a".into(),
            user_id: "u".into(),
            reembed_model: Some("voyage-4".into()),
        };
        let record = event_record(item, &PipelineEvent::AnalysisComplete(event.clone()));
        assert_eq!(record.partition_key, item.to_string());
        let read = AnalysisComplete::from_record(&record.data).unwrap();
        assert_eq!(read, vec![event]);
    }
}
