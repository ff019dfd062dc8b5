"""The active-learning loop of ``medseg active``: train on the labelled cases, score the unlabelled pool, query,
reveal the queried cases' labels (the dataset's own labels play the oracle), retrain; each round scored on a
held-out block.

The dataset's cases split once: the held-out block (the last ``test_fraction`` of the sorted ids,
``medseg.data.subset.held_out_block``; optionally ``test_cases`` of them, evenly spaced) is never labelled nor
queried; the rest is the pool (or ``pool_size`` of it, a seeded draw). Per seed, ``initial`` pool cases drawn at
random are labelled; round 0's model, trained on them, is shared by every strategy of that seed. Each later round
adds ``query`` cases chosen by the strategy (``medseg.active.strategies``) with the previous round's model.

Every model is a ``medseg train`` fold ``all`` (``medseg.training.service.train_fold``) on a view of the labelled
cases (``medseg.data.subset.subset_dataset``) with one plan (``OUTPUT/plans.json``, planned on the pool for one
round's budget) and one preprocessed cache (``OUTPUT/preprocessed``), seeded by the seed. Ensemble disagreement
trains ``members - 1`` more models per round with other seeds (more compute: recorded per round); the curve is
always the first model's.

Layout of ``OUTPUT``::

    active.json                 settings, split, per strategy and seed the rounds, the curve (mean / sd over seeds)
    active.png                  held-out Dice vs labelled cases, one line per strategy (sd band over seeds)
    plans.json, preprocessed/   shared by every round
    seed_S/round_0/             round 0: labelled/ (the view), model/
    seed_S/STRATEGY/round_R/    later rounds (a finished round's model is removed once the next one is scored,
                                unless keep_models; the last round's stays)

Interrupted, the same call resumes: finished rounds are read from ``active.json``, an unfinished training
continues from its checkpoint.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from medseg.active.strategies import (check_strategies, k_center_greedy, mean_entropy, mean_mutual_information,
                                      random_draw, top_scored)
from medseg.config import read_json, write_json_atomic
from medseg.config.model_folder import WEIGHTS, fold_folder
from medseg.data import open_dataset
from medseg.data.subset import held_out_block, subset_dataset
from medseg.errors import MedsegError

RESULTS_FILE = "active.json"
CURVE_FILE = "active.png"
POOL_SEED = 12345  # the pool_size draw: one pool for every seed and strategy


@dataclass(frozen=True)
class ActiveSettings:
    """What ``run_active_learning`` does; ``budget_seconds`` and ``max_iterations`` bound each model's training."""

    initial: int = 5
    query: int = 5
    rounds: int = 3
    strategies: tuple[str, ...] = ("random", "entropy")
    seeds: tuple[int, ...] = (0,)
    budget_seconds: float = 120.0
    max_iterations: int | None = None
    configuration: str | None = None
    test_fraction: float = 0.25
    test_cases: int | None = None
    pool_size: int | None = None
    members: int = 2
    plan_overrides: tuple[str, ...] = ()
    keep_models: bool = False
    train_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("initial", "query", "rounds", "members"):
            if getattr(self, name) < 1 or (name == "members" and getattr(self, name) < 2):
                raise MedsegError(f"--{name} {getattr(self, name)} is too small",
                                  fix=f"use --{name} {2 if name == 'members' else 1} or more")
        if not self.budget_seconds > 0:
            raise MedsegError(f"the budget must be positive, not {self.budget_seconds:g} s", fix="e.g. --budget 2m")
        if not self.seeds:
            raise MedsegError("no seeds", fix="use --seeds 1 or more")
        if self.test_cases is not None and self.test_cases < 1:
            raise MedsegError(f"--test-cases {self.test_cases} is not positive", fix="e.g. --test-cases 20")
        object.__setattr__(self, "strategies", tuple(check_strategies(self.strategies)))

    @property
    def labelled_at_end(self) -> int:
        return self.initial + self.query * self.rounds


@dataclass
class ActiveSplit:
    pool: list[str]
    test: list[str]
    rule: str


