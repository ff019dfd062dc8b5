"""The documentation site: it builds with mkdocs in strict mode (a broken link, a missing page or a docstring the
API reference cannot render fails), and every tutorial's ``bash`` blocks run, in the order of the site's
navigation, on the shared data.

The tutorials' commands run as written, with one change: every ``--budget X`` becomes ``--budget 5s`` (a test
cannot train for 20 minutes; the commands and their outputs are what is checked, not the model's quality).
``DATA``, ``NEW_IMAGES`` and ``NEW_LABELS``, which the tutorials ask the reader to set, point at the shared
datasets: ISBI 2012's first 14 images split into 11 training and 3 test images, CVC-ClinicDB for the clicks tutorial
and the in-context model's meta-training (its support set and target are ISBI's), DRIVE's last 5 images as the new
domain of the adaptation tutorial (5 of its first 15 as the shots; its base model trains on CVC-ClinicDB).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import shared_dataset

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
BASH_BLOCK = re.compile(r"```bash\n(.*?)```", re.S)
TUTORIALS = ["train-on-my-data", "evaluate-honestly", "compare-networks", "segment-with-clicks", "deploy-with-dicom",
             "segment-from-examples", "adapt-with-few-labels"]


def bash_blocks(page: Path) -> list[str]:
    return [re.sub(r"--budget \S+", "--budget 5s", block) for block in BASH_BLOCK.findall(page.read_text())]


def test_the_site_builds_in_strict_mode(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "WARNING" not in done.stderr, done.stderr[-3000:]
    reference = (tmp_path / "site" / "api" / "inference" / "index.html").read_text()
    assert "from_folder" in reference  # the API reference is rendered from the docstrings


def test_every_tutorial_is_in_the_navigation_and_has_commands():
    navigation = (ROOT / "mkdocs.yml").read_text()
    pages = sorted(p.stem for p in (DOCS / "tutorials").glob("*.md"))
    assert pages == sorted(TUTORIALS)
    for name in TUTORIALS:
        assert f"tutorials/{name}.md" in navigation
        assert bash_blocks(DOCS / "tutorials" / f"{name}.md"), name


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    from medseg.benchmark.split import make_split

    work = tmp_path_factory.mktemp("tutorials")
    isbi = shared_dataset("isbi2012_em")
    cvc = shared_dataset("cvc_clinicdb")
    subset = work / "isbi_subset"  # 14 of the 24 images keep the test short
    for folder in ("imagesTr", "labelsTr"):
        (subset / folder).mkdir(parents=True)
        for path in sorted((isbi / folder).iterdir())[:14]:
            (subset / folder / path.name).symlink_to(path)
    spec = (isbi / "dataset.json").read_text().replace('"numTraining": 24', '"numTraining": 14')
    (subset / "dataset.json").write_text(spec)
    split = make_split(subset, work / "isbi_split", test_fraction=0.15)
    drive = make_split(shared_dataset("drive"), work / "drive_split", test_fraction=0.25)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DATA": str(split.train), "NEW_IMAGES": str(split.test_images), "NEW_LABELS": str(split.test_labels),
           "CVC": str(cvc), "TARGET": str(drive.train), "TARGET_IMAGES": str(drive.test_images),
           "TARGET_LABELS": str(drive.test_labels), "FIRST_NEW_IMAGE": str(sorted(split.test_images.iterdir())[0])}
    return work, env


def run_tutorial(name: str, workspace: tuple[Path, dict[str, str]], **variables: str) -> None:
    work, env = workspace
    env = {**env, **{k: env.get(v, v) for k, v in variables.items()}}
    for block in bash_blocks(DOCS / "tutorials" / f"{name}.md"):
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=work, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, f"{name}: {block}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"


@pytest.mark.slow
def test_train_on_my_data_then_evaluate_honestly(workspace):
    run_tutorial("train-on-my-data", workspace)
    work, env = workspace
    predicted = sorted(p.name for p in (work / "predictions").iterdir())
    assert predicted == sorted(p.name for p in Path(env["NEW_LABELS"]).iterdir()) and len(predicted) == 3
    run_tutorial("evaluate-honestly", workspace)
    assert (work / "evaluation" / "summary.json").is_file() and (work / "evaluation" / "metrics.csv").is_file()


@pytest.mark.slow
def test_compare_networks(workspace):
    run_tutorial("compare-networks", workspace)
    work, _ = workspace
    assert (work / "bench" / "benchmark.json").is_file() and (work / "bench" / "report.html").is_file()


@pytest.mark.slow
def test_segment_with_clicks(workspace):
    run_tutorial("segment-with-clicks", workspace, DATA="CVC")
    work, _ = workspace
    assert (work / "interactive_eval" / "interactive.json").is_file()


@pytest.mark.slow
def test_deploy_with_dicom(workspace):
    run_tutorial("deploy-with-dicom", workspace)
    work, _ = workspace
    assert [p.suffix for p in (work / "seg_out").iterdir()] == [".dcm"]
    assert [p.suffix for p in (work / "rt_out").iterdir()] == [".dcm"]
    assert sorted(p.name for p in (work / "models" / "shapes_onnx").iterdir())[0] == "fold_all.onnx"


@pytest.mark.slow
def test_segment_from_examples(workspace):
    run_tutorial("segment-from-examples", workspace, TRAINING="CVC", SUPPORT="DATA", TARGET="FIRST_NEW_IMAGE")
    work, _ = workspace
    assert (work / "from_examples" / "mask.png").is_file()
    assert len(list((work / "candidates").glob("candidate_*.png"))) == 8
    assert (work / "candidates" / "spread.png").is_file()


@pytest.mark.slow
def test_adapt_with_few_labels(workspace):
    run_tutorial("adapt-with-few-labels", workspace, DATA="CVC")
    work, env = workspace
    expected = sorted(p.name for p in Path(env["TARGET_LABELS"]).iterdir())
    for folder in ("adapted_predictions", "merged_predictions"):
        assert sorted(p.name for p in (work / folder).iterdir() if p.suffix == ".png") == expected
    assert (work / "adapted_evaluation" / "summary.json").is_file()
    assert (work / "tta_predictions" / "adaptation.json").is_file()
