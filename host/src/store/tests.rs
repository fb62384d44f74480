use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use super::durability::{is_temp_name, GroupCommit, Syncer};
use super::*;

fn backend(dir: &Path) -> SledBackend {
    SledBackend::open(&dir.join("sled")).expect("open sled backend")
}

fn t(id: &str) -> Space {
    Space::tenant(id)
}

#[test]
fn rejects_values_over_64_kib() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path());
    let s = t("a");
    let max = vec![7u8; MAX_VALUE_BYTES];
    let over = vec![7u8; MAX_VALUE_BYTES + 1];

    b.put(&s, b"max", &max).expect("exactly 64 KiB is accepted");
    let too_large = |r: Result<(), StoreError>| matches!(r, Err(StoreError::ValueTooLarge { size, max }) if size == MAX_VALUE_BYTES + 1 && max == MAX_VALUE_BYTES);
    assert!(too_large(b.put(&s, b"over", &over)));
    assert!(too_large(
        b.compare_and_swap(&s, b"over", None, Some(&over)).map(drop)
    ));
    assert!(too_large(
        b.apply_batch(&s, &[BatchOp::put(*b"over", over.clone())])
    ));
    assert!(too_large(
        b.update(&s, b"max", &mut |_| Some(over.clone())).map(drop)
    ));
    let dynb: &dyn Backend = &b;
    let big_json = "x".repeat(MAX_VALUE_BYTES);
    assert!(matches!(
        dynb.put_json(&s, b"json", &big_json),
        Err(StoreError::ValueTooLarge { .. })
    ));

    assert_eq!(b.get(&s, b"over").unwrap(), None);
    assert_eq!(
        b.get(&s, b"max").unwrap(),
        Some(max),
        "failed update left the old value"
    );
    assert!(matches!(
        b.put(&s, &vec![0u8; MAX_KEY_BYTES + 1], b"v"),
        Err(StoreError::KeyTooLarge { .. })
    ));
}

#[test]
fn tenants_do_not_see_each_others_keys() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path());
    b.put(&t("alice"), b"k", b"alice's").unwrap();
    b.put(&t("bob"), b"k", b"bob's").unwrap();
    b.put(&Space::META, b"k", b"global").unwrap();

    assert_eq!(
        b.get(&t("alice"), b"k").unwrap().as_deref(),
        Some(&b"alice's"[..])
    );
    assert_eq!(
        b.get(&t("bob"), b"k").unwrap().as_deref(),
        Some(&b"bob's"[..])
    );
    assert_eq!(
        b.get(&Space::META, b"k").unwrap().as_deref(),
        Some(&b"global"[..])
    );
    assert_eq!(b.get(&t("carol"), b"k").unwrap(), None);
    // A tenant id that looks like a prefix or a path does not reach others.
    assert_eq!(b.get(&t("alic"), b"k").unwrap(), None);
    assert_eq!(
        b.scan_prefix(&t("alice"), b"", usize::MAX).unwrap().len(),
        1
    );

    b.delete(&t("alice"), b"k").unwrap();
    assert_eq!(
        b.get(&t("bob"), b"k").unwrap().as_deref(),
        Some(&b"bob's"[..])
    );
}

#[test]
fn space_names_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path());
    for bad in [
        Space::tenant(""),
        Space::tenant("x".repeat(MAX_TENANT_ID_BYTES + 1)),
        Space::global(""),
        Space::global("t/alice"),
        Space::global("__sled__default"),
    ] {
        assert!(
            matches!(b.put(&bad, b"k", b"v"), Err(StoreError::InvalidSpace(_))),
            "{bad:?}"
        );
        assert!(
            matches!(b.get(&bad, b"k"), Err(StoreError::InvalidSpace(_))),
            "{bad:?}"
        );
    }
    assert_eq!(Space::tenant("alice").tree_name().unwrap(), b"t/alice");
    assert_eq!(Space::TENANTS.tree_name().unwrap(), b"tenants");
}

