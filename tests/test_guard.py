import json
import os

import numpy as np
import pytest

from bench.harness.guard import RunLock, RunLockedError, disk_error_message, quarantine, valid_unit


def _unit(tmp_path, uid="m__centre__00000-00002", n=2, lines=None):
    os.makedirs(tmp_path / "records", exist_ok=True)
    os.makedirs(tmp_path / "outputs", exist_ok=True)
    recs = [
        {"image_id": f"i{k}", "image_index": k, "method": "m", "mask": "centre", "psnr": 20.0, "ssim": 0.5}
        for k in range(n)
    ]
    text = "".join(json.dumps(r) + "\n" for r in recs) if lines is None else lines
    (tmp_path / "records" / f"{uid}.jsonl").write_text(text)
    np.save(tmp_path / "outputs" / f"{uid}.npy", np.zeros((n, 64, 64, 3), np.uint8))
    return uid


def test_second_lock_on_the_same_dir_is_refused_and_released(tmp_path):
    with RunLock(str(tmp_path)):
        with pytest.raises(RunLockedError, match=r"in use by pid \d+"):
            RunLock(str(tmp_path)).acquire()
    RunLock(str(tmp_path)).acquire().release()  # free again after release


def test_complete_unit_is_valid(tmp_path):
    assert valid_unit(str(tmp_path), _unit(tmp_path), 2)


@pytest.mark.parametrize(
    "lines",
    [
        '{"image_id": "i0", "image_index": 0, "method": "m", "mask": "centre", "psnr": 20.0, "ssim": 0.5}\n{"image_id": "i1", "ima',
        '{"image_id": "i0", "image_index": 0, "method": "m", "mask": "centre", "psnr": 20.0, "ssim": 0.5}\n',
        "\x00\x00\x00",
        "",
    ],
    ids=["truncated", "one-record-missing", "binary", "empty"],
)
def test_truncated_or_corrupt_records_are_invalid(tmp_path, lines):
    assert not valid_unit(str(tmp_path), _unit(tmp_path, lines=lines), 2)


def test_truncated_outputs_are_invalid_and_quarantined(tmp_path):
    uid = _unit(tmp_path)
    p = tmp_path / "outputs" / f"{uid}.npy"
    p.write_bytes(p.read_bytes()[:200])
    assert not valid_unit(str(tmp_path), uid, 2)
    moved = quarantine(str(tmp_path), uid)
    assert len(moved) == 2 and all(os.path.exists(m) for m in moved)
    assert not (tmp_path / "records" / f"{uid}.jsonl").exists()


def test_disk_full_message_is_one_line():
    import errno

    msg = disk_error_message(OSError(errno.ENOSPC, "No space left on device"), "unit x")
    assert "no space left" in msg and "--resume" in msg and "\n" not in msg
