from ledgermq.storage.disk import FaultyDisk, OsDisk


def test_crash_does_not_replay_a_removed_files_unsynced_writes(tmp_path):
    # A segment deleted with unsynced writes, then a new file under the same name that
    # is fully synced: power loss must leave the new file as synced.
    disk = FaultyDisk(OsDisk(), track_unsynced=True)
    path = str(tmp_path / "00000000000000000000")
    old = disk.open_segment(path, 64)
    old.write(0, b"old-unsynced")
    old.close()
    disk.remove(path)
    new = disk.open_segment(path, 64)
    new.write(0, b"new-and-synced")
    new.sync()
    disk.crash()
    assert (tmp_path / "00000000000000000000").read_bytes()[:14] == b"new-and-synced"


def test_rmtree_forgets_the_segments_below_it(tmp_path):
    disk = FaultyDisk(OsDisk(), track_unsynced=True)
    disk.makedirs(str(tmp_path / "q"))
    seg = disk.open_segment(str(tmp_path / "q" / "0"), 16)
    seg.write(0, b"x")
    seg.close()
    disk.rmtree(str(tmp_path / "q"))
    assert disk.segments == []
    disk.crash()  # nothing left to replay, and no error for the missing directory