#[test]
fn scans_are_ordered_limited_and_prefix_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path());
    let s = t("a");
    for i in [3u64, 1, 4, 15, 9, 2, 6] {
        b.put(
            &s,
            &[b"ev/".as_slice(), &i.to_be_bytes()].concat(),
            &i.to_le_bytes(),
        )
        .unwrap();
    }
    b.put(&s, b"eu", b"before").unwrap();
    b.put(&s, b"ew", b"after").unwrap();
    let ids = |v: Vec<Entry>| {
        v.into_iter()
            .map(|(k, _)| u64::from_be_bytes(k[3..].try_into().unwrap()))
            .collect::<Vec<_>>()
    };

    assert_eq!(
        ids(b.scan_prefix(&s, b"ev/", usize::MAX).unwrap()),
        [1, 2, 3, 4, 6, 9, 15]
    );
    assert_eq!(ids(b.scan_prefix(&s, b"ev/", 3).unwrap()), [1, 2, 3]);
    assert_eq!(ids(b.scan_prefix_rev(&s, b"ev/", 3).unwrap()), [15, 9, 6]);
    assert!(b.scan_prefix(&s, b"ev/", 0).unwrap().is_empty());
    assert_eq!(b.scan_prefix(&s, b"", usize::MAX).unwrap().len(), 9);
    let key = |i: u64| [b"ev/".as_slice(), &i.to_be_bytes()].concat();
    assert_eq!(
        ids(b.scan_range(&s, &key(2), &key(9), usize::MAX).unwrap()),
        [2, 3, 4, 6],
        "the end is excluded"
    );
    assert_eq!(ids(b.scan_range(&s, &key(0), &key(9), 2).unwrap()), [1, 2]);
    assert!(b.scan_range(&s, &key(9), &key(2), 10).unwrap().is_empty());
}

#[test]
fn compare_and_swap_only_swaps_on_a_match() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path());
    let s = t("a");
    assert!(
        b.compare_and_swap(&s, b"k", None, Some(b"1")).unwrap(),
        "create if absent"
    );
    assert!(
        !b.compare_and_swap(&s, b"k", None, Some(b"2")).unwrap(),
        "already present"
    );
    assert!(
        !b.compare_and_swap(&s, b"k", Some(b"0"), Some(b"2"))
            .unwrap(),
        "wrong old value"
    );
    assert!(b
        .compare_and_swap(&s, b"k", Some(b"1"), Some(b"2"))
        .unwrap());
    assert_eq!(b.get(&s, b"k").unwrap().as_deref(), Some(&b"2"[..]));
    assert!(
        b.compare_and_swap(&s, b"k", Some(b"2"), None).unwrap(),
        "delete on match"
    );
    assert_eq!(b.get(&s, b"k").unwrap(), None);
}

#[test]
fn update_is_atomic_under_contention() {
    let dir = tempfile::tempdir().unwrap();
    let b = Arc::new(backend(dir.path()));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let b = Arc::clone(&b);
            std::thread::spawn(move || {
                for _ in 0..200 {
                    b.update(&t("a"), b"counter", &mut |old| {
                        let n = old.map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap()));
                        Some((n + 1).to_be_bytes().to_vec())
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|h| h.join().unwrap());
    assert_eq!(
        b.get(&t("a"), b"counter").unwrap(),
        Some(1600u64.to_be_bytes().to_vec())
    );
    assert_eq!(
        b.update(&t("a"), b"counter", &mut |_| None).unwrap(),
        None,
        "update can delete"
    );
    assert_eq!(b.get(&t("a"), b"counter").unwrap(), None);
}

#[test]
fn apply_batch_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path());
    let s = t("a");
    b.put(&s, b"gone", b"x").unwrap();
    b.apply_batch(
        &s,
        &[
            BatchOp::put(*b"k1", *b"v1"),
            BatchOp::put(*b"k2", *b"v2"),
            BatchOp::delete(*b"gone"),
        ],
    )
    .unwrap();
    assert_eq!(
        b.scan_prefix(&s, b"", usize::MAX).unwrap(),
        vec![
            (b"k1".to_vec(), b"v1".to_vec()),
            (b"k2".to_vec(), b"v2".to_vec())
        ]
    );

    let bad = [
        BatchOp::put(*b"k3", *b"v3"),
        BatchOp::put(*b"k4", vec![0; MAX_VALUE_BYTES + 1]),
    ];
    assert!(matches!(
        b.apply_batch(&s, &bad),
        Err(StoreError::ValueTooLarge { .. })
    ));
    assert_eq!(
        b.get(&s, b"k3").unwrap(),
        None,
        "no part of a rejected batch is written"
    );
}

