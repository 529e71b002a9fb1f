//! A run's instances over time, for the run page's timeline. Small runs get a lane per
//! instance (its queued wait, then every attempt, so retries show); large ones a lane per task
//! counting the attempts running in each of [`BUCKETS`] intervals, counted by the database,
//! so 10,000 instances cost the page a few hundred rows, not 20,000.
use crate::store::Db;
use crate::store::StoreResult;
use crate::store::engine::{AttemptBucket, AttemptSpan, InstanceSpan};
use app::model::{RunTimeline, TIMELINE_LANES_MAX, TimelineLane, TimelineSegment};
use std::collections::HashMap;

pub const BUCKETS: i64 = 80;

/// Per interval: attempts running in it, and attempts that failed in it.
type BucketCounts = (Vec<i64>, Vec<i64>);

/// The timeline of a run spanning `start..end` with `instances` live instances; `tasks` in
/// the pipeline's order names the lanes of an aggregated timeline.
pub async fn load(
    db: &Db,
    run_id: i64,
    (start, end): (i64, i64),
    instances: i64,
    tasks: &[String],
) -> StoreResult<RunTimeline> {
    let end = end.max(start + 1);
    if instances <= TIMELINE_LANES_MAX as i64 {
        let spans = db.run_instance_spans(run_id).await?;
        let attempts = db.run_attempt_spans(run_id).await?;
        return Ok(per_instance(start, end, &spans, &attempts));
    }
    let width = bucket_width(start, end);
    let buckets = db.run_attempt_buckets(run_id, start, width, end).await?;
    Ok(per_task(start, end, tasks, &buckets))
}

fn bucket_width(start: i64, end: i64) -> i64 {
    ((end - start) + BUCKETS - 1) / BUCKETS
}

fn per_instance(
    start: i64,
    end: i64,
    instances: &[InstanceSpan],
    attempts: &[AttemptSpan],
) -> RunTimeline {
    let mut by_instance: HashMap<i64, Vec<&AttemptSpan>> = HashMap::new();
    for a in attempts {
        by_instance.entry(a.ti_id).or_default().push(a);
    }
    let lanes = instances
        .iter()
        .map(|ti| {
            lane(
                ti,
                by_instance.get(&ti.id).map_or(&[][..], Vec::as_slice),
                end,
            )
        })
        .collect();
    RunTimeline {
        start,
        end,
        aggregated: false,
        lanes,
    }
}

fn lane(ti: &InstanceSpan, attempts: &[&AttemptSpan], now: i64) -> TimelineLane {
    let label = match (&ti.map_key, ti.map_index) {
        (Some(key), _) => key.clone(),
        (None, i) if i >= 0 => format!("{}[{i}]", ti.task_id),
        (None, _) => ti.task_id.clone(),
    };
    let mut segments = Vec::new();
    if let Some(queued) = ti.queued_at {
        let until = attempts
            .first()
            .map(|a| a.started_at)
            .or(ti.ended_at)
            .unwrap_or(now);
        if until > queued {
            segments.push(TimelineSegment {
                from: queued,
                to: until,
                state: "queued".into(),
                try_number: 1,
                count: 1,
            });
        }
    }
    for a in attempts {
        segments.push(TimelineSegment {
            from: a.started_at,
            to: a.ended_at.unwrap_or(now).max(a.started_at),
            state: a.state.clone(),
            try_number: a.try_number,
            count: 1,
        });
    }
    TimelineLane {
        label,
        ti_id: Some(ti.id),
        segments,
    }
}