def split_cases(case_ids: Sequence[str], settings: ActiveSettings) -> ActiveSplit:
    """The pool and the held-out test cases (see the module docstring), checked to be large enough."""
    pool, test = held_out_block(case_ids, settings.test_fraction)
    rule = f"held out: the last {len(test)} of {len(case_ids)} sorted ids"
    if settings.test_cases is not None and settings.test_cases < len(test):
        index = np.unique(np.linspace(0, len(test) - 1, settings.test_cases).round().astype(int))
        test = [test[i] for i in index]
        rule += f", {len(test)} of them evenly spaced"
    if settings.pool_size is not None and settings.pool_size < len(pool):
        pool = random_draw(pool, settings.pool_size, np.random.default_rng(POOL_SEED))
        rule += f"; pool: {len(pool)} of the rest drawn with seed {POOL_SEED}"
    if settings.labelled_at_end > len(pool):
        raise MedsegError(f"{settings.initial} + {settings.rounds} x {settings.query} = {settings.labelled_at_end} "
                          f"labelled cases are more than the pool's {len(pool)}",
                          fix="use fewer --rounds, a smaller --query or --initial, or a larger --pool-size")
    return ActiveSplit(sorted(pool), test, rule)


class ActiveRun:
    """One ``medseg active`` run in ``output`` over ``dataset``; ``run()`` does or resumes every round."""

    def __init__(self, dataset: str | Path, output: str | Path, settings: ActiveSettings, *,
                 progress: bool | None = None, log: Callable[[str], None] = print):
        self.data = open_dataset(dataset).require_cases()
        if any(case.label_file is None for case in self.data.cases):
            raise MedsegError("active learning reveals the dataset's own labels: every case needs one",
                              path=self.data.root, fix="use a dataset whose labelsTr holds every case")
        self.output, self.settings, self.progress, self.log = Path(output), settings, progress, log
        self.split = split_cases([c.case_id for c in self.data.cases], settings)
        self.results = self._read_or_start()
        self.configuration = self.results["configuration"]

    # --- setup -----------------------------------------------------------------------------------------------------

    def _read_or_start(self) -> dict[str, Any]:
        path = self.output / RESULTS_FILE
        settings = _settings_record(self.settings)
        if path.is_file():
            results = read_json(path)
            if results.get("settings") != settings or results.get("dataset") != str(self.data.root):
                raise MedsegError("this output folder holds an active-learning run with other settings or data",
                                  path=path, fix="pass the same options to resume it, or another -o")
            return results
        if self.output.exists() and any(self.output.iterdir()):
            raise MedsegError("the output folder exists and is not an active-learning run", path=self.output,
                              fix="choose a new -o folder")
        plan = self._plan()
        configuration = self.settings.configuration or _default_configuration(plan)
        if configuration not in plan.configurations:
            raise MedsegError(f"no configuration {configuration!r} in the plan", path=self.output / "plans.json",
                              fix=f"use one of {', '.join(plan.configurations)}")
        results = {"dataset": str(self.data.root), "settings": settings, "configuration": configuration,
                   "split": {"rule": self.split.rule, "pool": self.split.pool, "test": self.split.test},
                   "runs": {strategy: {} for strategy in self.settings.strategies}, "curve": {}}
        write_json_atomic(results, path)
        return results

    def _plan(self):
        from medseg.planning.service import make_plan

        self.output.mkdir(parents=True, exist_ok=True)
        view = subset_dataset(self.data, self.split.pool, self.output / "pool")
        plan = make_plan(view, budget=self.settings.budget_seconds, overrides=list(self.settings.plan_overrides),
                         progress=self.progress)
        write_json_atomic(plan.to_dict(), self.output / "plans.json")
        return plan

    # --- the rounds ------------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Every strategy's rounds for every seed (finished ones skipped); returns ``active.json``'s content."""
        for seed in self.settings.seeds:
            initial = random_draw(self.split.pool, self.settings.initial, np.random.default_rng(seed))
            for strategy in self.settings.strategies:
                rounds = self.results["runs"][strategy].setdefault(str(seed), [])
                labelled = list(initial) if not rounds else rounds[-1]["labelled_ids"] + rounds[-1]["queried"]
                for number in range(len(rounds), self.settings.rounds + 1):
                    record = self._round(seed, strategy, number, labelled)
                    rounds.append(record)
                    self.results["curve"] = curve(self.results["runs"])
                    write_json_atomic(self.results, self.output / RESULTS_FILE)
                    self.log(f"{strategy}, seed {seed}, round {number}: {len(labelled)} labelled, held-out Dice "
                             f"{record['test_dice']:.4f}")
                    labelled = labelled + record["queried"]
                    if number > 0 and not self.settings.keep_models:
                        self._remove_model(seed, strategy, number - 1)
        from medseg.active.curve import write_curve_png

        write_curve_png(self.results["curve"], self.output / CURVE_FILE, title=self.data.spec.name or
                        self.data.root.name)
        return self.results

    def _round_folder(self, seed: int, strategy: str, number: int) -> Path:
        return self.output / f"seed_{seed}" / ("round_0" if number == 0 else f"{strategy}/round_{number}")

    def _remove_model(self, seed: int, strategy: str, number: int) -> None:
        if number == 0 and strategy != self.settings.strategies[-1]:
            return  # round 0 is shared by the seed's strategies: the last one removes it
        for folder in self._round_folder(seed, strategy, number).glob("model*"):
            shutil.rmtree(folder, ignore_errors=True)

    def _round(self, seed: int, strategy: str, number: int, labelled: list[str]) -> dict[str, Any]:
        """Train on ``labelled``, score the held-out block, and (before the last round) query."""
        folder = self._round_folder(seed, strategy, number)
        shared = self._shared_round_0(seed, strategy) if number == 0 else None
        if shared is not None:
            record = dict(shared)
            if number < self.settings.rounds:
                record["queried"], record["query_seconds"], record["members"] = self._query(
                    seed, strategy, number, folder, labelled)
            return record
        start = time.time()
        model = self._train(folder, labelled, seed, 0)  # ensemble members: trained by the query that needs them
        train_seconds = time.time() - start
        dice = self._test_dice(model)
        record = {"round": number, "labelled": len(labelled), "labelled_ids": list(labelled),
                  "test_dice": float(np.nanmean(list(dice.values()))), "test_dice_per_case": dice,
                  "train_seconds": round(train_seconds, 1), "queried": [], "query_seconds": 0.0, "members": 1}
        if number < self.settings.rounds:
            record["queried"], record["query_seconds"], record["members"] = self._query(
                seed, strategy, number, folder, labelled)
        return record

    def _shared_round_0(self, seed: int, strategy: str) -> dict[str, Any] | None:
        """Round 0 as another strategy of this seed scored it (the same model), without that strategy's query."""
        for other in self.settings.strategies:
            rounds = self.results["runs"][other].get(str(seed), [])
            if other != strategy and rounds:
                keep = ("round", "labelled", "labelled_ids", "test_dice", "test_dice_per_case", "train_seconds")
                return {**{k: rounds[0][k] for k in keep}, "queried": [], "query_seconds": 0.0, "members": 1}
        return None

    def _train(self, folder: Path, labelled: list[str], seed: int, member: int) -> Path:
        """The round's model ``member`` (seed ``seed + 1000 * member``), trained unless it has final weights."""
        from medseg.training.service import train_fold

        model = folder / ("model" if member == 0 else f"model_member_{member}")
        if (fold_folder(model, "all") / WEIGHTS).is_file():
            return model
        view = subset_dataset(self.data, sorted(labelled), folder / "labelled")
        options = {**self.settings.train_options, "seed": seed + 1000 * member,
                   "max_iterations": self.settings.max_iterations}
        train_fold(view, self.configuration, "all", model_dir=model, plans=self._round_plan(view, folder),
                   preprocessed=self.output / "preprocessed", budget_seconds=self.settings.budget_seconds,
                   resume=fold_folder(model, "all").is_dir(), train_config=options, progress=self.progress)
        return model

    def _round_plan(self, view: Path, folder: Path) -> Path:
        """``folder/plans.json``: the run's plan (made on the pool) recording ``view`` as its dataset, so that
        training checks the view's cases as ``medseg check`` does and then uses the one plan of every round."""
        from medseg.config import Plan
        from medseg.data.validate import dataset_record

        plan = Plan.from_dict(read_json(self.output / "plans.json"), path=self.output / "plans.json")
        plan.dataset = dataset_record(open_dataset(view), validated=False)
        return write_json_atomic(plan.to_dict(), folder / "plans.json")

    def _test_dice(self, model: Path) -> dict[str, float]:
        """Each held-out case's Dice (``medseg.trust.qc.case_dice``, mirroring TTA on)."""
        from medseg.inference import Predictor
        from medseg.trust.qc import case_dice

        predictor = Predictor.from_folder(model, folds=["all"])
        scores = {}
        for case_id in self.split.test:
            case = self.data.case(case_id)
            labels = predictor.predict(self.data.read_image(case))
            scores[case_id] = case_dice(labels.array[0], self.data.read_label(case).array[0],
                                        predictor.label_values)
        return scores

    def _query(self, seed: int, strategy: str, number: int, folder: Path, labelled: list[str]
               ) -> tuple[list[str], float, int]:
        """``(queried ids, seconds, models used)``: ``query`` unlabelled pool cases chosen by ``strategy``."""
        start = time.time()
        unlabelled = [case for case in self.split.pool if case not in set(labelled)]
        count = self.settings.query
        members = 1
        if strategy == "random":
            chosen = random_draw(unlabelled, count, np.random.default_rng([seed, number]))
        elif strategy == "entropy":
            predictor = self._predictor(folder / "model")
            chosen = top_scored({case: mean_entropy(self._probabilities(predictor, case)) for case in unlabelled},
                                count)
        elif strategy == "ensemble-disagreement":
            models = [self._train(folder, labelled, seed, m) for m in range(self.settings.members)]
            members = len(models)
            predictors = [self._predictor(model) for model in models]
            chosen = top_scored({case: mean_mutual_information([self._probabilities(p, case) for p in predictors])
                                 for case in unlabelled}, count)
        else:
            chosen = self._coreset(folder / "model", labelled, unlabelled, count)
        return chosen, round(time.time() - start, 1), members

    def _predictor(self, model: Path):
        """The round model's ``Predictor`` for the pool (mirroring off: the ranking needs no TTA)."""
        from medseg.inference import Predictor

        return Predictor.from_folder(model, folds=["all"], tta=False)

    def _probabilities(self, predictor, case_id: str) -> np.ndarray:
        """``(K, *spatial)`` class probabilities of a pool case."""
        _, probabilities = predictor.predict_with_probabilities(self.data.read_image(self.data.case(case_id)))
        return probabilities.array

    def _coreset(self, model: Path, labelled: list[str], unlabelled: list[str], count: int) -> list[str]:
        from medseg.trust.features import case_feature_function

        extract = case_feature_function("encoder", model)

        def features(case_id: str) -> np.ndarray:
            image = self.data.read_image(self.data.case(case_id))
            return extract(np.asarray(image.array, dtype=np.float64), list(image.spacing))[0]

        pool = np.stack([features(c) for c in unlabelled])
        known = np.stack([features(c) for c in labelled])
        return sorted(unlabelled[i] for i in k_center_greedy(pool, known, count))