#[test]
fn drop_space_erases_only_that_tenant_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let b = backend(dir.path());
        for i in 0..100u32 {
            b.put(&t("gone"), &i.to_be_bytes(), b"secret").unwrap();
            b.put(&t("kept"), &i.to_be_bytes(), b"mine").unwrap();
        }
        b.commit_blocking().unwrap();
        b.drop_space(&t("gone")).unwrap();
        assert!(b
            .scan_prefix(&t("gone"), b"", usize::MAX)
            .unwrap()
            .is_empty());
        b.commit_blocking().unwrap();
    }
    let b = backend(dir.path());
    assert!(b
        .scan_prefix(&t("gone"), b"", usize::MAX)
        .unwrap()
        .is_empty());
    assert_eq!(
        b.scan_prefix(&t("kept"), b"", usize::MAX).unwrap().len(),
        100
    );
    b.drop_space(&t("never-existed")).unwrap();
    b.put(&t("gone"), b"new", b"fresh").unwrap();
    assert_eq!(b.scan_prefix(&t("gone"), b"", usize::MAX).unwrap().len(), 1);
}

#[test]
fn reads_and_deletes_do_not_create_spaces() {
    let dir = tempfile::tempdir().unwrap();
    {
        let b = backend(dir.path());
        b.put(&t("a"), b"k", b"v").unwrap();
        b.drop_space(&t("a")).unwrap();
        assert_eq!(b.get(&t("a"), b"k").unwrap(), None);
        assert_eq!(b.get(&t("ghost"), b"k").unwrap(), None);
        assert!(b.scan_prefix_rev(&t("ghost"), b"", 10).unwrap().is_empty());
        b.delete(&t("ghost"), b"k").unwrap();
        assert!(!b
            .compare_and_swap(&t("ghost"), b"k", Some(b"x"), None)
            .unwrap());
        assert!(b.compare_and_swap(&t("ghost"), b"k", None, None).unwrap());
        b.put(&Space::KEYS, b"k", b"v").unwrap();
        b.commit_blocking().unwrap();
        assert_eq!(
            b.tree_names(),
            [b"keys".to_vec()],
            "only stores create spaces"
        );
    }
    let b = backend(dir.path());
    assert_eq!(b.tree_names(), [b"keys".to_vec()]);
    assert_eq!(
        b.get(&Space::KEYS, b"k").unwrap().as_deref(),
        Some(&b"v"[..])
    );
}

#[test]
fn committed_writes_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let b = backend(dir.path());
        for i in 0..1000u32 {
            b.put(&t("a"), &i.to_be_bytes(), &i.to_le_bytes()).unwrap();
        }
        b.commit_blocking().unwrap();
    }
    let b = backend(dir.path());
    for i in 0..1000u32 {
        assert_eq!(
            b.get(&t("a"), &i.to_be_bytes()).unwrap(),
            Some(i.to_le_bytes().to_vec())
        );
    }
}

#[test]
fn large_values_that_spill_into_sled_blob_files_survive_reopen() {
    // Leaves holding several ~60 KiB values exceed sled's inline limit and
    // are written to `<sled>/blobs/`, which the commit must also fsync.
    let dir = tempfile::tempdir().unwrap();
    let value = |i: u8| vec![i; 60 * 1024];
    {
        let b = backend(dir.path());
        for i in 0..40u8 {
            b.put(&t("a"), &[i], &value(i)).unwrap();
            if i % 8 == 7 {
                b.commit_blocking().unwrap();
            }
        }
        b.commit_blocking().unwrap();
    }
    let b = backend(dir.path());
    for i in 0..40u8 {
        assert_eq!(b.get(&t("a"), &[i]).unwrap(), Some(value(i)), "value {i}");
    }
}

/// Group-commit rounds run so far: one sled flush and one fsync of the data file each.
fn rounds(b: &SledBackend) -> u64 {
    b.commit_stats()
        .expect("the sled backend reports its commits")
        .rounds
}

#[test]
fn commit_without_new_writes_does_not_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path());
    b.commit_blocking().unwrap();
    assert_eq!(rounds(&b), 0);
    b.put(&t("a"), b"k", b"v").unwrap();
    b.commit_blocking().unwrap();
    assert_eq!(rounds(&b), 1);
    b.get(&t("a"), b"k").unwrap();
    b.commit_blocking().unwrap();
    assert_eq!(rounds(&b), 1, "reads do not need a commit");
}

