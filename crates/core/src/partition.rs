//! Profiles are partitioned by a stable hash of their id. The hash must never change between
//! versions or backends, so it is xxh3 (a fixed, documented algorithm), not `std`'s
//! `DefaultHasher`, whose output Rust does not promise to keep.

use xxhash_rust::xxh3::xxh3_64;

pub type PartitionId = u32;

/// The number of partitions a new store is created with. Recorded in the store at creation
/// and never changed afterwards, because every stored profile's partition depends on it.
pub const DEFAULT_PARTITIONS: u32 = 64;

pub fn partition_of(profile_id: &str, partitions: u32) -> PartitionId {
    (xxh3_64(profile_id.as_bytes()) % u64::from(partitions.max(1))) as PartitionId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_is_stable_and_in_range() {
        // Pinned values: if these change, every stored profile would move partition.
        assert_eq!(partition_of("p-1", 64), partition_of("p-1", 64));
        assert_eq!(partition_of("0192f0c1-0000-7000-8000-000000000001", 64), 28);
        for i in 0..1000 {
            assert!(partition_of(&format!("id-{i}"), 64) < 64);
        }
    }

    #[test]
    fn partitions_spread_evenly() {
        let mut counts = [0u32; 64];
        for i in 0..64_000 {
            counts[partition_of(&format!("profile-{i}"), 64) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }
}
