"""Atomic writes: files and folders get the umask's mode, and the temporaries a killed writer leaves are found by
one naming rule and removed — only those, never a user's file, never a temporary whose writer still runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from medseg.atomic import atomic_folder, atomic_write, is_temporary, remove_stale_temporaries, temporary_name
from medseg.inference.ensemble import load_probabilities

MODES_SCRIPT = textwrap.dedent("""
    import json, os, stat, sys
    from pathlib import Path
    import numpy as np
    os.umask(int(sys.argv[2], 8))
    from medseg.atomic import atomic_folder, atomic_write
    from medseg.inference.ensemble import save_probabilities
    from medseg.io import Image, write_image
    out = Path(sys.argv[1])
    atomic_write(out / "plain.json", lambda t: t.write_text("{}"))
    atomic_write(out / "durable.bin", lambda t: t.write_bytes(b"x"), durable=True)
    write_image(Image.from_array(np.zeros((4, 5), np.uint8), spacing=(1.0, 1.0)), out / "label.png")
    write_image(Image.from_array(np.zeros((2, 4, 5), np.uint8), spacing=(3.0, 1.0, 1.0)), out / "label.nii.gz")
    save_probabilities(out / "case.npz", np.zeros((2, 4, 5), np.float32), [0, 1])
    with atomic_folder(out / "built") as partial:
        (partial / "inside.txt").write_text("x")
    modes = {str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode) for p in sorted(out.rglob("*"))}
    print(json.dumps(modes))
""")


@pytest.mark.parametrize("umask, file_mode, folder_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700),
                                                           (0o002, 0o664, 0o775)])
def test_outputs_get_the_umasks_mode(tmp_path: Path, umask: int, file_mode: int, folder_mode: int) -> None:
    # A subprocess: the umask is per process, so this test's own change cannot leak into other tests.
    result = subprocess.run([sys.executable, "-c", MODES_SCRIPT, str(tmp_path), f"{umask:o}"], capture_output=True,
                            text=True, check=True)
    modes = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(modes) == {"plain.json", "durable.bin", "label.png", "label.nii.gz", "case.npz", "built",
                          "built/inside.txt"}
    assert {name: mode for name, mode in modes.items() if name != "built"} == {
        name: file_mode for name in modes if name != "built"}
    assert modes["built"] == folder_mode


KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from medseg.atomic import atomic_folder, atomic_write
    from medseg.inference.ensemble import save_probabilities

    def hang(temporary):
        print(temporary, flush=True)
        time.sleep(600)

    kind, target = sys.argv[1], Path(sys.argv[2])
    if kind == "folder":
        with atomic_folder(target) as partial:
            hang(partial)
    elif kind == "npz":
        import numpy as np
        np.savez_compressed = lambda temporary, **arrays: hang(temporary)
        save_probabilities(target, np.zeros((2, 3)), [0, 1])
    else:
        atomic_write(target, hang, suffix=kind or None, durable=True)
""")


def start_writer(kind: str, target: Path) -> tuple[subprocess.Popen, Path]:
    """A process stopped in the middle of writing ``target``; returns it and its temporary's path."""
    process = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, kind, str(target)], stdout=subprocess.PIPE,
                               text=True)
    line = process.stdout.readline().strip()
    assert line, "the writer died before creating its temporary"
    return process, Path(line)


def killed_writer(kind: str, target: Path) -> Path:
    """The temporary that a writer of ``target`` leaves when it is killed with SIGKILL in mid-write."""
    process, temporary = start_writer(kind, target)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stdout.close()
    assert temporary.exists() and not target.exists()
    return temporary


def test_cleanup_removes_exactly_what_a_killed_writer_left(tmp_path: Path) -> None:
    folder = tmp_path / "fold_0"
    (folder / "validation").mkdir(parents=True)
    stale = {
        killed_writer("", folder / "checkpoint.pt"),                         # .checkpoint.pt.<pid>-<hex>.part.pt
        killed_writer(".png", folder / "progress.png"),                      # a writer that needs the real suffix
        killed_writer(".part.nii.gz", folder / "validation" / "case_1.nii.gz"),
        killed_writer("npz", folder / "validation" / "case_1.npz"),          # medseg.inference.ensemble
        killed_writer("folder", folder / "built"),                           # atomic_folder
    }
    legacy = {folder / ".checkpoint.pt.k3j_x9aa.part.pt", folder / ".case.nii.gz.abcd1234.part.nii.gz"}
    for path in legacy:  # what tempfile.mkstemp named them before this rule
        path.write_bytes(b"old")
    assert all(is_temporary(path) for path in stale | legacy)
    users = [folder / name for name in ("checkpoint.pt", "scan.part.nii.gz", ".hidden", ".notes.part", "x.partial",
                                        ".case.nii.gz.12345-nothex00.part.nii.gz", ".a.b.part",
                                        ".partial", "validation/case_2.nii.gz")]
    for path in users:
        path.write_bytes(b"mine")
    assert not any(is_temporary(path) for path in users)

    top = {p for p in stale | legacy if p.parent == folder}
    assert set(remove_stale_temporaries(folder)) == top
    assert set(remove_stale_temporaries(folder, recursive=True)) == (stale | legacy) - top
    assert remove_stale_temporaries(folder, recursive=True) == []
    assert all(path.read_bytes() == b"mine" for path in users)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [p.name for p in users if p.parent == folder] + ["validation"])
    assert remove_stale_temporaries(tmp_path / "absent") == []


def test_cleanup_spares_running_writers_and_other_targets(tmp_path: Path) -> None:
    running, in_flight = start_writer("", tmp_path / "weights.safetensors")
    try:
        dead = killed_writer(".nii.gz", tmp_path / "case_1.nii.gz")
        other = killed_writer(".nii.gz", tmp_path / "case_2.nii.gz")
        assert remove_stale_temporaries(tmp_path, targets={"case_1.nii.gz", "weights.safetensors"}) == [dead]
        assert in_flight.exists() and other.exists()  # its writer runs / not a target
        assert remove_stale_temporaries(tmp_path) == [other]
    finally:
        running.send_signal(signal.SIGKILL)
        running.wait()
        running.stdout.close()
    assert remove_stale_temporaries(tmp_path) == [in_flight]
    own = tmp_path / temporary_name("mine.json", ".json")  # this process's: in flight in another thread
    own.write_text("{}")
    assert is_temporary(own) and remove_stale_temporaries(tmp_path) == []


def test_atomic_write_replaces_completely_or_not_at_all(tmp_path: Path) -> None:
    path = tmp_path / "case.npz"
    atomic_write(path, lambda t: np.savez_compressed(t, probabilities=np.ones((2, 3), np.float16),
                                                     label_values=np.arange(2)))
    with pytest.raises(RuntimeError):
        atomic_write(path, lambda t: (t.write_bytes(b"half"), (_ for _ in ()).throw(RuntimeError("disk full"))))
    assert [p.name for p in tmp_path.iterdir()] == ["case.npz"]
    assert load_probabilities(path)[1] == [0, 1]
    with pytest.raises(RuntimeError):
        with atomic_folder(tmp_path / "built") as partial:
            (partial / "a").write_text("x")
            raise RuntimeError("stop")
    assert [p.name for p in tmp_path.iterdir()] == ["case.npz"]
    assert temporary_name("x.png", ".part.png").endswith(".part.png")
    assert temporary_name("x.png", ".png").count(".part") == 1
    assert os.path.basename(temporary_name("x", "")).endswith(".part")