#[test]
fn concurrent_commits_share_one_fsync() {
    const N: usize = 32;
    let dir = tempfile::tempdir().unwrap();
    let b = Arc::new(backend(dir.path()));
    // Simulate a slow disk so the test does not depend on fsync latency.
    b.group_commit().set_test_delay(Duration::from_millis(50));
    let barrier = Arc::new(Barrier::new(N));
    let threads: Vec<_> = (0..N)
        .map(|i| {
            let (b, barrier) = (Arc::clone(&b), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                b.put(&t("a"), &i.to_be_bytes(), b"v").unwrap();
                b.commit_blocking().unwrap();
            })
        })
        .collect();
    threads.into_iter().for_each(|h| h.join().unwrap());
    let fsyncs = rounds(&b);
    assert!(
        fsyncs < N as u64 / 4,
        "{N} concurrent commits took {fsyncs} fsyncs"
    );
    assert!(fsyncs >= 1);
}

#[test]
fn commit_arriving_during_an_fsync_waits_for_the_next_round() {
    let dir = tempfile::tempdir().unwrap();
    let b = Arc::new(backend(dir.path()));
    b.group_commit().set_test_delay(Duration::from_millis(200));
    b.put(&t("a"), b"first", b"1").unwrap();
    let first = {
        let b = Arc::clone(&b);
        std::thread::spawn(move || b.commit_blocking().unwrap())
    };
    while b.group_commit().rounds_started() == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Round 1 has fixed its batch; this write and commit must not ride on it.
    b.put(&t("a"), b"second", b"2").unwrap();
    b.commit_blocking().unwrap();
    assert_eq!(
        rounds(&b),
        2,
        "released only by a round that began after the call"
    );
    first.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_facade_round_trips_json_and_commits() {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Rec {
        name: String,
        n: u32,
    }
    let dir = tempfile::tempdir().unwrap();
    let (db, _blobs) = open(dir.path()).unwrap();
    let s = t("a");
    db.put_json(
        &s,
        b"rec",
        &Rec {
            name: "x".into(),
            n: 3,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        db.get_json::<Rec>(&s, b"rec").await.unwrap(),
        Some(Rec {
            name: "x".into(),
            n: 3
        })
    );
    assert!(matches!(
        db.get_json::<u32>(&s, b"rec").await,
        Err(StoreError::Codec(_))
    ));
    assert_eq!(
        db.update(&s, b"n", |_| Some(b"1".to_vec()))
            .await
            .unwrap()
            .as_deref(),
        Some(&b"1"[..])
    );
    assert!(db
        .compare_and_swap(&s, b"n", Some(b"1"), Some(b"2"))
        .await
        .unwrap());
    db.apply_batch(&s, vec![BatchOp::put_json(*b"j", &5u8).unwrap()])
        .await
        .unwrap();
    assert_eq!(db.backend().get_json::<u8>(&s, b"j").unwrap(), Some(5));
    assert_eq!(db.scan_prefix_rev(&s, b"", 1).await.unwrap()[0].0, b"rec");
    assert!(matches!(
        db.put(&s, b"big", &vec![0; MAX_VALUE_BYTES + 1]).await,
        Err(StoreError::ValueTooLarge { .. })
    ));

    let tasks: Vec<_> = (0..200u32)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                db.put(&Space::tenant("b"), &i.to_be_bytes(), b"v")
                    .await
                    .unwrap();
                db.commit().await.unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        db.scan_prefix(&Space::tenant("b"), b"", usize::MAX)
            .await
            .unwrap()
            .len(),
        200
    );
    db.drop_space(&Space::tenant("b")).await.unwrap();
    db.commit().await.unwrap();
    assert_eq!(
        db.get(&Space::tenant("b"), &0u32.to_be_bytes())
            .await
            .unwrap(),
        None
    );
}

#[test]
fn second_open_of_the_same_directory_fails() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path()).unwrap();
    let t0 = std::time::Instant::now();
    assert!(open(dir.path()).is_err());
    assert!(
        t0.elapsed() >= super::sled_backend::LOCK_WAIT,
        "it waited for the owner first"
    );
}