def run_active_learning(dataset: str | Path, output: str | Path, settings: ActiveSettings, *,
                        progress: bool | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Do (or resume) an active-learning run; see the module docstring. Returns ``active.json``'s content."""
    return ActiveRun(dataset, output, settings, progress=progress, log=log).run()


def curve(runs: dict[str, dict[str, list[dict]]]) -> dict[str, dict[str, list]]:
    """Per strategy: labelled-case counts and the held-out Dice's mean and sd over the seeds that reached them."""
    summary = {}
    for strategy, seeds in runs.items():
        by_count: dict[int, list[float]] = {}
        for rounds in seeds.values():
            for record in rounds:
                by_count.setdefault(record["labelled"], []).append(record["test_dice"])
        counts = sorted(by_count)
        summary[strategy] = {"labelled": counts,
                             "mean_dice": [float(np.mean(by_count[n])) for n in counts],
                             "sd_dice": [float(np.std(by_count[n])) for n in counts],
                             "seeds": [len(by_count[n]) for n in counts]}
    return summary


def _settings_record(settings: ActiveSettings) -> dict[str, Any]:
    record = asdict(settings)
    record["strategies"], record["seeds"] = list(settings.strategies), list(settings.seeds)
    record["plan_overrides"] = list(settings.plan_overrides)
    record.pop("keep_models")
    return record


def _default_configuration(plan) -> str:
    """``2d`` for 2D data, else ``3d_fullres`` (the configurations a plan always has for such data)."""
    for name in ("3d_fullres", "2d"):
        if name in plan.configurations:
            return name
    return next(iter(plan.configurations))
