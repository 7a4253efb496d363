//! The store's handles and its pruning by horizon answer exactly as recording by id and pruning
//! every series at every call did.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Rng, at};
use crate::{MetricId, MetricSeries, MetricStore, Period, RecordError, SeriesConfig};

/// The store as it was: series by id, each created by its first sample, every series pruned at
/// every call and dropped once empty.
#[derive(Default)]
struct Reference {
    series: BTreeMap<MetricId, MetricSeries>,
}

impl Reference {
    fn record_n(
        &mut self,
        config: SeriesConfig,
        id: &MetricId,
        at: model::Timestamp,
        value: f64,
        n: u64,
    ) {
        let series =
            self.series.entry(id.clone()).or_insert_with(|| MetricSeries::new(id.clone(), config));
        let _ = series.record_n(at, value, n);
    }

    fn prune(&mut self, now: model::Timestamp) {
        self.series.retain(|_, s| {
            s.prune(now);
            !s.is_empty()
        });
    }
}

fn assert_same(store: &MetricStore, reference: &Reference, step: usize) {
    let ids: Vec<&MetricId> = store.ids().collect();
    let expected: Vec<&MetricId> = reference.series.keys().collect();
    assert_eq!(ids, expected, "step {step}");
    for (id, want) in &reference.series {
        let got = store.series(id).unwrap();
        assert_eq!(got.len(), want.len(), "step {step}: {id}");
        let (from, to) = (at(-100.0), at(10_000.0));
        assert_eq!(
            got.stats(Period::ONE_SECOND, from, to).unwrap(),
            want.stats(Period::ONE_SECOND, from, to).unwrap(),
            "step {step}: {id}"
        );
    }
}

#[test]
fn recording_through_handles_and_pruning_by_horizon_answer_as_recording_by_id_and_pruning_always() {
    let config = SeriesConfig::new(Period::ONE_SECOND, Duration::from_secs(10)).unwrap();
    let ids: Vec<MetricId> = (0..6)
        .map(|i| {
            MetricId::new(["RequestCount", "TargetResponseTime"][i % 2])
                .with("target_group", format!("tg-{}", i / 2))
        })
        .collect();
    let mut store = MetricStore::new(config);
    let mut reference = Reference::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut handles = BTreeMap::new();
    let mut now_ms = 0u64;
    for step in 0..3000 {
        // Mostly polls a quarter of a second apart, sometimes a stall that ages series out.
        now_ms += match rng.below(20) {
            0 => 12_000,
            1 => 0,
            _ => rng.below(600),
        };
        let now = at(now_ms as f64 / 1000.0);
        for _ in 0..rng.below(5) {
            let id = &ids[rng.below(ids.len() as u64) as usize];
            // Late samples (inside, at the edge of and beyond the retention), zeros, zero counts, repeats.
            let back = [0, 0, 0, 700, 9_000 + rng.below(2_500)][rng.below(5) as usize];
            let at_ms = now_ms.saturating_sub(back);
            let when = at(at_ms as f64 / 1000.0);
            let value = [0.0, 0.0, 1.0, 0.25, 3.0][rng.below(5) as usize];
            let n = rng.below(4);
            reference.record_n(config, id, when, value, n);
            let by_handle = handles.get(id).copied().filter(|_| rng.below(4) != 0);
            let recorded = match by_handle {
                Some(handle) => match store.record_n_into(handle, when, value, n) {
                    Err(RecordError::Forgotten) => store.record_n(id, when, value, n),
                    other => other,
                },
                None => store.record_n(id, when, value, n),
            };
            let _ = recorded;
            if let Some(handle) = store.handle(id) {
                handles.insert(id.clone(), handle);
            }
        }
        if rng.below(50) == 0 {
            let id = &ids[rng.below(ids.len() as u64) as usize];
            assert_eq!(
                store.remove(id).is_some(),
                reference.series.remove(id).is_some(),
                "step {step}"
            );
        }
        store.prune(now);
        reference.prune(now);
        assert_same(&store, &reference, step);
    }
}

#[test]
fn a_handle_to_a_forgotten_series_records_nothing_into_the_one_that_took_its_place() {
    let mut store = MetricStore::default();
    let a = MetricId::new("RequestCount").with("target_group", "web-blue");
    let b = MetricId::new("RequestCount").with("target_group", "web-green");
    store.record(&a, at(0.0), 1.0).unwrap();
    let old = store.handle(&a).unwrap();
    store.remove(&a);
    // The forgotten series' slot is reused by the next new series.
    store.record(&b, at(0.0), 2.0).unwrap();
    store.record(&a, at(0.0), 3.0).unwrap();
    let err = store.record_n_into(old, at(0.5), 100.0, 1).unwrap_err();
    assert_eq!(err, RecordError::Forgotten);
    assert_eq!(
        err.to_string(),
        "the series this handle named was forgotten; record by the metric's id"
    );
    let sums = |store: &MetricStore, id: &MetricId| {
        let stats = store.series(id).unwrap().stats(Period::ONE_SECOND, at(0.0), at(1.0)).unwrap();
        stats.iter().map(|s| s.sum()).collect::<Vec<_>>()
    };
    assert_eq!((sums(&store, &a), sums(&store, &b)), (vec![3.0], vec![2.0]));
    let fresh = store.handle(&a).unwrap();
    assert_ne!(fresh, old);
    store.record_n_into(fresh, at(0.5), 4.0, 2).unwrap();
    assert_eq!(sums(&store, &a), vec![11.0]);
}

#[test]
fn a_zero_count_makes_no_series() {
    let mut store = MetricStore::default();
    let id = MetricId::new("RequestCount").with("target_group", "web");
    store.record_n(&id, at(0.0), 1.0, 0).unwrap();
    assert_eq!(store.ids().count(), 0);
    assert!(store.handle(&id).is_none());
}