#[test]
fn a_reopen_waits_for_the_previous_owner_to_close() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path()).unwrap();
    let closer = std::thread::spawn(move || {
        // An owner still finishing its work for a moment after the restart began.
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(first);
    });
    open(dir.path()).expect("the lock is free once the previous owner closes");
    closer.join().unwrap();
}

struct FailingSyncer {
    calls: u32,
}

impl Syncer for FailingSyncer {
    fn sync(&mut self) -> Result<std::time::Duration, StoreError> {
        self.calls += 1;
        if self.calls == 2 {
            Err(std::io::Error::other("simulated EIO").into())
        } else {
            Ok(std::time::Duration::ZERO)
        }
    }
}

#[test]
fn a_failed_fsync_fails_every_later_commit() {
    let gc = GroupCommit::start("test", FailingSyncer { calls: 0 }).unwrap();
    gc.note_write();
    gc.commit_blocking().expect("first round succeeds");
    gc.note_write();
    assert!(matches!(
        gc.commit_blocking(),
        Err(StoreError::CommitFailed(_))
    ));
    gc.note_write();
    assert!(
        matches!(gc.commit_blocking(), Err(StoreError::CommitFailed(_))),
        "poisoned"
    );
    assert_eq!(gc.rounds(), 2, "no fsync is retried after a failure");
}

/// Fails its second round as if `open` found no free descriptor.
struct NoDescriptorSyncer {
    calls: u32,
}

impl Syncer for NoDescriptorSyncer {
    fn sync(&mut self) -> Result<std::time::Duration, StoreError> {
        self.calls += 1;
        if self.calls == 2 {
            // EMFILE: too many open files.
            Err(std::io::Error::from_raw_os_error(24).into())
        } else {
            Ok(std::time::Duration::ZERO)
        }
    }
}

#[test]
fn running_out_of_descriptors_fails_that_commit_only() {
    let gc = GroupCommit::start("test", NoDescriptorSyncer { calls: 0 }).unwrap();
    gc.note_write();
    gc.commit_blocking().expect("first round succeeds");
    gc.note_write();
    assert!(
        gc.commit_blocking().is_err(),
        "nothing is acknowledged when the round could not run"
    );
    gc.note_write();
    gc.commit_blocking()
        .expect("descriptors are back: the next round commits");
    assert_eq!(gc.rounds(), 3);
}

#[test]
fn a_commit_round_of_slow_round_or_longer_is_counted_and_a_quick_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let b = SledBackend::open(dir.path()).unwrap();
    let sp = Space::tenant("t");
    b.put(&sp, b"k", b"1").unwrap();
    b.commit_blocking().unwrap();
    let quick = b.commit_stats().unwrap();
    assert_eq!((quick.rounds, quick.slow_rounds), (1, 0));
    assert!(quick.slowest_round_ms < SLOW_ROUND.as_secs_f64() * 1000.0);
    // A disk that stalls for longer than SLOW_ROUND.
    b.group_commit()
        .set_test_delay(SLOW_ROUND + Duration::from_millis(20));
    b.put(&sp, b"k", b"2").unwrap();
    b.commit_blocking().unwrap();
    let slow = b.commit_stats().unwrap();
    assert_eq!((slow.rounds, slow.slow_rounds), (2, 1));
    assert!(slow.slowest_round_ms >= 120.0, "{slow:?}");
}

#[test]
fn blob_put_is_content_addressed_and_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = BlobStore::open(&dir.path().join("blobs")).unwrap();
    let bytes = b"\0asm component bytes".repeat(10_000);
    let digest = blobs.put(&bytes).unwrap();
    assert_eq!(digest, sha256_hex(&bytes));
    let path = blobs.path(&digest).unwrap();
    assert_eq!(
        path,
        dir.path()
            .join("blobs/sha256")
            .join(&digest[..2])
            .join(&digest)
    );
    assert!(blobs.contains(&digest).unwrap());
    assert_eq!(
        blobs.put(&bytes).unwrap(),
        digest,
        "same bytes, same address"
    );
    assert_eq!(blobs.get(&digest).unwrap(), Some(bytes.clone()));
    let other = blobs.put(b"other").unwrap();
    assert_ne!(other, digest);

    assert!(blobs.remove(&digest).unwrap());
    assert!(!blobs.remove(&digest).unwrap());
    assert_eq!(blobs.get(&digest).unwrap(), None);
    assert!(matches!(
        blobs.get("../etc/passwd"),
        Err(StoreError::InvalidDigest(_))
    ));
    assert!(matches!(
        blobs.get(&digest.to_uppercase()),
        Err(StoreError::InvalidDigest(_))
    ));
    let leftovers: Vec<_> = walk(blobs.root())
        .into_iter()
        .filter(|p| is_temp_name(&p.file_name().unwrap().to_string_lossy()))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn blob_get_detects_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = BlobStore::open(dir.path()).unwrap();
    let digest = blobs.put(b"genuine").unwrap();
    std::fs::write(blobs.path(&digest).unwrap(), b"tampered").unwrap();
    assert!(matches!(
        blobs.get(&digest),
        Err(StoreError::Corrupt { .. })
    ));
    // A damaged copy with a different size is rewritten by the next put.
    blobs.put(b"genuine").unwrap();
    assert_eq!(
        blobs.get(&digest).unwrap().as_deref(),
        Some(&b"genuine"[..])
    );
}