/// Per task: attempts running in each interval; a second lane counts retries (try > 1).
fn per_task(start: i64, end: i64, tasks: &[String], buckets: &[AttemptBucket]) -> RunTimeline {
    let width = bucket_width(start, end).max(1);
    let clamp = |b: i64| b.clamp(0, BUCKETS - 1) as usize;
    let mut counts: HashMap<(&str, bool), BucketCounts> = HashMap::new();
    for row in buckets {
        let lane = counts
            .entry((row.task_id.as_str(), row.retry != 0))
            .or_insert_with(|| (vec![0; BUCKETS as usize], vec![0; BUCKETS as usize]));
        for b in clamp(row.first)..=clamp(row.last.max(row.first)) {
            lane.0[b] += row.n;
        }
        if row.failed != 0 {
            lane.1[clamp(row.last)] += row.n;
        }
    }
    let mut lanes = Vec::new();
    for task in tasks {
        for retries in [false, true] {
            let Some((running, failed)) = counts.get(&(task.as_str(), retries)) else {
                continue;
            };
            let segments = (0..BUCKETS)
                .filter(|b| running[*b as usize] > 0)
                .map(|b| TimelineSegment {
                    from: start + b * width,
                    to: (start + (b + 1) * width).min(end),
                    state: if failed[b as usize] > 0 {
                        "failed"
                    } else {
                        "running"
                    }
                    .into(),
                    try_number: i64::from(retries) + 1,
                    count: running[b as usize],
                })
                .collect();
            lanes.push(TimelineLane {
                label: if retries {
                    format!("{task} (retries)")
                } else {
                    task.clone()
                },
                ti_id: None,
                segments,
            });
        }
    }
    RunTimeline {
        start,
        end,
        aggregated: true,
        lanes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ti(id: i64, task: &str, key: Option<&str>, queued: i64) -> InstanceSpan {
        InstanceSpan {
            id,
            task_id: task.into(),
            map_index: id,
            map_key: key.map(str::to_string),
            state: "success".into(),
            queued_at: Some(queued),
            started_at: None,
            ended_at: None,
        }
    }

    fn attempt(ti_id: i64, try_number: i64, state: &str, from: i64, to: i64) -> AttemptSpan {
        AttemptSpan {
            ti_id,
            try_number,
            state: state.into(),
            started_at: from,
            ended_at: Some(to),
        }
    }

    #[test]
    fn a_small_run_shows_the_wait_and_every_attempt_of_each_instance() {
        let t = per_instance(
            0,
            100,
            &[ti(1, "export", Some("DEMO"), 0)],
            &[
                attempt(1, 1, "failed", 10, 30),
                attempt(1, 2, "success", 50, 90),
            ],
        );
        assert!(!t.aggregated);
        let lane = &t.lanes[0];
        assert_eq!((lane.label.as_str(), lane.ti_id), ("DEMO", Some(1)));
        let shown: Vec<(i64, i64, &str, i64)> = lane
            .segments
            .iter()
            .map(|s| (s.from, s.to, s.state.as_str(), s.try_number))
            .collect();
        assert_eq!(
            shown,
            [
                (0, 10, "queued", 1),
                (10, 30, "failed", 1),
                (50, 90, "success", 2)
            ]
        );
    }

    #[test]
    fn counted_intervals_become_one_lane_per_task_and_one_for_its_retries() {
        let row = |task: &str, retry, first, last, failed, n| AttemptBucket {
            task_id: task.into(),
            retry,
            first,
            last,
            failed,
            n,
        };
        let tasks = ["list".to_string(), "process".to_string()];
        let t = per_task(
            0,
            8_000,
            &tasks,
            &[
                row("process", 0, 0, 0, 0, 4_000),
                row("process", 0, 1, 2, 0, 6_000),
                row("process", 0, 2, 2, 1, 3),
                row("process", 1, 79, 200, 0, 1),
            ],
        );
        assert!(t.aggregated);
        let labels: Vec<&str> = t.lanes.iter().map(|l| l.label.as_str()).collect();
        assert_eq!(
            labels,
            ["process", "process (retries)"],
            "no attempts of list"
        );
        let main: Vec<(i64, i64, &str)> = t.lanes[0]
            .segments
            .iter()
            .map(|s| (s.from, s.count, s.state.as_str()))
            .collect();
        assert_eq!(
            main,
            [
                (0, 4_000, "running"),
                (100, 6_000, "running"),
                (200, 6_003, "failed")
            ]
        );
        // Past the end is clamped into the last interval.
        assert_eq!(t.lanes[1].segments.len(), 1);
        assert_eq!(t.lanes[1].segments[0].from, 7_900);
    }
}