#[test]
fn blob_artifact_paths_cannot_escape_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = BlobStore::open(&dir.path().join("blobs")).unwrap();
    let path = blobs
        .put_at("compiled/abc/module.cwasm", b"artifact")
        .unwrap();
    assert_eq!(path, dir.path().join("blobs/compiled/abc/module.cwasm"));
    assert_eq!(
        blobs
            .get_at("compiled/abc/module.cwasm")
            .unwrap()
            .as_deref(),
        Some(&b"artifact"[..])
    );
    blobs
        .put_at("compiled/abc/module.cwasm", b"replaced")
        .unwrap();
    assert_eq!(
        blobs
            .get_at("compiled/abc/module.cwasm")
            .unwrap()
            .as_deref(),
        Some(&b"replaced"[..])
    );
    for bad in [
        "",
        "/etc/x",
        "../x",
        "a/../../x",
        "sha256/ab/x",
        ".hidden",
        "a/.x.tmp-0000000000000000",
    ] {
        assert!(
            matches!(blobs.put_at(bad, b"x"), Err(StoreError::InvalidPath(_))),
            "{bad:?}"
        );
    }
    assert!(blobs.remove_at("compiled/abc/module.cwasm").unwrap());
    assert_eq!(blobs.get_at("compiled/abc/module.cwasm").unwrap(), None);
}

#[test]
fn write_file_durably_replaces_contents_and_leaves_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new/nested/file.bin");
    write_file_durably(&path, b"one").unwrap();
    write_file_durably(&path, b"two").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"two");
    assert_eq!(
        std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
        1
    );
}

#[test]
fn open_removes_stale_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let stale = dir
        .path()
        .join("blobs/sha256/ab/.abcd.tmp-0123456789abcdef");
    std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
    std::fs::write(&stale, b"partial").unwrap();
    let keep = dir.path().join("blobs/compiled/x.cwasm");
    write_file_durably(&keep, b"x").unwrap();
    drop(open(dir.path()).unwrap());
    assert!(!stale.exists());
    assert!(keep.exists());
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

const KILL9_DIR_ENV: &str = "WEFT_STORE_KILL9_CHILD_DIR";
const KILL9_WRITERS: usize = 4;

fn kill9_value(key: &str) -> Vec<u8> {
    format!("value of {key}").repeat(20).into_bytes()
}

/// The child half of `acknowledged_write_survives_kill_9`; does nothing
/// unless the parent set the environment variable.
#[test]
fn kill9_child_writer() {
    let Ok(dir) = std::env::var(KILL9_DIR_ENV) else {
        return;
    };
    let (db, _blobs) = open(Path::new(&dir)).unwrap();
    let backend = Arc::clone(db.backend());
    let writers: Vec<_> = (0..KILL9_WRITERS)
        .map(|w| {
            let backend = Arc::clone(&backend);
            std::thread::spawn(move || {
                for i in 0u64.. {
                    let key = format!("w{w}/{i:08}");
                    backend
                        .put(
                            &Space::tenant(format!("tenant-{w}")),
                            key.as_bytes(),
                            &kill9_value(&key),
                        )
                        .unwrap();
                    backend.commit_blocking().unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {w} {key}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
}

#[test]
fn acknowledged_write_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store::tests::kill9_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(KILL9_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("ACK ") {
            let (w, key) = rest.split_once(' ').unwrap();
            acked.push((w.to_owned(), key.to_owned()));
            if acked.len() >= 100 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "child too slow");
    }
    assert!(
        acked.len() >= 100,
        "child stopped early after {} acks",
        acked.len()
    );
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();

    let b = backend(dir.path());
    for (w, key) in &acked {
        let got = b
            .get(&Space::tenant(format!("tenant-{w}")), key.as_bytes())
            .unwrap();
        assert_eq!(
            got,
            Some(kill9_value(key)),
            "acknowledged {key} lost after kill -9"
        );
    }
}

/// Not a correctness test: prints commit latency and group-commit throughput.
/// Run with `cargo test -p weft --lib store::tests::measure -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_commit_latency_and_throughput() {
    let dir = tempfile::tempdir_in(
        std::env::var("WEFT_MEASURE_DIR")
            .unwrap_or_else(|_| std::env::temp_dir().display().to_string()),
    )
    .unwrap();
    let b = Arc::new(backend(dir.path()));

    // Sequential: one put + commit at a time.
    let mut lat = Vec::new();
    for i in 0..200u32 {
        let start = Instant::now();
        b.put(&t("lat"), &i.to_be_bytes(), &[0u8; 256]).unwrap();
        b.commit_blocking().unwrap();
        lat.push(start.elapsed());
    }
    lat.sort();
    println!(
        "sequential put+commit: median {:?}, p90 {:?}, p99 {:?}",
        lat[lat.len() / 2],
        lat[lat.len() * 9 / 10],
        lat[lat.len() * 99 / 100]
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for tasks in [1usize, 8, 64, 1000] {
        let total = 1000usize;
        let db = Db::new(Arc::clone(&b) as Arc<dyn Backend>);
        let before = rounds(&b);
        let start = Instant::now();
        rt.block_on(async {
            let handles: Vec<_> = (0..tasks)
                .map(|task| {
                    let db = db.clone();
                    tokio::spawn(async move {
                        let mut i = task;
                        while i < total {
                            let key = format!("{tasks}/{i:06}");
                            db.put(&Space::tenant("thr"), key.as_bytes(), &[1u8; 256])
                                .await
                                .unwrap();
                            db.commit().await.unwrap();
                            i += tasks;
                        }
                    })
                })
                .collect();
            for h in handles {
                h.await.unwrap();
            }
        });
        let elapsed = start.elapsed();
        let fsyncs = rounds(&b) - before;
        println!(
            "{total} put+commit over {tasks:4} tasks: {elapsed:?} = {:.0} commits/s, {fsyncs} fsyncs ({:.1} commits per fsync)",
            total as f64 / elapsed.as_secs_f64(),
            total as f64 / fsyncs as f64
        );
    }
}

#[test]
fn insert_unique_writes_an_item_only_if_its_guard_and_also_keys_are_absent_even_within_one_call() {
    let dir = tempfile::tempdir().unwrap();
    let s = t("a");
    {
        let b = backend(dir.path());
        b.put(&s, b"legacy/m2", b"1").unwrap();
        let item = |guard: &str, also: &[&str], key: &str| UniqueInsert {
            guard: guard.as_bytes().to_vec(),
            guard_value: b"g".to_vec(),
            also: also.iter().map(|k| k.as_bytes().to_vec()).collect(),
            ops: vec![
                BatchOp::put(key.as_bytes().to_vec(), b"v".to_vec()),
                BatchOp::delete(b"gone".to_vec()),
            ],
        };
        b.put(&s, b"gone", b"x").unwrap();
        let written = b
            .insert_unique(
                &s,
                &[
                    item("dd/m1", &["legacy/m1"], "q/1"),
                    // The same id again in the same call: the first item's guard refuses it.
                    item("dd/m1", &["legacy/m1"], "q/2"),
                    // An old-layout marker refuses it.
                    item("dd/m2", &["legacy/m2"], "q/3"),
                    item("dd/m3", &[], "q/4"),
                ],
            )
            .unwrap();
        assert_eq!(written, [true, false, false, true]);
        b.commit_blocking().unwrap();
    }
    let b = backend(dir.path());
    let keys: Vec<String> = b
        .scan_prefix(&s, b"", usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(k, _)| String::from_utf8(k).unwrap())
        .collect();
    assert_eq!(keys, ["dd/m1", "dd/m3", "legacy/m2", "q/1", "q/4"]);
}
